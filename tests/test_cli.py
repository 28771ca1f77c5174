import subprocess
import sys

import pytest

from lumos import __version__
from lumos.cli import main

COMMANDS = ("demo", "measure", "simulate", "train", "transfer", "coadd", "validate")


def test_help_lists_the_commands_of_the_design(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["frobnicate"], "invalid choice"),
        (["measure"], "the following arguments are required"),
        (["measure", "a.fits", "b.fits", "--method", "magic"], "invalid choice"),
        (["simulate", "--n", "many", "--out", "x.h5"], "invalid int value"),
    ],
)
def test_bad_arguments_give_usage_not_traceback(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and message in err
    assert "Traceback" not in err


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "lumos.cli", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "measure" in result.stdout
