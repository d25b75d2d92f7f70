"""Stored times that the current clock cannot be compared with: a restart before NTP
replies (the clock counts from 2000) or a clock that went back. Such a time never delays
an alert, never stops NTP from being tried, and never keeps an alert back as too soon."""

import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from alerts import clock
from alerts.outbox import Outbox
from alerts.rules import Rules

from helpers import FixedClock, fresh_directory, remove_tree

T0 = 1767225600  # 2026-01-01 00:00:00 UTC, a time NTP set before a restart
UNSET = 946684800 + 300  # five minutes after a restart, before NTP replied


def alert_record(time):
    return {"kind": "alert", "rule": "hot", "sensor": "t", "value": 40, "unit": "C", "time": time}


def outbox_with_retry(directory, retry_at):
    """Return an outbox (retry_max_s 300) whose one entry may be tried again at retry_at."""
    outbox = Outbox(directory, retry_max=300)
    outbox.recover()
    name = outbox.put(alert_record(T0), T0)
    outbox.retry_later(name, outbox.load(name), retry_at - 200, 200)
    return outbox, name


def test_old_retry_due_with_unset_clock():
    directory = fresh_directory("alerts-unset-clock-test")
    try:
        outbox, name = outbox_with_retry(directory, T0 + 200)
        assert outbox.due(T0) == 200
        # The same entry seen by a board that restarted and has no NTP reply yet.
        assert outbox.due(UNSET) == 0
        assert outbox.ready(UNSET) == [name]
    finally:
        remove_tree(directory)


def test_retry_time_beyond_longest_delay_is_due():
    directory = fresh_directory("alerts-unset-clock-test")
    try:
        # The clock went back a day after the retry time was stored.
        outbox, name = outbox_with_retry(directory, T0 + 200)
        assert outbox.due(T0 - 86400) == 0
        assert outbox.ready(T0 - 86400) == [name]
        # Within retry_max_s the stored time still counts.
        assert outbox.due(T0 + 100) == 100
    finally:
        remove_tree(directory)


class RoundApp:
    """The App attributes a delivery round reads; network() is replaced by the test."""

    def __init__(self, outbox):
        self.outbox = outbox
        self.config = {"outbox": {"retry_min_s": 30, "retry_max_s": 300}, "smtp": {"security": "starttls"}}
        self.send_failures = 0
        self.network_retry_at = 0


def test_round_after_restart_tries_network_again():
    from alerts import delivery

    directory = fresh_directory("alerts-unset-clock-test")
    calls = []

    async def network(app):
        calls.append(clock.now())
        return 45

    saved = delivery.network
    delivery.network = network
    try:
        outbox, name = outbox_with_retry(directory, T0 + 200)
        with FixedClock(UNSET):
            wait = asyncio.run(delivery.deliver(RoundApp(outbox)))
    finally:
        delivery.network = saved
        remove_tree(directory)
    # The round brought up the network (NTP) instead of waiting 26 years.
    assert calls == [UNSET], calls
    assert wait == 45, wait


class StopSender(Exception):
    """Ends App.sender_task() in a test."""


class SenderState:
    """The App attributes App.sender_task() reads; the outbox stays empty."""

    def __init__(self):
        self.config = {"outbox": {"retry_min_s": 30, "retry_max_s": 300}}
        self.waits = []
        self.steps = []
        self.watchdog = self
        self.outbox = self

    def alive(self, name, seconds):
        pass

    def forget(self, name):
        pass

    def pending(self):
        return []

    async def _wait_wake(self, seconds):
        self.waits.append(seconds)

    async def run_delivery(self, step):
        self.steps.append(step)
        if len(self.steps) == 3:
            raise StopSender()
        return 60

    def update_led(self):
        pass


def run_sender(first_delay):
    from alerts.app import App

    state = SenderState()
    state.wake = asyncio.Event()
    state._sender_step = lambda delay: App._sender_step(state, delay)
    try:
        asyncio.run(App.sender_task(state, first_delay))
    except StopSender:
        pass
    return state


def test_sender_keeps_trying_ntp_with_empty_outbox():
    with FixedClock(UNSET):
        state = run_sender(25)
    # The back-off of the failed boot network step, then NTP again on each back-off.
    assert state.waits == [25, 60, 60], state.waits
    assert state.steps == ["network", "network", "network"], state.steps


def test_sender_waits_for_alerts_once_clock_is_set():
    from alerts.app import App

    state = SenderState()
    state.wake = asyncio.Event()
    with FixedClock(T0):
        delay = asyncio.run(App._sender_step(state, 0))
    # Nothing queued and the clock is set: the sender waits for the next alert.
    assert delay is None, delay
    assert state.steps == [], state.steps


def make_rules(max_per_hour=100):
    config = {
        "sensors": [{"name": "temp", "unit": "C"}],
        "rules": [{"name": "hot", "sensor": "temp", "above": 30, "min_interval_s": 600}],
        "alerts": {"max_per_hour": max_per_hour, "heartbeat_h": 0, "history": 5, "sensor_failures": 3},
    }
    return Rules(config)


def kinds(records):
    return [record["kind"] for record in records]


def test_min_interval_after_restart_with_unset_clock_alerts():
    before = make_rules()
    assert kinds(before.process("temp", 35, T0)) == ["alert"]
    assert kinds(before.process("temp", 25, T0 + 60)) == ["normal"]
    after = make_rules()
    assert after.restore(before.durable_state())
    # The rule's last email is dated 26 years after the unset clock's time.
    assert kinds(after.process("temp", 25, UNSET)) == []
    assert kinds(after.process("temp", 36, UNSET + 60)) == ["alert"]
    assert after.rules[0].skipped == 0
    # From there on the interval counts on the unset clock's own time line.
    assert kinds(after.process("temp", 25, UNSET + 120)) == ["normal"]
    assert kinds(after.process("temp", 36, UNSET + 180)) == []
    assert after.rules[0].skipped == 1


def test_min_interval_with_clock_gone_back_alerts():
    rules = make_rules()
    assert kinds(rules.process("temp", 35, T0 + 7200)) == ["alert"]
    assert kinds(rules.process("temp", 25, T0 + 7260)) == ["normal"]
    assert kinds(rules.process("temp", 35, T0)) == ["alert"]


def test_hourly_cap_after_restart_with_unset_clock_expires():
    before = make_rules(max_per_hour=1)
    assert kinds(before.process("temp", 35, T0)) == ["alert"]
    after = make_rules(max_per_hour=1)
    assert after.restore(before.durable_state())
    assert after.limit.sent == [T0]
    # The email counted at T0 does not fill this hour of the unset clock.
    assert kinds(after.process("temp", 25, UNSET)) == ["normal"]
    # The cap still counts the emails of this boot.
    assert kinds(after.process("temp", 35, UNSET + 700)) == []
    assert after.limit.suppressed_count == 1


class FakeNet:
    """Stands in for alerts.net: WiFi connects, NTP replies, calls are recorded."""

    class NetworkError(Exception):
        pass

    def __init__(self):
        self.calls = []

    async def connect_wifi(self, config, progress=None):
        self.calls.append("wifi")

    async def sync_time(self, config, progress=None):
        self.calls.append("ntp")


class NetworkApp:
    def __init__(self, last_ntp):
        self.config = {"outbox": {"retry_min_s": 30, "retry_max_s": 300}, "ntp": {"host": "ntp.test", "resync_h": 24}}
        self.last_ntp = last_ntp
        self.network_failures = 0

    def round_alive(self, seconds):
        pass


def test_resync_after_clock_went_back():
    from alerts import delivery

    fake = FakeNet()
    saved = sys.modules.get("alerts.net")
    sys.modules["alerts.net"] = fake
    sys.modules["alerts"].net = fake
    try:
        with FixedClock(T0 + 3600):
            assert asyncio.run(delivery.network(NetworkApp(T0))) == 0
        assert fake.calls == ["wifi"], fake.calls
        with FixedClock(T0 - 86400):
            app = NetworkApp(T0)
            assert asyncio.run(delivery.network(app)) == 0
        # The last sync lies a day ahead of the clock: NTP is asked again.
        assert fake.calls == ["wifi", "wifi", "ntp"], fake.calls
        assert app.last_ntp == T0 - 86400
    finally:
        if saved is None:
            sys.modules.pop("alerts.net", None)
            if hasattr(sys.modules["alerts"], "net"):
                delattr(sys.modules["alerts"], "net")
        else:
            sys.modules["alerts.net"] = saved
            sys.modules["alerts"].net = saved


def test_new_alert_waits_for_network_back_off():
    from alerts import delivery

    directory = fresh_directory("alerts-unset-clock-test")
    calls = []

    async def network(app):
        calls.append(clock.now())
        return 300

    saved = delivery.network
    delivery.network = network
    try:
        outbox, name = outbox_with_retry(directory, T0 + 200)
        app = RoundApp(outbox)
        with FixedClock(UNSET):
            assert asyncio.run(delivery.deliver(app)) == 300
        # New alerts 10 s apart wake the sender within the 300 s back-off: no new network round.
        for index in range(1, 6):
            outbox.put({"kind": "alert", "rule": "hot", "value": index}, UNSET)
            with FixedClock(UNSET + 10 * index):
                assert asyncio.run(delivery.deliver(app)) == 300 - 10 * index
        assert calls == [UNSET]
        # Once it has passed, the next round tries again.
        with FixedClock(UNSET + 300):
            asyncio.run(delivery.deliver(app))
        assert calls == [UNSET, UNSET + 300]
    finally:
        delivery.network = saved
        remove_tree(directory)
