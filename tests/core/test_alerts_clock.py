"""Dating alerts and rule state recorded before NTP set the clock."""

from alerts import clock, mailer
from alerts.rules import Rules
from alerts.rules_restore import correct_times

UNSET = 946684800  # 2000-01-01 00:00:00 UTC, where an unset ESP32 clock starts
T0 = 1767225600  # 2026-01-01 00:00:00 UTC


class FakeClock:
    """Replaces clock.now and clock.ticks_ms; restore() puts the real ones back."""

    def __init__(self, seconds, ticks):
        self.seconds = seconds
        self.ticks = ticks
        self._saved = (clock.now, clock.ticks_ms, clock._BOOT_TICKS, clock._estimate_offset)
        clock.now = lambda: self.seconds + clock._estimate_offset
        clock.ticks_ms = lambda: self.ticks
        clock._BOOT_TICKS = ticks
        clock._estimate_offset = 0
        clock._sync_offset = None
        clock._sync_range = None

    def advance(self, seconds):
        self.seconds += seconds
        self.ticks += seconds * 1000

    def set_by_ntp(self, real):
        """Set the clock as net.sync_time() does, one second after reading the reference."""
        before = clock.reference()
        self.advance(1)
        self.seconds = real
        clock.set_synced(before)

    def restore(self):
        clock.now, clock.ticks_ms, clock._BOOT_TICKS, clock._estimate_offset = self._saved
        clock._sync_offset = None
        clock._sync_range = None


def make_rules():
    config = {
        "sensors": [{"name": "temp", "unit": "C"}],
        "rules": [{"name": "hot", "sensor": "temp", "above": 30}],
        "alerts": {"max_per_hour": 10, "history": 5},
    }
    return Rules(config)


def test_time_read_before_ntp_becomes_real():
    fake = FakeClock(UNSET + 100, 7000)
    try:
        assert clock.timeline_tag() == clock.TIMELINE
        read_at = clock.now()
        fake.advance(50)
        fake.set_by_ntp(T0)
        assert clock.corrected()
        assert clock.timeline_tag() is None
        # Read 51 s before the clock was set (50 s, then 1 s inside the NTP exchange).
        assert clock.real_time(read_at, clock.TIMELINE) == T0 - 51
        assert clock.real_time(read_at) == T0 - 51
    finally:
        fake.restore()


def test_unset_time_from_earlier_boot_is_unknown():
    fake = FakeClock(UNSET + 100, 7000)
    try:
        fake.set_by_ntp(T0)
        assert clock.real_time(UNSET + 5000, "0badc0de") is None
        # An estimate made in an earlier wake is the best time known.
        assert clock.real_time(T0 - 600, "0badc0de") == T0 - 600
        # Rule state from before this boot: unset times are dropped, real ones kept.
        assert clock.real_time(UNSET + 5, None) is None
        assert clock.real_time(T0 - 3600, None) == T0 - 3600
    finally:
        fake.restore()


def test_set_clock_needs_no_correction():
    fake = FakeClock(T0, 7000)
    try:
        assert clock.timeline_tag() is None
        fake.set_by_ntp(T0 + 2)
        assert not clock.corrected()
        assert clock.real_time(T0 - 10) == T0 - 10
    finally:
        fake.restore()


def test_estimated_clock_is_corrected():
    # A Pico W after deep sleep: the clock restarted, the estimate says T0 + 600.
    fake = FakeClock(UNSET + 3, 100)
    try:
        clock.estimate(T0 + 600)
        assert clock.is_set()
        assert clock.timeline_tag() == clock.TIMELINE
        read_at = clock.now()
        fake.advance(9)
        # The wake came early (a pin): the real time is 400 s behind the estimate.
        fake.set_by_ntp(T0 + 210)
        assert clock.real_time(read_at, clock.TIMELINE) == T0 + 200
    finally:
        fake.restore()


def test_rule_state_and_record_dated_after_ntp():
    fake = FakeClock(UNSET + 100, 7000)
    try:
        rules = make_rules()
        rules.process("temp", 20, clock.now())
        fake.advance(60)
        records = rules.process("temp", 35, clock.now())
        record = records[0]
        record["timeline"] = clock.timeline_tag()
        # Not yet dated: NTP has not replied.
        assert correct_times(record) is False
        fake.advance(30)
        fake.set_by_ntp(T0)
        rules.convert_times(clock.real_time)
        assert correct_times(record) is True
        assert "timeline" not in record
        assert record["time"] == T0 - 31
        assert record["readings"] == [[T0 - 91, 20], [T0 - 31, 35]]
        assert rules.histories["temp"].items() == [[T0 - 91, 20], [T0 - 31, 35]]
        assert rules.rules[0].last_sent == T0 - 31
        assert rules.limit.sent == [T0 - 31]
    finally:
        fake.restore()


def alert_entry(time, timeline):
    alert = {
        "kind": "alert",
        "rule": "hot",
        "sensor": "temp",
        "value": 35,
        "unit": "C",
        "condition": "above",
        "threshold": 30,
        "time": time,
        "readings": [[time - 60, 20], [time, 35]],
        "timeline": timeline,
    }
    return {"seq": 1, "id": "<1.1@example.com>", "attempts": 0, "alert": alert}


CONFIG = {"device": "greenhouse", "smtp": {"from": "board@example.com", "to": ["you@example.com"]}}


def message_text(message):
    return message.to_bytes().decode() if hasattr(message, "to_bytes") else bytes(message).decode()


def test_mail_from_earlier_boot_says_time_unknown():
    fake = FakeClock(T0 + 300, 7000)
    try:
        entry = alert_entry(UNSET + 500, "0badc0de")
        message = mailer.build_message(entry, CONFIG)
        text = message_text(message)
        assert "Time: unknown (clock not set)" in text, text
        # The Date header is the send time, not 2000.
        assert "Date: Thu, 01 Jan 2026 00:05:00 +0000" in text, text
        assert "2000-01-01" not in text, text
    finally:
        fake.restore()


def test_mail_of_this_boot_carries_real_time():
    fake = FakeClock(UNSET + 100, 7000)
    try:
        fake.advance(60)
        entry = alert_entry(clock.now(), clock.timeline_tag())
        fake.advance(20)
        fake.set_by_ntp(T0)
        text = message_text(mailer.build_message(entry, CONFIG))
        assert "Time: 2025-12-31 23:59:39 UTC" in text, text
        assert "Date: Wed, 31 Dec 2025 23:59:39 +0000" in text, text
        # The readings attached as CSV are dated too.
        assert entry["alert"]["readings"] == [[T0 - 81, 20], [T0 - 21, 35]]
    finally:
        fake.restore()
