"""Paths, executables, errors and exit statuses shared by the board subcommands.

The board subcommands (certs, deploy, flash, firmware, bench) work on a source
checkout: they read firmware/ and boards/ next to tools/. Exit statuses follow
sysexits.h, as in ``microsmtp send``.
"""

import logging
import os
import shutil
import sys
from pathlib import Path

EX_OK = 0
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_CONFIG = 78

REPO_DIR = Path(__file__).resolve().parent.parent.parent
FIRMWARE_DIR = REPO_DIR / "firmware"
BOARDS_DIR = REPO_DIR / "boards"
BUILD_DIR = REPO_DIR / "build"
DEFAULT_CA_MODULE = BUILD_DIR / "ca_roots.py"

SETUP_HINT = "run `make setup` in the microsmtp checkout, or pip install the package"


class ToolError(Exception):
    """A failure a subcommand reports as one line, with the exit status to return.

    ``what`` names the step that failed ("compiling firmware/"), ``message`` says why
    and what to do next.
    """

    def __init__(self, what, message, status=EX_CONFIG):
        super().__init__(message)
        self.what = what
        self.message = message
        self.status = status


def report(command, error):
    """Print a ToolError as one line on standard error and return its exit status."""
    print("microsmtp %s: error: %s failed: %s" % (command, error.what, error.message), file=sys.stderr, flush=True)
    return error.status


def find_executable(name):
    """Return the path of a tool installed next to this Python (a venv's bin/) or on PATH, else None."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def require_executable(name, what, package=None):
    """Return the path of ``name``; raise ToolError naming the package that provides it."""
    path = find_executable(name)
    if path is None:
        raise ToolError(
            what,
            "`%s` not found next to %s or on PATH; %s (PyPI package %s)"
            % (name, sys.executable, SETUP_HINT, package or name),
        )
    return path


def require_checkout_dir(path, what):
    """Return path if it is a directory, else raise ToolError saying a checkout is needed."""
    if not Path(path).is_dir():
        raise ToolError(
            what,
            "%s not found; the board commands need a source checkout of microsmtp "
            "(firmware/ and boards/ next to tools/), or give the folder explicitly" % path,
        )
    return Path(path)


# aiosmtpd 1.4.6 logs this through logging (logger "mail.log") on every AUTH, because its
# own AUTH code uses the deprecated attribute. It says nothing about the client.
AIOSMTPD_LOGGER = "mail.log"
LOGIN_DATA_MESSAGE = "Session.login_data is deprecated"


class LoginDataFilter(logging.Filter):
    """Drops aiosmtpd's Session.login_data deprecation record and lets every other record through."""

    def filter(self, record):
        return not record.getMessage().startswith(LOGIN_DATA_MESSAGE)
