"""Quiet interruptions of a Dask run: one line on Ctrl-C, no tracebacks or leaked locks.

A local cluster's workers start with SIGINT ignored (:func:`sigint_ignored`), so a Ctrl-C
reaches only the main process, which stops them itself; Dask's logging is kept off the
terminal where an interruption makes it speak (:data:`RUN_LOG_LEVELS` for the whole run,
:func:`quiet_dask` while a cluster is torn down), and workers are prepared by
:func:`quiet_worker`.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager

from tqdm.std import tqdm as std_tqdm

__all__ = ["sigint_ignored", "log_levels", "quiet_dask", "RUN_LOG_LEVELS", "quiet_worker"]


@contextmanager
def sigint_ignored():
    """Ignore SIGINT while worker processes start, so that they inherit the ignoring: a
    Ctrl-C then reaches only this process, which stops the workers itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def log_levels(levels: dict[str, int]):
    """Set some loggers' levels for the duration of a block."""
    loggers = {name: logging.getLogger(name) for name in levels}
    before = {name: lg.level for name, lg in loggers.items()}
    for name, lg in loggers.items():
        lg.setLevel(levels[name])
    try:
        yield
    finally:
        for name, lg in loggers.items():
            lg.setLevel(before[name])


def quiet_dask():
    """Silence Dask's logging while a cluster is torn down after an interruption."""
    return log_levels({n: logging.CRITICAL + 1 for n in ("distributed", "tornado", "asyncio")})


#: While a manifest runs: the errors the Dask client's event loop logs when Ctrl-C lands
#: inside one of its waits (its cancel callback fails and the key it waited for is
#: rescheduled) are not the user's to see; the interruption is reported in one line.
RUN_LOG_LEVELS = {"tornado.application": logging.CRITICAL + 1,
                   "distributed.client": logging.ERROR}


class _NoHeartbeatLoss(logging.Filter):
    """Drops a worker's report that its scheduler stopped answering heartbeats: when an
    interrupted run closes its local cluster, the scheduler may go first."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to communicate with scheduler")


def quiet_worker() -> None:
    """Prepare a local worker process for a quiet interruption: its progress bars get a
    thread lock instead of tqdm's default process lock (a semaphore reported as leaked when
    an interrupted worker is stopped), its warnings about the tasks an interruption
    cancels are not logged, nor is the loss of the scheduler while the cluster closes."""
    std_tqdm.set_lock(threading.RLock())
    logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)
    worker_log = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _NoHeartbeatLoss) for f in worker_log.filters):
        worker_log.addFilter(_NoHeartbeatLoss())
