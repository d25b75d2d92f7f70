"""The alert application: sensor tasks, rules, the sender, LED and watchdog under asyncio.

``main()`` loads config.json and runs forever (or, in deep-sleep mode, once per wake).
Every alert goes to the outbox on flash before any attempt to send it.
"""

import gc

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from . import clock, log
from .sensors import SensorError

# Real seconds a sensor loop may go without progress before the watchdog stops feeding.
_SENSOR_SLACK_S = 30
# The sender may block in DNS and TLS steps; it reports progress around them.
_SENDER_SLACK_S = 120


class _Broken:
    """Stands in for a sensor whose driver could not be created, so failures are reported."""

    def __init__(self, error):
        self.error = error

    def read(self):
        raise SensorError(str(self.error))


class App:
    def __init__(self, config):
        from . import board
        from .outbox import Outbox
        from .rules import Rules

        self.config = config
        outbox_config = config["outbox"]
        sender_address = config["smtp"]["from"]
        domain = sender_address[sender_address.rfind("@") + 1 :].rstrip(">") or "localhost"
        self.outbox = Outbox(outbox_config["dir"], outbox_config["max_entries"], outbox_config["max_aside"], domain)
        removed = self.outbox.recover()
        if removed:
            log.error("outbox: %d unreadable entries removed (counted as dropped)" % removed)
        self.rules = Rules(config)
        board_config = config["board"]
        self.led = board.Led(board_config["led"], board_config["led_active_high"])
        self.watchdog = board.Watchdog(board_config["watchdog_ms"])
        self.wake = asyncio.Event()
        self.drivers = {}
        self.sender = None
        # Continuous mode only (see run()); deep sleep keeps rule state in sleepstate.
        self.rule_state = None
        self.last_ntp = None
        self.network_failures = 0
        self._tasks = []

    # -- setup --------------------------------------------------------------------------

    def create_sensors(self):
        from . import sensors

        for spec in self.config["sensors"]:
            try:
                self.drivers[spec["name"]] = sensors.create(spec)
            except SensorError as exc:
                log.error("sensor %s unavailable: %s" % (spec["name"], exc))
                self.drivers[spec["name"]] = _Broken(exc)

    def create_sender(self):
        # Import the SMTP client now, while the heap is not yet fragmented by the tasks.
        import microsmtp.client  # noqa: F401
        import microsmtp.message  # noqa: F401

        from .sender import Sender, SenderConfigError, load_ca_roots

        gc.collect()

        try:
            roots = load_ca_roots(self.config) if self.config["smtp"]["security"] != "none" else None
        except SenderConfigError as exc:
            log.error(str(exc))
            return None
        self.sender = Sender(self.config, self.outbox, roots)
        return self.sender

    # -- alerts -------------------------------------------------------------------------

    def queue(self, records):
        from .outbox import OutboxError

        timeline = clock.timeline_tag()
        for record in records:
            if timeline is not None:
                # Dated by correct_times() once NTP has replied.
                record["timeline"] = timeline
            try:
                name = self._put(record)
            except (OutboxError, MemoryError) as exc:
                log.error("alert %s %s lost: %s" % (record["kind"], record.get("rule") or record.get("sensor"), exc))
                continue
            log.info(
                "queued %s %s %s value=%s as %s"
                % (record["kind"], record.get("rule") or "-", record.get("sensor") or "-", record.get("value"), name)
            )
        if records:
            self.wake.set()
        # After the outbox: a reset in between repeats an alert rather than losing it.
        self.save_rule_state()
        self.update_led()

    def _put(self, record):
        # Listing the outbox and writing the entry allocate; after a fragmented heap
        # fails, one collection usually frees enough for a second attempt.
        try:
            return self.outbox.put(record, clock.now())
        except MemoryError:
            import gc

            gc.collect()
            return self.outbox.put(record, clock.now())

    def save_rule_state(self):
        if self.rule_state is None:
            return
        try:
            self.rule_state.save()
        except OSError as exc:
            log.error("rule state not saved to %s (%s); a reset may repeat open alerts" % (self.rule_state.path, exc))

    def update_led(self):
        from . import board

        if self.sender is None:
            self.led.pattern = board.ERROR
        elif self.rules.active():
            self.led.pattern = board.ALERT
        elif self.outbox.pending():
            self.led.pattern = board.QUEUED
        else:
            self.led.pattern = board.OK

    async def read_sensor(self, name):
        from .sensors import read

        try:
            value = await read(self.drivers[name])
            error = None
        except SensorError as exc:
            value = None
            error = exc
            log.warning("sensor %s read failed: %s" % (name, exc))
        self.queue(self.rules.process(name, value, clock.now(), error))
        return value

    # -- tasks --------------------------------------------------------------------------

    async def sensor_task(self, spec):
        name = spec["name"]
        driver = self.drivers[name]
        interval = spec["interval_s"]
        gap = clock.real_seconds(interval) + _SENSOR_SLACK_S
        while True:
            await self.read_sensor(name)
            self.watchdog.alive(name, gap)
            if hasattr(driver, "changed"):
                # Digital inputs: the interrupt sets .changed; look at it every 100 ms.
                waited = 0
                while waited < interval and not driver.changed:
                    await clock.sleep_real(0.1)
                    waited += 0.1 * clock.speed()
            else:
                await clock.sleep(interval)
            gc.collect()

    async def tick_task(self):
        while True:
            self.queue(self.rules.tick(clock.now()))
            self.watchdog.alive("ticker", clock.real_seconds(60) + _SENSOR_SLACK_S)
            await clock.sleep(60)

    async def _wait_wake(self, seconds):
        if seconds is None:
            await self.wake.wait()
        else:
            try:
                await asyncio.wait_for(self.wake.wait(), clock.real_seconds(seconds))
            except asyncio.TimeoutError:
                pass
        self.wake.clear()

    async def _network(self):
        """Bring up WiFi and the clock; return seconds to wait on failure, or 0."""
        from . import net
        from .outbox import backoff, random_fraction

        # An estimate after deep sleep is good enough for rules but not for certificate dates.
        need_ntp = (
            not clock.is_set()
            or clock.is_estimate()
            or self.last_ntp is None
            or (clock.now() - self.last_ntp >= self.config["ntp"]["resync_h"] * 3600)
        )
        try:
            await net.connect_wifi(self.config)
            if need_ntp:
                corrected = clock.corrected()
                await net.sync_time(self.config)
                self.last_ntp = clock.now()
                if clock.corrected() and not corrected:
                    self.correct_times()
        except net.NetworkError as exc:
            self.network_failures += 1
            outbox = self.config["outbox"]
            delay = backoff(self.network_failures, outbox["retry_min_s"], outbox["retry_max_s"], random_fraction())
            log.error("%s; retry in %d s" % (exc, delay))
            return delay
        self.network_failures = 0
        return 0

    def correct_times(self):
        """Date the rule state and the alerts recorded before NTP first set the clock."""
        from .outbox import OutboxError
        from .rules import correct_times

        self.rules.convert_times(clock.real_time)
        self.save_rule_state()
        try:
            count = self.outbox.rewrite(lambda entry: correct_times(entry["alert"]))
        except OutboxError as exc:
            # The mailer dates them again at each attempt in this boot.
            log.error("alerts queued before NTP keep their unset time on flash: %s" % exc)
            return
        if count:
            log.info("clock set: dated %d alert(s) queued before NTP" % count)

    async def sender_task(self):
        from microsmtp.errors import SMTPError

        delay = None if not self.outbox.pending() else 0
        while True:
            self.watchdog.alive("sender", _SENDER_SLACK_S + clock.real_seconds(delay or 0) + 3600 * (delay is None))
            if delay is None or delay > 0:
                await self._wait_wake(delay)
            self.watchdog.alive("sender", _SENDER_SLACK_S)
            if not self.outbox.pending():
                delay = None
                continue
            delay = await self._network()
            if delay:
                continue
            try:
                delay = await self.sender.run_session()
            except SMTPError as exc:
                # The SMTP constructor rejects options (ConfigError) before connecting.
                log.error("sending impossible: %s; check config.json" % exc)
                delay = self.config["outbox"]["retry_max_s"]
            self.update_led()
            gc.collect()

    def start(self, coroutine):
        task = asyncio.create_task(coroutine)
        self._tasks.append(task)
        return task

    async def run(self):
        from .rulestate import RuleState

        log.info("starting: " + describe(self.config))
        self.rule_state = RuleState(self.rules)
        if self.rule_state.load():
            log.info(
                "rule state restored from %s; active rules: %s"
                % (self.rule_state.path, ", ".join(self.rules.active()) or "none")
            )
        self.create_sensors()
        if self.create_sender() is not None:
            pending = len(self.outbox.pending())
            if pending:
                log.info("outbox holds %d alert(s) from before the restart" % pending)
        self.update_led()
        if not clock.is_set():
            await self._network()
        for spec in self.config["sensors"]:
            self.start(self.sensor_task(spec))
        self.start(self.tick_task())
        self.start(self.led.run())
        self.start(self.watchdog.run())
        if self.sender is not None:
            await self.sender_task()
        else:
            # Without CA roots nothing can be sent; alerts still reach the outbox.
            while True:
                await clock.sleep(3600)

    # -- deep sleep ---------------------------------------------------------------------

    async def run_once(self):
        """Wake, read each sensor once, decide, send or queue, then deep sleep."""
        from . import board, sleepstate

        state = sleepstate.load()
        if state.get("time") and state.get("slept"):
            clock.estimate(state["time"] + state["slept"])
        if state.get("rules"):
            self.rules.restore(state["rules"])
            log.info("woke from deep sleep; active rules: %s" % (", ".join(self.rules.active()) or "none"))
        self.last_ntp = state.get("ntp")
        self.network_failures = state.get("network_failures", 0)
        # The watchdog started in __init__ must be fed while this wake runs.
        self.watchdog.alive("wake", _SENDER_SLACK_S)
        self.start(self.watchdog.run())
        self.create_sensors()
        self.create_sender()
        if not clock.is_set():
            # First power-on: alert times need the clock.
            await self._network()
        for spec in self.config["sensors"]:
            await self.read_sensor(spec["name"])
        self.queue(self.rules.tick(clock.now()))
        self.watchdog.alive("wake", _SENDER_SLACK_S)
        wait = self.outbox.due(clock.now())
        if self.sender is not None and wait == 0:
            if await self._network() == 0:
                await self.sender.run_session()
        interval = self.config["deep_sleep"]["interval_s"]
        where = sleepstate.save(
            {
                "time": clock.now(),
                "slept": interval,
                "ntp": self.last_ntp,
                "network_failures": self.network_failures,
                "rules": self.rules.state(),
            }
        )
        self.arm_wake_pins()
        log.info(
            "deep sleep for %d s (%d alert(s) queued, state in %s)" % (interval, len(self.outbox.pending()), where)
        )
        board.deep_sleep(interval)

    def arm_wake_pins(self):
        """Let a digital input end the deep sleep where the port supports it (one pin)."""
        armed = None
        for name in self.drivers:
            driver = self.drivers[name]
            if not hasattr(driver, "arm_wake"):
                continue
            if armed is not None:
                log.warning("sensor %s is read only at wake: the wake pin is taken by %s" % (name, armed))
                continue
            method = driver.arm_wake()
            if method is None:
                log.info("sensor %s is read only at wake: this port has no pin wake from deep sleep" % name)
                return
            armed = name
            log.info("sensor %s wakes the board on a change (%s)" % (name, method))


def describe(config):
    from .config import describe as describe_config

    return describe_config(config)


def main(config_path="config.json"):
    """Run the application; on an unexpected error, log it and reset the board after 10 s."""
    from . import board
    from .config import ConfigError, load

    try:
        config = load(config_path)
    except ConfigError as exc:
        log.error(str(exc))
        _halt(board)
        return
    app = App(config)
    try:
        if config["deep_sleep"]["enabled"]:
            asyncio.run(app.run_once())
        else:
            asyncio.run(app.run())
    except KeyboardInterrupt:
        log.info("stopped (KeyboardInterrupt)")
        raise
    except Exception as exc:
        import sys

        log.error("unexpected %s: %s; resetting in 10 s" % (type(exc).__name__, exc))
        if hasattr(sys, "print_exception"):
            sys.print_exception(exc)
        import time

        time.sleep(10 / clock.speed())
        board.reset()


def _halt(board):
    """Show the error pattern and wait for a fixed config.json (the REPL stays usable via Ctrl-C)."""
    led = board.Led(None)
    led.pattern = board.ERROR
    log.error("configuration invalid; fix config.json and reset the board")
