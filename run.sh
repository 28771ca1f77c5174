#!/usr/bin/env bash
# Set up lumos in its own virtual environment inside this checkout, then run a job.
#   bash run.sh demo   -> the embedded default end to end (simulated PAUS-like CCD + shipped model)
#   bash run.sh test   -> the whole test suite (and ruff)
#   bash run.sh lumos ARGS...  -> any lumos command in the environment
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON=${PYTHON:-python3}
VENV=.venv

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "run.sh: creating the virtual environment in $VENV" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    # Re-install only when the project definition changed since the last install.
    local stamp="$VENV/.lumos-installed"
    local want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "run.sh: installing lumos and its pinned dependencies" >&2
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e ".[test]"
        echo "$want" > "$stamp"
    fi
}

job=${1:-demo}
shift || true
setup
case "$job" in
    demo)
        exec "$VENV/bin/lumos" demo --out demo-output "$@"
        ;;
    test)
        "$VENV/bin/ruff" check src tests bench scripts examples
        exec "$VENV/bin/python" -m pytest -q "$@"
        ;;
    lumos)
        exec "$VENV/bin/lumos" "$@"
        ;;
    *)
        echo "usage: bash run.sh demo|test|lumos [ARGS...]" >&2
        exit 2
        ;;
esac
