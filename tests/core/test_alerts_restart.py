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


class Slept(BaseException):
    """Raised by the stand-in machine.deepsleep(), which on a board does not return.

    Not an Exception, like the simulation's SystemExit: failed() catches those around
    deepsleep() for a port that lacks it.
    """


class DeepSleepingMachine(Machine):
    def __init__(self):
        self.slept_ms = None

    def deepsleep(self, ms):
        self.slept_ms = ms
        raise Slept()


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
            restart.SLEEP_STATE,
            restart._MACHINE,
        )
        self.board = sys.modules.get("alerts.board")
        restart.PATH = self.path
        # Absent unless a test writes it.
        restart.SLEEP_STATE = self.path.replace("failed_starts.txt", "sleep_state.json")
        restart.machine = Machine()
        restart._previous = previous
        restart._count = None
        restart._running = False
        # As in the simulation: a simulated second takes 1 ms, so a 40 s delay takes 40 ms.
        restart._SPEED = 1000
        # The chip name of a port that is not rp2.
        restart._MACHINE = ""
        sys.modules["alerts.board"] = Board()

    def close(self):
        (
            restart.PATH,
            restart.machine,
            restart._previous,
            restart._count,
            restart._running,
            restart._SPEED,
            restart.SLEEP_STATE,
            restart._MACHINE,
        ) = self.saved
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


def test_long_count_file_counts_as_damaged():
    # A count has a few digits. A longer file is damaged, and is not read whole: main.py
    # imports this module first, and a MemoryError there would leave the board at the REPL.
    scope = Scope()
    try:
        # 100 digits, then 600 KB: more than the 512 KB heap of the MicroPython test run.
        for size in (100, 600000):
            with open(scope.path, "w") as file:
                for _ in range(size // 100):
                    file.write("7" * 100)
            assert restart.read() == 0, size
        # The next failed start writes a short count over it.
        helpers.raises(Reset, restart.failed, ValueError("bug"))
        assert restart.read() == 1
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


class BrokenClock:
    """alerts.clock with a time that gmtime() cannot format."""

    def now(self):
        return 1 << 70

    def format_utc(self, seconds):
        raise OverflowError("overflow converting long int to machine word")


def test_failure_while_logging_still_resets():
    scope = Scope()
    saved = sys.modules.get("alerts.clock")
    sys.modules["alerts.clock"] = BrokenClock()
    try:
        helpers.raises(Reset, restart.failed, ValueError("bug"))
        assert restart.read() == 1
    finally:
        if saved is None:
            del sys.modules["alerts.clock"]
        else:
            sys.modules["alerts.clock"] = saved
        scope.close()


def test_started_without_log_line():
    # The start is complete even when the heap has no room left for the log line.
    scope = Scope(previous=3)
    saved = restart._log

    def failing_log(level, *parts):
        raise MemoryError("memory allocation failed")

    restart._log = failing_log
    try:
        restart.write(3)
        restart.started()
        assert restart.read() == 0
        assert restart._previous == 0
    finally:
        restart._log = saved
        scope.close()


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


def test_running_failure_not_start_failure():
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


def run_main_py(error, failed=None):
    """Run firmware/main.py with an alerts.app whose main() raises error; return what reached failed().

    ``failed`` replaces alerts.restart.failed; by default it records what it is given.
    """
    import alerts

    with open(MAIN_PY) as file:
        code = compile(file.read(), "main.py", "exec")
    handed = []
    saved_failed = restart.failed
    saved_app = sys.modules.get("alerts.app")
    app = FailingApp(error)
    sys.modules["alerts.app"] = app
    alerts.app = app
    restart.failed = failed or handed.append
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


def test_main_py_hands_failure_over():
    error = MemoryError("memory allocation failed")
    assert run_main_py(error) == [error]


def test_main_py_keyboard_interrupt():
    helpers.raises(KeyboardInterrupt, run_main_py, KeyboardInterrupt())


class SleepingMachine:
    """Stands in for both machine and time in main.py: records the sleep, then the reset."""

    def __init__(self):
        self.calls = []

    def sleep(self, seconds):
        self.calls.append(("sleep", seconds))

    def reset(self):
        self.calls.append(("reset",))
        raise Reset()


def test_main_py_fallback_reset():
    # After the sensor loop ran, alerts.restart is unloaded. When it does not fit again
    # (or fails itself), main.py still resets the board after a pause instead of leaving
    # it at the REPL.
    def failed(exc):
        raise MemoryError("memory allocation failed")

    stand_in = SleepingMachine()
    saved = {name: sys.modules.get(name) for name in ("machine", "time")}
    sys.modules["machine"] = stand_in
    sys.modules["time"] = stand_in
    try:
        helpers.raises(Reset, run_main_py, ValueError("bug"), failed)
    finally:
        for name in saved:
            if saved[name] is None:
                del sys.modules[name]
            else:
                sys.modules[name] = saved[name]
    assert stand_in.calls == [("sleep", 10), ("reset",)]


def test_start_complete_keeps_count():
    import alerts
    from alerts import app

    scope = Scope(previous=2)
    try:
        restart.write(2)
        app.start_complete()
        assert "alerts.restart" not in sys.modules
        # A failure soon after the start still counts as one in a row.
        assert restart.read() == 2
    finally:
        app._running = False
        sys.modules["alerts.restart"] = restart
        alerts.restart = restart
        scope.close()


def test_clear_failed_starts_after_stable_run():
    import alerts
    from alerts import app

    assert app.FAILED_STARTS == restart.PATH
    scope = Scope(previous=2)
    saved = app.FAILED_STARTS
    app.FAILED_STARTS = scope.path
    try:
        restart.write(2)
        app.clear_failed_starts()
        assert restart.read() == 0
        assert "alerts.restart" not in sys.modules
        # Without a count file the module is not loaded at all.
        app.clear_failed_starts()
        assert "alerts.restart" not in sys.modules
    finally:
        app.FAILED_STARTS = saved
        sys.modules["alerts.restart"] = restart
        alerts.restart = restart
        scope.close()


def test_deep_sleep_mode_waits_asleep():
    scope = Scope(previous=1)
    lines = []
    saved = restart._log
    restart._log = lambda level, *parts: lines.append(" ".join([level] + [str(part) for part in parts]))
    try:
        machine = DeepSleepingMachine()
        restart.machine = machine
        helpers.raises(Slept, restart.failed, ValueError("bug"), True, True)
        # The second failure in a row: 20 s, which the sim's 1000x speed makes 20 ms.
        assert machine.slept_ms == 20
        assert lines[0].endswith("failure 2 in a row, deep sleep for 20 s")
        assert restart.read() == 2
    finally:
        restart._log = saved
        scope.close()


def test_no_deepsleep_waits_awake():
    # restart.machine is the stand-in without deepsleep(): the board waits, then resets.
    scope = Scope()
    try:
        helpers.raises(Reset, restart.failed, ValueError("bug"), True, True)
    finally:
        scope.close()


class WokenMachine(DeepSleepingMachine):
    """machine on ESP32: reset_cause() gives 4 (DEEPSLEEP_RESET) after a deep-sleep wake, 1 after power on."""

    WDT_RESET = 3
    DEEPSLEEP_RESET = 4

    def __init__(self, cause):
        DeepSleepingMachine.__init__(self)
        self.cause = cause

    def reset_cause(self):
        return self.cause


class PicoMachine(DeepSleepingMachine):
    """machine on rp2: reset_cause() and deepsleep(), but no DEEPSLEEP_RESET.

    It reports 3 (WDT_RESET) after the watchdog, machine.reset() and a deep-sleep wake alike.
    """

    WDT_RESET = 3

    def reset_cause(self):
        return 3


class RP2040Machine(PicoMachine):
    """machine on a Pico W, whose mem32 shows the watchdog's REASON register.

    REASON is 1 after a timeout and 2 after machine.reset() or a deep-sleep wake.
    """

    def __init__(self, reason):
        PicoMachine.__init__(self)
        self.mem32 = {0x40058008: reason}


class RTC:
    """machine.RTC on ESP32, whose memory() keeps the sleep state across deep sleep and resets."""

    def __init__(self, memory):
        self._memory = memory

    def memory(self):
        return self._memory


class RememberingMachine(WokenMachine):
    """An ESP32 whose RTC memory contains the sleep state of deep-sleep mode."""

    def RTC(self):
        return RTC(b'{"time": 1}')


def failure_wait(machine, *arguments):
    """Return (the log lines, whether it slept) of restart.failed(ValueError, *arguments) with machine."""
    lines = []
    saved = restart._log
    restart._log = lambda level, *parts: lines.append(" ".join([level] + [str(part) for part in parts]))
    restart.machine = machine
    try:
        try:
            restart.failed(ValueError("bug"), *arguments)
        except Slept:
            return lines, True
        except Reset:
            return lines, False
        raise AssertionError("failed() returned")
    finally:
        restart._log = saved


def test_failure_after_wake_waits_asleep():
    # Before config.json gives the mode (main.py passes no sleep, alerts.app passes None
    # until the config check), a board that woke from deep sleep is in deep-sleep mode.
    for arguments in ((), (False, None)):
        scope = Scope()
        try:
            machine = WokenMachine(4)
            lines, slept = failure_wait(machine, *arguments)
            assert slept, arguments
            assert machine.slept_ms == 10
            assert lines[0].endswith("failure 1 in a row, deep sleep for 10 s")
            assert restart.read() == 1
        finally:
            scope.close()


def test_failure_after_other_reset_waits_awake():
    # Power on, a hard reset, the watchdog, a soft reset: the mode is not known.
    for cause in (1, 2, 3, 5):
        scope = Scope()
        try:
            machine = WokenMachine(cause)
            lines, slept = failure_wait(machine)
            assert not slept, cause
            assert machine.slept_ms is None
            assert lines[0].endswith("failure 1 in a row, reset in 10 s")
        finally:
            scope.close()


def test_mode_off_after_wake_waits_awake():
    # config.json was changed to turn deep sleep off while the board slept.
    scope = Scope()
    try:
        machine = WokenMachine(4)
        lines, slept = failure_wait(machine, False, False)
        assert not slept
        assert machine.slept_ms is None
        assert lines[0].endswith("failure 1 in a row, reset in 10 s")
    finally:
        scope.close()


def test_running_failure_after_wake_waits_awake():
    # The sensor loop ran, so the mode is known: not deep sleep, whatever woke the board.
    scope = Scope()
    try:
        machine = WokenMachine(4)
        lines, slept = failure_wait(machine, True)
        assert not slept
        assert lines == ["ERROR unexpected ValueError: bug; failure 1 in a row, reset in 10 s"]
        assert machine.slept_ms is None
    finally:
        scope.close()


def test_no_deepsleep_reset_constant_waits_awake():
    # rp2 has reset_cause() but no DEEPSLEEP_RESET. The unix port, like Machine here, has neither.
    for machine in (PicoMachine(), Machine()):
        scope = Scope()
        try:
            assert not failure_wait(machine)[1]
        finally:
            scope.close()


def write_sleep_state():
    with open(restart.SLEEP_STATE, "w") as file:
        file.write('{"time": 1}')


def test_failure_with_sleep_state_waits_asleep():
    # A Pico W in deep-sleep mode reports its wake as a watchdog reset, and an ESP32
    # keeps its RTC memory across resets. The sleep state that a wake saved shows the mode.
    for machine, with_file in ((PicoMachine(), True), (RememberingMachine(3), False)):
        scope = Scope()
        try:
            if with_file:
                write_sleep_state()
            lines, slept = failure_wait(machine)
            assert slept, machine
            assert machine.slept_ms == 10
            assert lines[0].endswith("failure 1 in a row, deep sleep for 10 s")
            # Once the sensor loop ran, the mode is known from config.json.
            restart._count = None
            lines, slept = failure_wait(machine, True)
            assert not slept
        finally:
            scope.close()


def watchdog_boot(machine):
    """Return the log lines of restart.after_watchdog() with machine, and whether it slept."""
    lines = []
    saved = restart._log
    restart._log = lambda level, *parts: lines.append(" ".join([level] + [str(part) for part in parts]))
    restart.machine = machine
    try:
        restart.after_watchdog()
    except Slept:
        return lines, True
    finally:
        restart._log = saved
    return lines, False


def test_watchdog_reset_counts_as_failed_start():
    scope = Scope(previous=1)
    try:
        machine = WokenMachine(3)
        lines, slept = watchdog_boot(machine)
        assert lines == ["ERROR the watchdog reset the board; failure 2 in a row, start in 20 s"]
        assert not slept
        assert restart.read() == 2
        # A failure later in the same start is the next one in a row.
        assert failure_wait(machine)[0][0].endswith("failure 3 in a row, reset in 40 s")
        assert restart.read() == 3
    finally:
        scope.close()


def test_watchdog_reset_cleared_by_stable_run():
    scope = Scope()
    saved = restart._log
    try:
        watchdog_boot(WokenMachine(3))
        assert restart.read() == 1
        restart._log = lambda level, *parts: None
        restart.started()
        assert restart.read() == 0
    finally:
        restart._log = saved
        scope.close()


def test_watchdog_reset_in_deep_sleep_mode_waits_asleep():
    # An ESP32 keeps the sleep state in RTC memory. A Pico W's wake left
    # sleep_state.json, and its REASON register shows the timeout (1).
    for machine, chip in ((RememberingMachine(3), ""), (RP2040Machine(1), "RP2040")):
        scope = Scope()
        try:
            if chip:
                restart._MACHINE = "Raspberry Pi Pico W with " + chip
                with open(restart.SLEEP_STATE, "w") as file:
                    file.write("{}")
            lines, slept = watchdog_boot(machine)
            assert slept, chip
            assert machine.slept_ms == 10
            assert lines == ["ERROR the watchdog reset the board; failure 1 in a row, deep sleep for 10 s"]
        finally:
            scope.close()


def test_other_resets_not_counted_at_boot():
    # Power on, a hard reset, a deep-sleep wake and a soft reset on ESP32. On rp2
    # without a known chip, a watchdog reset looks the same as machine.reset() or a
    # wake. On the RP2040, machine.reset() and a wake set FORCE (2) in REASON, and a
    # reset by the RUN pin sets neither bit (0). The RP2350 is not trusted.
    boards = [(WokenMachine(cause), "") for cause in (1, 2, 4, 5)] + [(PicoMachine(), ""), (Machine(), "")]
    boards += [(RP2040Machine(2), "RP2040"), (RP2040Machine(0), "RP2040"), (RP2040Machine(1), "RP2350")]
    for machine, chip in boards:
        scope = Scope()
        try:
            restart._MACHINE = "a board with " + chip if chip else ""
            assert watchdog_boot(machine) == ([], False), chip
            assert restart.read() == 0
        finally:
            scope.close()


def test_pico_w_watchdog_timeout_counted():
    scope = Scope()
    try:
        restart._MACHINE = "Raspberry Pi Pico W with RP2040"
        lines, slept = watchdog_boot(RP2040Machine(1))
        assert lines == ["ERROR the watchdog reset the board; failure 1 in a row, start in 10 s"]
        assert not slept
        assert restart.read() == 1
    finally:
        scope.close()


def test_main_py_counts_watchdog_reset():
    scope = Scope()
    lines = []
    saved = restart._log
    restart._log = lambda level, *parts: lines.append(" ".join([level] + [str(part) for part in parts]))
    try:
        restart.machine = WokenMachine(3)
        handed = run_main_py(ValueError("bug"))
        assert lines == ["ERROR the watchdog reset the board; failure 1 in a row, start in 10 s"]
        assert restart.read() == 1
        # The start then went on, and its failure reached failed() as usual.
        assert len(handed) == 1
    finally:
        restart._log = saved
        scope.close()


def test_main_py_failure_after_wake_sleeps():
    # main.py hands a failed import to alerts.restart, which finds the deep-sleep wake.
    scope = Scope(previous=2)
    saved = restart._log
    restart._log = lambda level, *parts: None
    try:
        machine = WokenMachine(4)
        restart.machine = machine
        helpers.raises(Slept, run_main_py, MemoryError("memory allocation failed"), restart.failed)
        # The third failure in a row: 40 s, which the sim's 1000x speed makes 40 ms.
        assert machine.slept_ms == 40
        assert restart.read() == 3
    finally:
        restart._log = saved
        scope.close()


def test_sim_speed_float_gives_whole_milliseconds():
    # `microsmtp sim --speed 60` gives a float speed. The wait that remains when pause()
    # fails, and the deep sleep, still take whole milliseconds.
    scope = Scope()
    saved = restart.pause

    def failing_pause(seconds):
        raise MemoryError()

    try:
        restart._SPEED = 1000.0
        restart.pause = failing_pause
        helpers.raises(Reset, restart.failed, ValueError("bug"))
        machine = DeepSleepingMachine()
        restart.machine = machine
        helpers.raises(Slept, restart.failed, ValueError("bug"), True, True)
        assert machine.slept_ms == 10
        assert type(machine.slept_ms) is int
    finally:
        restart.pause = saved
        scope.close()
