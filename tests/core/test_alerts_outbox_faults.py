"""The outbox in a folder shared with other files, with damaged entries and on a full flash."""

import json
import os

from alerts import log, outbox, outbox_admin
from alerts.app import App
from alerts.outbox import Outbox, OutboxError

from helpers import fresh_directory, listdir, raises, remove_tree

T0 = 1767225600  # 2026-01-01 00:00:00 UTC
ENOSPC = 28


def alert(value, kind="alert"):
    return {"kind": kind, "rule": "hot", "sensor": "temp", "value": value, "unit": "C", "time": T0}


def write(path, text):
    with open(path, "w") as file:
        file.write(text)


class Logged:
    """Collects the log lines written while it is active (a with block)."""

    def __enter__(self):
        self.lines = []
        self._saved = log._write
        log._write = lambda level, message: self.lines.append(level + " " + message)
        return self

    def __exit__(self, *exc):
        log._write = self._saved
        return False


class FullFlash:
    """While active, opening a file for writing raises OSError(ENOSPC), as on a full flash."""

    def __init__(self, rename=True):
        self.rename = rename

    def __enter__(self):
        real_open = open

        def full_open(path, mode="r"):
            if "w" in mode:
                raise OSError(ENOSPC)
            return real_open(path, mode)

        outbox.open = full_open
        if not self.rename:
            outbox_admin.os = NoRename()
        return self

    def __exit__(self, *exc):
        del outbox.open
        outbox_admin.os = os
        return False


class NoRename:
    """os for outbox_admin, with a rename that fails like one on a full flash."""

    def __getattr__(self, name):
        return getattr(os, name)

    def rename(self, old, new):
        raise OSError(ENOSPC)


def new_box(max_entries=50):
    path = fresh_directory("alerts-outbox-faults")
    box = Outbox(path, max_entries, 2, "example.com")
    box.recover()
    return path, box


# -- a folder shared with other files --------------------------------------------------------


def test_other_files_left_alone():
    path = fresh_directory("alerts-outbox-faults")
    others = {
        "config.json": '{"device": "d"}',
        "rule_state.json": '{"rules": {}}',
        "notes.json": "not json",
        "main.py": "import alerts",
        "1.json": "{}",
        "config.json.tmp": "{",
        "boot.txt": "x",
        # Fullwidth digits, which CPython's str.isdigit() takes for digits.
        "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18.json": "{}",
    }
    for name in others:
        write(path + "/" + name, others[name])
    box = Outbox(path)
    assert box.recover() == 0
    name = box.put(alert(31), T0)
    assert box.pending() == [name]
    assert box.due(T0) == 0
    box.remove(name)
    assert box.due(T0) is None
    assert box.aside() == []
    for other in others:
        with open(path + "/" + other) as file:
            assert file.read() == others[other], other
    remove_tree(path)


def test_recover_clears_own_damaged_files():
    path, box = new_box()
    name = box.put(alert(31), T0)
    write(path + "/" + name, '{"seq": 1')
    write(path + "/00000002.json.tmp", '{"seq"')
    assert Outbox(path).recover() == 1
    assert sorted(listdir(path)) == ["aside", "state.json"]
    remove_tree(path)


def test_unreadable_entry_dropped_once():
    path, box = new_box()
    first = box.put(alert(31), T0)
    second = box.put(alert(32), T0)
    box.retry_later(second, box.load(second), T0, 300)
    # Damaged after start-up: recover() has run already.
    write(path + "/" + first, "[1, 2")
    with Logged() as logged:
        assert box.due(T0) == 300
        assert box.due(T0) == 300
    assert box.pending() == [second]
    assert box.dropped == 1
    assert [line for line in logged.lines if first in line and "unreadable" in line] == [logged.lines[0]]
    assert len(logged.lines) == 1
    with open(path + "/state.json") as file:
        assert json.loads(file.read())["dropped"] == 1
    write(path + "/" + second, "")
    assert box.due(T0) is None
    remove_tree(path)


# -- a full flash ----------------------------------------------------------------------------


def test_retry_later_full_flash():
    path, box = new_box()
    name = box.put(alert(31), T0)
    with Logged() as logged, FullFlash():
        box.retry_later(name, box.load(name), T0, 120)
        box.retry_later(name, box.load(name), T0 + 130, 240)
    assert box.due(T0 + 130) == 240
    assert box.load(name)["next"] == T0 + 370
    assert len(logged.lines) == 1, logged.lines
    assert "flash full" in logged.lines[0], logged.lines
    assert "kept in memory only" in logged.lines[0], logged.lines
    # Once writes work again the time goes to flash, and the next failure is logged again.
    box.retry_later(name, box.load(name), T0 + 400, 60)
    assert Outbox(path).load(name)["next"] == T0 + 460
    with Logged() as logged, FullFlash():
        box.retry_later(name, box.load(name), T0 + 500, 60)
    assert len(logged.lines) == 1, logged.lines
    remove_tree(path)


def test_write_atomic_removes_partial_copy():
    path = fresh_directory("alerts-outbox-faults")
    target = path + "/00000001.json"
    outbox.write_atomic(target, {"seq": 1})

    class Half:
        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()
            return False

        def write(self, data):
            self.file.write(data[:3])
            raise OSError(ENOSPC)

    real_open = open
    outbox.open = lambda name, mode="r": Half(real_open(name, mode))
    try:
        raises(OSError, outbox.write_atomic, target, '{"seq": 2}')
    finally:
        del outbox.open
    assert listdir(path) == ["00000001.json"]
    with open(target) as file:
        assert json.loads(file.read()) == {"seq": 1}
    remove_tree(path)


def test_set_aside_full_flash():
    path, box = new_box()
    name = box.put(alert(31), T0)
    with Logged() as logged, FullFlash():
        box.set_aside(name, box.load(name), "554 5.7.1 rejected")
    assert box.pending() == []
    assert box.aside() == [name]
    assert [line for line in logged.lines if "554 5.7.1 rejected" in line and "flash full" in line]
    remove_tree(path)


def test_set_aside_unmovable_entry_waits():
    from alerts import clock

    path, box = new_box()
    name = box.put(alert(31), T0)
    with Logged(), FullFlash(rename=False):
        box.set_aside(name, box.load(name), "554 5.7.1 rejected")
    assert box.pending() == [name]
    # The entry is kept, and not due again at once: no SMTP round in a tight loop.
    assert box.due(clock.now()) > 0
    remove_tree(path)


def test_put_full_flash_raises_outbox_error():
    path, box = new_box(max_entries=1)
    box.put(alert(31), T0)
    with Logged(), FullFlash():
        exc = raises(OutboxError, box.put, alert(32), T0)
        assert "flash full" in str(exc), str(exc)
        # Dropping the oldest to make room happened, and its count waits in memory.
        assert box.dropped == 1
        box.reported(([], [], 1))
    assert box.dropped == 0
    remove_tree(path)


class QueueApp(App):
    """An App with only what App.queue() uses."""

    def __init__(self, box):
        self.outbox = box
        self.unwritten = []
        self.saved = 0
        self.woken = 0
        self.wake = self

    def set(self):
        self.woken += 1

    def save_rule_state(self):
        self.saved += 1

    def update_led(self):
        pass


def test_queue_full_flash_keeps_alerts():
    path, box = new_box()
    app = QueueApp(box)
    with Logged() as logged, FullFlash():
        app.queue([alert(31)])
        app.queue([alert(32), alert(33, "normal")])
        app.queue([])
    # No exception reached the sensor task, and one log line gives the cause and the fix.
    assert box.pending() == []
    assert app.saved == 0
    assert app.woken == 0
    assert len([line for line in logged.lines if "kept in memory" in line]) == 1, logged.lines
    assert "flash full" in logged.lines[0], logged.lines
    # Flash freed: the next call (a reading or the minute tick) writes them in order.
    app.queue([])
    names = box.pending()
    assert [box.load(name)["alert"]["value"] for name in names] == [31, 32, 33]
    assert app.saved == 1
    assert app.woken == 1
    remove_tree(path)


def test_queue_memory_bounded():
    from alerts import app as application

    path, box = new_box()
    app = QueueApp(box)
    with Logged() as logged, FullFlash():
        for value in range(application._MAX_UNWRITTEN + 2):
            app.queue([alert(value)])
    assert [record["value"] for record in app.unwritten] == list(range(2, application._MAX_UNWRITTEN + 2))
    lost = [line for line in logged.lines if "alert lost" in line]
    assert len(lost) == 2, lost
    assert "value=0" in lost[0], lost
    assert "value=1" in lost[1], lost
    remove_tree(path)


def test_queue_error_after_write():
    path, box = new_box()
    app = QueueApp(box)
    with Logged(), FullFlash():
        app.queue([alert(31)])
    assert len(app.unwritten) == 1

    def short_heap(level, message):
        if message.startswith("queued"):
            raise MemoryError("no heap for the log line")

    saved = log._write
    log._write = short_heap
    try:
        # The held alert is written, then the log line fails (the task logs it and goes on).
        raises(MemoryError, app.queue, [])
    finally:
        log._write = saved
    assert app.unwritten == []
    assert app.woken == 1
    with Logged():
        app.queue([])
    names = box.pending()
    assert len(names) == 1, names
    assert box.load(names[0])["alert"]["value"] == 31
    remove_tree(path)


def _rule_app(directory, state_path):
    from alerts.config import validate
    from alerts.rulestate import RuleState

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
                "outbox": {"dir": directory},
            }
        )
    )
    app.outbox.recover()
    app.rule_state = RuleState(app.rules, state_path)
    app.rule_state.load()
    return app


def test_rule_state_waits_for_outbox():
    from alerts import delivery

    directory = fresh_directory("alerts-outbox-faults")
    state_path = fresh_directory("alerts-outbox-faults-state") + "/rule_state.json"
    app = _rule_app(directory, state_path)
    real_open = open

    def outbox_full(name, mode="r"):
        # Only the outbox folder is full: the small rule state file would still fit.
        if "w" in mode and name.startswith(directory + "/"):
            raise OSError(ENOSPC)
        return real_open(name, mode)

    outbox.open = outbox_full
    try:
        with Logged():
            app.queue(app.rules.process("temp", 35.0, T0, None))
            assert len(app.unwritten) == 1
            # NTP's first reply dates the rule state and saves it: not while the alert waits.
            delivery.correct_times(app)
            app.save_rule_state()
    finally:
        del outbox.open
    # A reset now: the rules raise the alert again.
    again = _rule_app(directory, state_path)
    assert again.rules.active() == []
    assert len(again.rules.process("temp", 35.0, T0 + 60, None)) == 1
    # Once the outbox took it, the state is saved, and a reset raises nothing new.
    with Logged():
        app.queue([])
    assert app.unwritten == []
    assert len(app.outbox.pending()) == 1
    again = _rule_app(directory, state_path)
    assert again.rules.active() == ["hot"]
    assert again.rules.process("temp", 35.0, T0 + 120, None) == []
    remove_tree(directory)
    remove_tree(state_path[: state_path.rfind("/")])


def test_back_off_hand_on_one_entry():
    path, box = new_box(max_entries=1)
    first = box.put(alert(31), T0)
    box.retry_later(first, box.load(first), T0, 600)
    assert box.due(T0 + 10) == 590
    # Full: the new alert drops the only one, and takes on the session's back-off.
    box.put(alert(32), T0 + 10)
    assert box.due(T0 + 10) == 590
    remove_tree(path)


def test_back_off_hand_on_skips_own():
    path, box = new_box(max_entries=3)
    first = box.put(alert(31), T0)
    second = box.put(alert(32), T0)
    third = box.put(alert(33), T0)
    box.retry_later(first, box.load(first), T0, 600)
    entry = box.load(second)
    entry["own"] = True
    box.retry_later(second, entry, T0, 30)
    assert box.due(T0 + 10) == 590
    box.put(alert(34), T0 + 10)
    assert first not in box.pending()
    # The second waits for its own time; the third carries the session's back-off.
    assert box.load(third)["next"] == T0 + 600
    assert box.due(T0 + 10) == 590
    remove_tree(path)


def test_back_off_hand_on_full_flash():
    path, box = new_box(max_entries=2)
    first = box.put(alert(31), T0)
    second = box.put(alert(32), T0)
    box.retry_later(first, box.load(first), T0, 600)
    with Logged(), FullFlash():
        raises(OutboxError, box.put, alert(33), T0 + 10)
    assert box.pending() == [second]
    # The flash did not take the handed-on time: it is kept in memory.
    assert Outbox(path).load(second)["next"] == 0
    assert box.due(T0 + 10) == 590
    remove_tree(path)
