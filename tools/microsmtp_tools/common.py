"""Paths, executables, errors and exit statuses shared by the board subcommands.

The board subcommands (certs, deploy, flash, firmware, bench) work on a source
checkout: they read firmware/ and boards/ next to tools/. Exit statuses follow
sysexits.h, as in ``microsmtp send``.
"""

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
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


def run_briefly(command, timeout=30, **options):
    """Run a command that should end quickly; return (exit status, stdout, stderr) as text.

    The command runs in its own process group, and the whole group is killed at the
    timeout, so nothing it started is left behind. Output that is not UTF-8 is kept
    with replacement characters. Raises OSError, or subprocess.TimeoutExpired.
    """
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **options
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return process.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def given_micropython(path, what):
    """Return ``path`` as the absolute path of a MicroPython unix port that starts, else raise ToolError.

    For --micropython options: an executable built by ``microsmtp firmware --board UNIX``
    or any other unix port build. A name without a folder means the file in the current
    folder, as any other relative path does.
    """
    resolved = Path(path).expanduser().absolute()
    if not resolved.is_file() or not os.access(resolved, os.X_OK):
        raise ToolError(what, "%s is not an executable file; give the path of a MicroPython unix port" % path)
    try:
        status, out, err = run_briefly([str(resolved), "-c", "import sys; print(sys.implementation.name)"])
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(what, "%s did not run: %s" % (path, exc)) from None
    if status != 0 or out.strip() != "micropython":
        detail = (err or out).strip().splitlines()
        raise ToolError(
            what,
            "%s is not a MicroPython unix port (exit status %d%s)"
            % (path, status, ": " + detail[-1] if detail else ""),
        )
    return str(resolved)


def frozen_packages(micropython, names):
    """Return the names among ``names`` that ``micropython`` has frozen into its image.

    A frozen module imports with ".frozen" as the only entry of sys.path, from an empty
    folder, so files of the same name elsewhere cannot stand in for it.
    """
    frozen = []
    with tempfile.TemporaryDirectory(prefix="microsmtp-frozen-") as empty:
        for name in names:
            script = "import sys\nsys.path[:] = ['.frozen']\nimport %s\n" % name
            environment = dict(os.environ)
            environment.pop("MICROPYPATH", None)
            try:
                status, _out, _err = run_briefly([micropython, "-c", script], cwd=empty, env=environment)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ToolError("looking for frozen modules in %s" % micropython, str(exc)) from None
            if status == 0:
                frozen.append(name)
    return frozen


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


def not_session_failure(record):
    """Logging filter: drop aiosmtpd's traceback for a session the client broke off.

    The client's side of such a failure is what the bench and the sim report.
    """
    return "SMTP session exception" not in record.getMessage()


def hide_unknown_commands(record):
    """Logging filter: keep aiosmtpd's "unrecognised" warnings, without the line the client sent.

    A client out of step with AUTH sends its base64 credentials as a line of their own,
    which aiosmtpd logs as an unknown command. A command verb (letters only) stays. The
    warning that AUTH is required without TLS is dropped: it comes only with implicit TLS,
    where every byte is encrypted.
    """
    if record.msg == "%r unrecognised: %s" and len(record.args) == 2:
        command = str(record.args[1])
        if not (command.isalpha() and len(command) <= 10):
            record.args = (record.args[0], "(a line that is no command, not shown)")
    return "Requiring AUTH while not requiring TLS" not in str(record.msg)


class LoginDataFilter(logging.Filter):
    """Drops aiosmtpd's Session.login_data deprecation record and lets every other record through."""

    def filter(self, record):
        return not record.getMessage().startswith(LOGIN_DATA_MESSAGE)
