"""alerts.sleepstate: clearing the state that deep-sleep mode keeps, once that mode is off,
and what a wake saves in it while the flash is full."""

import os

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from alerts import board, log, outbox, sleepstate, wake

from helpers import fresh_directory, remove_tree

ENOSPC = 28


class RTC:
    """machine.RTC with the memory() of ESP32, which keeps its bytes across resets."""

    def __init__(self, memory):
        self.stored = memory

    def memory(self, data=None):
        if data is None:
            return self.stored
        self.stored = data
        return None


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def test_clear_removes_file_and_rtc_memory():
    directory = fresh_directory("sleep-state")
    path = directory + "/sleep_state.json"
    with open(path, "w") as file:
        file.write('{"time": 1}')
    rtc = RTC(b'{"time": 1}')
    saved = sleepstate._rtc_memory
    sleepstate._rtc_memory = lambda: rtc
    try:
        sleepstate.clear(path)
        assert not exists(path)
        assert rtc.stored == b""
        assert sleepstate.load(path) == {}
        # Nothing left to clear: no error, and no write to the RTC memory.
        rtc.stored = None
        sleepstate.clear(path)
        assert rtc.stored is None
    finally:
        sleepstate._rtc_memory = saved
        remove_tree(directory)


def test_continuous_start_forgets_sleep_state():
    from alerts import boot

    directory = fresh_directory("sleep-state-boot")
    previous = os.getcwd()
    os.chdir(directory)
    try:
        with open(sleepstate.PATH, "w") as file:
            file.write('{"time": 1}')
        boot._forget_sleep_state()
        assert not exists(sleepstate.PATH)
    finally:
        os.chdir(previous)
        remove_tree(directory)


# -- a wake on a full flash ------------------------------------------------------------------


class Slept(Exception):
    """Raised by the stand-in for board.deep_sleep(), which ends the wake."""


def _deep_sleep(seconds):
    raise Slept()


def _full_open(path, mode="r"):
    if "w" in mode:
        raise OSError(ENOSPC)
    return open(path, mode)


def _wake(directory, rtc, full):
    """Run one deep-sleep wake with the sensor above the rule's limit; return the App and the log lines."""
    # alerts.boot unloads alerts.sleepstate: the stand-in goes into the module loaded now.
    from alerts import sleepstate
    from alerts.app import App
    from alerts.config import validate
    from alerts.sensors import create

    app = App(
        validate(
            {
                "device": "d",
                "wifi": {"ssid": "home", "password": "p"},
                "smtp": {
                    "host": "127.0.0.1",
                    "user": "u",
                    "password": "p",
                    "from": "a@example.com",
                    "to": ["you@example.com"],
                },
                "ntp": {"host": "127.0.0.1"},
                "sensors": [{"name": "temp", "type": "simulated", "unit": "C", "values": [[0, 35]]}],
                "rules": [{"name": "hot", "sensor": "temp", "above": 30, "hysteresis": 2, "min_interval_s": 60}],
                "outbox": {"dir": directory + "/outbox"},
                "deep_sleep": {"enabled": True, "interval_s": 300},
            }
        )
    )
    app.outbox.recover()
    app.drivers["temp"] = create(app.config["sensors"][0])
    app.can_send = False
    lines = []
    saved = (log._write, sleepstate._rtc_memory, board.deep_sleep)
    log._write = lambda level, message: lines.append(level + " " + message)
    sleepstate._rtc_memory = lambda: rtc
    board.deep_sleep = _deep_sleep
    previous = os.getcwd()
    # sleep_state.json, where the port has no RTC memory, goes to the working folder.
    os.chdir(directory)
    if full:
        outbox.open = _full_open
    try:
        asyncio.run(wake.run_once(app))
        raise AssertionError("the wake did not end in deep sleep")
    except Slept:
        pass
    finally:
        if full:
            del outbox.open
        os.chdir(previous)
        log._write, sleepstate._rtc_memory, board.deep_sleep = saved
    return app, lines


def test_wake_with_unwritten_alert():
    directory = fresh_directory("sleep-state-unwritten")
    rtc = RTC(b"")
    try:
        app, lines = _wake(directory, rtc, full=True)
        assert len(app.unwritten) == 1
        assert app.outbox.pending() == []
        first = lines
        # RAM is lost in deep sleep: the next wake, with room on the flash, raises it again.
        app, lines = _wake(directory, rtc, full=False)
        assert app.rules.active() == ["hot"]
        assert app.unwritten == []
        pending = app.outbox.pending()
        assert len(pending) == 1, pending
        assert app.outbox.load(pending[0])["alert"]["rule"] == "hot"
        # The wake after that restores the rule as raised: no second alert.
        app, lines = _wake(directory, rtc, full=False)
        assert app.outbox.pending() == pending
        assert [line for line in first if "rule state not saved" in line], first
        assert lines[-1].endswith("state in rtc)"), lines
    finally:
        remove_tree(directory)


def test_wake_full_flash_without_rtc():
    directory = fresh_directory("sleep-state-full")
    try:
        # No RTC memory: the sleep state goes to a file, which the full flash refuses.
        app, lines = _wake(directory, None, full=True)
        errors = [line for line in lines if "sleep state not saved" in line]
        assert len(errors) == 1, lines
        assert "flash full" in errors[0], errors
        assert lines[-1].startswith("INFO deep sleep for 300 s"), lines
        assert lines[-1].endswith("state not saved)"), lines
        assert not exists(directory + "/" + sleepstate.PATH)
        assert not exists(directory + "/" + sleepstate.PATH + ".tmp")
    finally:
        remove_tree(directory)
