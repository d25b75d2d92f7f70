"""The watchdog allowance of a delivery round follows config.json: a round that keeps
within its configured limits (wifi.timeout_s, wifi.retries, smtp.timeout_s, many
messages) never stops the feeding, and a step that hangs still does."""

import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from alerts import board, clock, net
from alerts.app import App
from alerts.outbox import Outbox
from test_alerts_delivery import alert_record, sender_config

from helpers import fresh_directory, remove_tree
from microsmtp.client import SMTP


class FakeTicks:
    """Replaces clock.ticks_ms() with a time that only the test advances; checks the watchdog."""

    def __init__(self, watchdog):
        self.ms = 0
        self.watchdog = watchdog
        self.stuck = []

    def advance(self, seconds):
        self.ms += int(seconds * 1000)
        stuck = self.watchdog.healthy()
        if stuck is not None:
            self.stuck.append((stuck, self.ms))

    def __enter__(self):
        self.saved = clock.ticks_ms, clock.ticks_diff
        clock.ticks_ms = lambda: self.ms
        clock.ticks_diff = lambda end, start: end - start
        return self

    def __exit__(self, *args):
        clock.ticks_ms, clock.ticks_diff = self.saved


class RoundApp:
    """The App attributes App.round_alive() reads, with a watchdog that has no hardware timer."""

    def __init__(self, config):
        self.config = config
        self.watchdog = board.Watchdog(0)
        self._round_task = "sender"

    def round_alive(self, seconds):
        App.round_alive(self, seconds)


class Station:
    """A WLAN station that never connects and reports no failed status."""

    def isconnected(self):
        return False

    def active(self, value=None):
        return True

    def connect(self, ssid, password):
        pass

    def status(self):
        return 1001

    def disconnect(self):
        pass


class FakeNetwork:
    STA_IF = 0

    def WLAN(self, interface):
        return Station()


class FakeAsyncio:
    """Stands in for asyncio in alerts.net: each sleep advances the fake ticks."""

    def __init__(self, ticks):
        self.ticks = ticks

    async def sleep(self, seconds):
        self.ticks.advance(seconds)


def slow_config():
    config = sender_config()
    # The largest WiFi wait config.json allows, several times over.
    config["wifi"]["timeout_s"] = 300
    config["wifi"]["retries"] = 3
    config["smtp"]["timeout_s"] = 600
    return config


def test_slow_wifi_round_keeps_watchdog_fed():
    config = slow_config()
    app = RoundApp(config)
    saved_network = sys.modules.get("network")
    saved_asyncio = net.asyncio
    sys.modules["network"] = FakeNetwork()
    net._wlan = None
    with FakeTicks(app.watchdog) as ticks:
        # The sender reported progress just before the round, as App._sender_step() does.
        app.watchdog.alive("sender", 120)
        net.asyncio = FakeAsyncio(ticks)
        try:
            asyncio.run(net.connect_wifi(config, app.round_alive))
            raise AssertionError("the station connected")
        except net.NetworkError:
            pass
        finally:
            net.asyncio = saved_asyncio
            net._wlan = None
            if saved_network is None:
                sys.modules.pop("network", None)
            else:
                sys.modules["network"] = saved_network
        # 3 x 300 s of WiFi waits and the pauses between them never looked like a hang.
        assert ticks.ms >= 900 * 1000, ticks.ms
        assert ticks.stuck == [], ticks.stuck
        # A step that stops reporting is still caught once its allowance has passed.
        ticks.advance(300 + 10 + 120 + 1)
        assert ticks.stuck and ticks.stuck[-1][0] == "sender", ticks.stuck


def test_long_smtp_session_keeps_watchdog_fed():
    from alerts.sender import Sender

    config = slow_config()
    app = RoundApp(config)
    directory = fresh_directory("alerts-watchdog-test")
    outbox = Outbox(directory)
    outbox.recover()
    for _ in range(5):
        outbox.put(alert_record(), clock.now())
    sent = []

    class Result:
        reply = None
        refused = {}

    class Session:
        usable = True

    with FakeTicks(app.watchdog) as ticks:

        async def connect(smtp):
            # DNS, TLS and AUTH within smtp.timeout_s.
            ticks.advance(590)
            smtp.session = Session()

        async def send_message(smtp, message):
            # Each message within smtp.timeout_s of its own.
            ticks.advance(590)
            sent.append(message.message_id)
            return Result()

        async def closed(smtp):
            ticks.advance(5)

        replaced = {}
        methods = {"connect": connect, "send_message": send_message, "close": closed, "quit": closed}
        for name in methods:
            replaced[name] = getattr(SMTP, name)
            setattr(SMTP, name, methods[name])
        try:
            app.watchdog.alive("sender", 120)
            sender = Sender(config, outbox, [b"0"])
            sender.progress = app.round_alive
            assert asyncio.run(sender.run_session()) is None
        finally:
            for name in replaced:
                setattr(SMTP, name, replaced[name])
            remove_tree(directory)
    assert len(sent) == 5
    # About 1 hour in one session, and no step looked hung.
    assert ticks.ms > 3000 * 1000, ticks.ms
    assert ticks.stuck == [], ticks.stuck


class IdleSender:
    """The App attributes App._sender_step() reads: an empty outbox, a set clock, a long quiet spell."""

    def __init__(self, ticks, watchdog):
        self.ticks = ticks
        self.watchdog = watchdog
        self.outbox = self

    def pending(self):
        return []

    async def _wait_wake(self, seconds):
        # No alert for two days.
        self.ticks.advance(2 * 86400)


def test_quiet_spell_without_alerts_keeps_watchdog_fed():
    watchdog = board.Watchdog(0)
    with FakeTicks(watchdog) as ticks:
        watchdog.alive("sender", 120)
        state = IdleSender(ticks, watchdog)
        assert asyncio.run(App._sender_step(state, None)) is None
        assert ticks.stuck == [], ticks.stuck
