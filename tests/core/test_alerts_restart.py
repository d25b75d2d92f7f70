"""alerts.restart: the delay before a reset after failed starts in a row, the count kept
on flash, the log line, and the wait that feeds a running watchdog."""

import sys

from alerts import restart

import helpers


class Reset(Exception):
    """Raised by the stand-in machine.reset(), so failed() returns to the test."""


class Machine:
    def reset(self):
        raise Reset()


class Watchdog:
    """board.Watchdog as alerts.restart uses it: timeout_ms and feed()."""

    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class Board:
    running_watchdog = None


class Scope:
    """Point alerts.restart at a scratch count file, a stand-in machine and a board module."""

    def __init__(self, previous=0):
        self.path = helpers.fresh_directory("restart") + "/failed_starts.txt"
        self.saved = (
            restart.PATH,
            restart.machine,
            restart._previous,
            restart._count,
            restart._running,
            restart._SPEED,
        )
        self.board = sys.modules.get("alerts.board")
        restart.PATH = self.path
        restart.machine = Machine()
        restart._previous = previous
        restart._count = None
        restart._running = False
        # As in the simulation: a simulated second takes 1 ms, so a 40 s delay takes 40 ms.
        restart._SPEED = 1000
        sys.modules["alerts.board"] = Board()

    def close(self):
        restart.PATH, restart.machine, restart._previous, restart._count, restart._running, restart._SPEED = self.saved
        if self.board is None:
            del sys.modules["alerts.board"]
        else:
            sys.modules["alerts.board"] = self.board
        Board.running_watchdog = None


def test_delay_doubles_up_to_cap():
    assert [restart.delay(count) for count in range(1, 10)] == [10, 20, 40, 80, 160, 320, 600, 600, 600]
    assert restart.delay(1000) == 600


def test_count_file_write_and_remove():
    scope = Scope()
    try:
        assert restart.read() == 0
        assert restart.write(3)
        assert restart.read() == 3
        with open(scope.path, "w") as file:
            file.write("garbage")
        assert restart.read() == 0
        assert restart.write(0)
        assert helpers.listdir(scope.path.rpartition("/")[0]) == []
        # Nothing to remove: the file system reports it, and nothing is written.
        assert not restart.write(0)
    finally:
        scope.close()


def test_failed_start_counts_waits_and_resets():
    scope = Scope(previous=2)
    try:
        helpers.raises(Reset, restart.failed, MemoryError("memory allocation failed"))
        assert restart.read() == 3
        # A second failure in the same boot (while handling the first) counts no second start.
        helpers.raises(Reset, restart.failed, MemoryError("again"))
        assert restart.read() == 3
    finally:
        scope.close()


def test_started_clears_count():
    scope = Scope(previous=4)
    try:
        restart.write(4)
        restart.started()
        assert restart.read() == 0
        assert restart._previous == 0
        # A failure after the start counts from 1 again.
        helpers.raises(Reset, restart.failed, ValueError("bug"))
        assert restart.read() == 1
    finally:
        scope.close()


def report_lines(exc, running):
    """Return the lines restart.failed(exc, running) logs."""
    lines = []
    saved = restart._log
    restart._log = lambda level, *parts: lines.append(" ".join([level] + [str(part) for part in parts]))
    try:
        helpers.raises(Reset, restart.failed, exc, running)
    finally:
        restart._log = saved
    return lines


def test_memory_error_while_starting_names_remedy():
    scope = Scope()
    try:
        lines = report_lines(MemoryError("memory allocation failed"), False)
        assert len(lines) == 1
        assert lines[0].startswith("ERROR out of memory while starting")
        assert "frozen in" in lines[0]
        assert "reset in 10 s" in lines[0]
    finally:
        scope.close()


def test_failure_in_running_loop_not_called_start_failure():
    # alerts.app unloads this module once the sensor loop runs. The copy it imports again
    # for a failure learns from running=True that the start had completed.
    scope = Scope()
    try:
        lines = report_lines(MemoryError("memory allocation failed"), True)
        assert len(lines) == 1
        assert lines[0].startswith("ERROR unexpected MemoryError: memory allocation failed;")
        assert "while starting" not in lines[0]
    finally:
        scope.close()


def test_started_without_count_writes_nothing():
    scope = Scope(previous=0)
    try:
        restart.started()
        assert helpers.listdir(scope.path.rpartition("/")[0]) == []
    finally:
        scope.close()


def test_wait_feeds_running_watchdog():
    scope = Scope()
    try:
        watchdog = Watchdog(400)
        Board.running_watchdog = watchdog
        # 300 simulated s are 300 real ms, in 100 ms steps (a quarter of the timeout): a
        # feed before each step and one after the last.
        restart.pause(300)
        assert watchdog.feeds == 4
    finally:
        scope.close()


def test_wait_without_watchdog():
    scope = Scope()
    try:
        restart.pause(10)
    finally:
        scope.close()


_HERE = __file__.replace("\\", "/").rsplit("/", 1)[0] if "/" in __file__ else "."
MAIN_PY = _HERE + "/../../firmware/main.py"


class FailingApp:
    """Stands in for alerts.app: main() raises the given exception."""

    def __init__(self, error):
        self.error = error

    def main(self):
        raise self.error


def run_main_py(error):
    """Run firmware/main.py with an alerts.app whose main() raises error; return what reached failed()."""
    import alerts

    with open(MAIN_PY) as file:
        code = compile(file.read(), "main.py", "exec")
    handed = []
    saved_failed = restart.failed
    saved_app = sys.modules.get("alerts.app")
    app = FailingApp(error)
    sys.modules["alerts.app"] = app
    alerts.app = app
    restart.failed = handed.append
    try:
        exec(code, {"__name__": "__main__"})
    finally:
        restart.failed = saved_failed
        if saved_app is None:
            del sys.modules["alerts.app"]
            del alerts.app
        else:
            sys.modules["alerts.app"] = saved_app
            alerts.app = saved_app
    return handed


def test_main_py_hands_failed_start_to_restart():
    error = MemoryError("memory allocation failed")
    assert run_main_py(error) == [error]


def test_main_py_lets_keyboard_interrupt_reach_repl():
    helpers.raises(KeyboardInterrupt, run_main_py, KeyboardInterrupt())
