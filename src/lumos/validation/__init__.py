"""Validation: metrics, the paper's experiments, plots and reports."""
