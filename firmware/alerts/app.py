"""The alert application: sensor tasks, rules, the sender, LED and watchdog under asyncio.

``main()`` loads config.json and runs forever (or, in deep-sleep mode, once per wake).
Every alert goes to the outbox on flash before any attempt to send it.

Code needed only at boot (alerts.boot, alerts.config), only while sending
(alerts.delivery, which brings in alerts.net, alerts.sender, alerts.mailer and the SMTP
library) or only in deep-sleep mode (alerts.wake) is imported when needed, and the boot
and sending code is unloaded afterwards, so the sensor loop keeps only its own modules
on the heap.
"""

import gc
import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from . import clock, log
from .sensors import SensorError

# Maximum alerts kept in memory while the outbox cannot store them (flash full). Beyond it the oldest is lost.
_MAX_UNWRITTEN = 10
# Real seconds a sensor loop may go without progress before the watchdog stops feeding.
_SENSOR_SLACK_S = 30
# Real seconds the sender may go without progress beyond the time limit of its current
# step, for blocking DNS and TLS steps that no limit interrupts. A round reports progress
# before each step (WiFi and NTP attempt, token request, connect, message, QUIT). It
# passes that step's limit from config.json (round_alive()), so a slow round that keeps within
# its limits never stops the feeding, and a hung one does.
_SENDER_SLACK_S = 120
# Modules that a delivery round and the CA check at boot import. unload() drops them afterwards.
_DELIVERY_MODULES = (
    "alerts.delivery",
    "alerts.net",
    "alerts.sender",
    "alerts.mailer",
    "alerts.outbox_admin",
    "alerts.rules_restore",
    "microsmtp",
    "ca_roots",
)


def unload(names):
    """Remove modules, each with its submodules, from sys.modules and from their package.

    A collection then frees their code and data unless something still refers to them.
    The names they interned (qstrs on MicroPython) stay. A later import loads them again.
    """
    for name in list(sys.modules):
        for prefix in names:
            if name == prefix or name.startswith(prefix + "."):
                del sys.modules[name]
                package, _, attribute = name.rpartition(".")
                parent = sys.modules.get(package)
                if parent is not None and hasattr(parent, attribute):
                    delattr(parent, attribute)
                break
    gc.collect()


class App:
    def __init__(self, config):
        from . import board
        from .outbox import Outbox
        from .rules import Rules

        self.config = config
        outbox_config = config["outbox"]
        domain = message_id_domain(config["smtp"]["from"])
        self.outbox = Outbox(
            outbox_config["dir"],
            outbox_config["max_entries"],
            outbox_config["max_aside"],
            domain,
            outbox_config["retry_max_s"],
        )
        self.rules = Rules(config)
        board_config = config["board"]
        self.led = board.Led(board_config["led"], board_config["led_active_high"])
        self.watchdog = board.Watchdog(board_config["watchdog_ms"])
        self.wake = asyncio.Event()
        self.drivers = {}
        # False when the CA roots are missing: alerts are still queued, but nothing is sent.
        self.can_send = False
        # Failed SMTP sessions in a row, from which the sender computes its backoff.
        self.send_failures = 0
        # Set by alerts.boot in continuous mode only. Deep sleep keeps rule state in sleepstate.
        self.rule_state = None
        # Alerts that the outbox could not store yet (flash full), oldest first; see queue().
        self.unwritten = []
        self.last_ntp = None
        self.network_failures = 0
        # clock.now() until which a delivery round does not bring up the network again.
        self.network_retry_at = 0
        # True while run_delivery() has the delivery modules (and maybe the SMTP library) loaded.
        self.delivering = False
        # The watched task that runs delivery rounds: alerts.wake's in deep-sleep mode.
        self._round_task = "wake" if config.get("deep_sleep", {}).get("enabled") else "sender"
        # An hourly heap report waits until no round runs, so it measures the sensor loop alone.
        self._heap_report_due = False
        self._tasks = []

    # -- sending ------------------------------------------------------------------------

    def round_alive(self, seconds):
        """Report progress of a delivery round; the next step may take seconds real seconds."""
        self.watchdog.alive(self._round_task, seconds + _SENDER_SLACK_S)

    async def run_delivery(self, step):
        """Run alerts.delivery's network() or deliver() for this app, then unload what it imported."""
        self.delivering = True
        try:
            from . import delivery

            return await getattr(delivery, step)(self)
        except MemoryError:
            # A reset would not make the heap larger, and the same round would run out
            # again after it. The alerts stay queued, and the next round starts after a
            # backoff from a heap without the delivery modules.
            delivery = None
            unload(_DELIVERY_MODULES)
            from .outbox import backoff, random_fraction

            self.send_failures += 1
            outbox = self.config["outbox"]
            delay = backoff(self.send_failures, outbox["retry_min_s"], outbox["retry_max_s"], random_fraction())
            log.error("out of memory in a delivery round (%d bytes free); retry in %d s" % (log.free_bytes(), delay))
            return delay
        finally:
            delivery = None
            unload(_DELIVERY_MODULES)
            self.delivering = False

    # -- alerts -------------------------------------------------------------------------

    def queue(self, records):
        """Put records into the outbox, after any that an earlier write could not store.

        A record that the outbox cannot write (flash full) stays in memory and is written
        at a later call, and the tick task calls at least once a minute. A write error
        never ends the sensor task. At most _MAX_UNWRITTEN records wait in memory, and
        beyond that the oldest is logged with its values as lost.
        """
        from .outbox import OutboxError

        timeline = clock.timeline_tag()
        for record in records:
            if timeline is not None:
                # Dated by correct_times() once NTP has replied.
                record["timeline"] = timeline
        held = bool(self.unwritten)
        unwritten = self.unwritten
        unwritten.extend(records)
        written = False
        try:
            while unwritten:
                record = unwritten[0]
                try:
                    name = self._put(record)
                except (OutboxError, MemoryError) as exc:
                    if not held:
                        log.error(
                            "alert %s %s kept in memory until the outbox can store it: %s"
                            % (record["kind"], record.get("rule") or record.get("sensor"), exc)
                        )
                    # The rest wait too, in their order.
                    break
                # At once, before anything that may raise: an alert left in the list
                # after its write would be written again, with a second Message-ID.
                unwritten.pop(0)
                written = True
                log.info(
                    "queued %s %s %s value=%s as %s"
                    % (
                        record["kind"],
                        record.get("rule") or "-",
                        record.get("sensor") or "-",
                        record.get("value"),
                        name,
                    )
                )
            while len(unwritten) > _MAX_UNWRITTEN:
                record = unwritten.pop(0)
                log.error(
                    "alert lost, the outbox could not store it: %s %s value=%s time=%s"
                    % (
                        record["kind"],
                        record.get("rule") or record.get("sensor"),
                        record.get("value"),
                        record.get("time"),
                    )
                )
        finally:
            if written:
                self.wake.set()
        # After the outbox: a reset in between repeats an alert rather than losing it.
        # While an alert waits in memory, save_rule_state() saves nothing, so a reset
        # makes the rules raise it again.
        if not unwritten:
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
        """Save the rule state, unless an alert the rules raised waits in memory (see queue())."""
        if self.rule_state is None or self.unwritten:
            # The saved state would mark the alert as raised, and a reset would lose it.
            return
        try:
            self.rule_state.save()
        except OSError as exc:
            log.error("rule state not saved to %s (%s); a reset may repeat open alerts" % (self.rule_state.path, exc))

    def update_led(self):
        from . import board

        if not self.can_send:
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
            try:
                await self.read_sensor(name)
            except Exception as exc:
                # Lack of heap, or a fault in the rules: the next reading must still come,
                # or this sensor's alerts would stop without a word.
                _task_failed("reading of sensor %s" % name, exc)
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
        ticks = 0
        while True:
            try:
                self.queue(self.rules.tick(clock.now()))
            except Exception as exc:
                _task_failed("rule timer tick", exc)
            if ticks % 60 == 0:
                self._heap_report_due = True
            if self._heap_report_due and not self.delivering:
                self._heap_report_due = False
                _log_heap()
            if ticks == _STABLE_S // 60:
                clear_failed_starts()
            ticks += 1
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

    async def sender_task(self, delay=None):
        """Run delivery rounds; delay is what the boot network step returned (None: it succeeded or did not run)."""
        # pending() covers the alerts queued before this task started, so an earlier wake is stale.
        self.wake.clear()
        if delay is None and self.outbox.pending():
            delay = 0
        while True:
            try:
                delay = await self._sender_step(delay)
            except MemoryError:
                # Right after a round that ran out of memory, even the wait can find no
                # heap (asyncio loads wait_for on first use), so a plain sleep replaces it
                # and a round follows. The alerts stay queued.
                gc.collect()
                delay = self.config["outbox"]["retry_min_s"]
                log.error("out of memory in the sender (%d bytes free); retry in %d s" % (log.free_bytes(), delay))
                self.watchdog.alive("sender", _SENDER_SLACK_S + clock.real_seconds(delay))
                await clock.sleep(delay)
                delay = 0

    async def _sender_step(self, delay):
        """Wait for the delay or a new alert, then run a delivery round if one is due; return the next delay."""
        if delay is None:
            # Waiting for the next alert may last any time, and a wait cannot hang.
            self.watchdog.forget("sender")
        else:
            self.watchdog.alive("sender", _SENDER_SLACK_S + clock.real_seconds(delay))
        if delay is None or delay > 0:
            await self._wait_wake(delay)
        self.watchdog.alive("sender", _SENDER_SLACK_S)
        if not self.outbox.pending():
            if clock.is_set():
                return None
            # Nothing to send, but alert times and rule intervals need the real clock, so
            # NTP is tried again on the network back-off until it replies.
            return await self.run_delivery("network") or None
        delay = await self.run_delivery("deliver")
        self.update_led()
        gc.collect()
        return delay

    def start(self, coroutine):
        task = asyncio.create_task(coroutine)
        self._tasks.append(task)
        return task

    async def run(self):
        self.update_led()
        # The watchdog is fed from here on, because the boot network step takes up to
        # wifi.retries x wifi.timeout_s while WiFi is down. That is often longer than the
        # watchdog timeout, and a board not fed meanwhile would be reset again and again
        # without ever reading a sensor.
        self.start(self.watchdog.run())
        # The sensors start before the boot network step, so a condition that begins and
        # ends while WiFi and NTP are still coming up is queued too, dated once NTP replies.
        for spec in self.config["sensors"]:
            self.start(self.sensor_task(spec))
        self.start(self.tick_task())
        start_complete()
        delay = None
        if not clock.is_set():
            self.watchdog.alive("sender", _SENDER_SLACK_S)
            # The back-off after a failure is kept: the sender tries again when it ends.
            delay = await self.run_delivery("network") or None
        self.start(self.led.run())
        if self.can_send:
            await self.sender_task(delay)
        else:
            self.watchdog.forget("sender")
            # Without CA roots nothing can be sent; alerts still reach the outbox.
            while True:
                await clock.sleep(3600)


def message_id_domain(sender):
    """Return the domain of the sender's address for Message-IDs, or "localhost" if it is not ASCII.

    A Message-ID takes only ASCII (RFC 5322), and a name such as "Ann <a@bücher.de>" or
    trailing blanks would otherwise end up in every ID and make every alert unsendable.
    """
    address = sender.strip()
    if address.endswith(">") and "<" in address:
        address = address[address.rfind("<") + 1 : -1]
    domain = address[address.rfind("@") + 1 :].strip()
    for char in domain:
        if not (char in ".-" or "0" <= char <= "9" or "a" <= char.lower() <= "z"):
            return "localhost"
    return domain or "localhost"


def _task_failed(what, exc):
    """Log the exception that one step of a sensor or timer task raised; the task goes on."""
    gc.collect()
    try:
        log.error(
            "%s failed (%s: %s, %d bytes free); the next one comes on time"
            % (what, type(exc).__name__, exc, log.free_bytes())
        )
    except MemoryError:
        log.error("%s failed for lack of heap" % what)


def _log_heap():
    """Log the heap in use after a collection (at boot, then hourly, outside delivery rounds), so a leak shows."""
    if hasattr(gc, "mem_alloc"):
        gc.collect()
        log.info("heap: %d bytes in use, %d free" % (gc.mem_alloc(), gc.mem_free()))


def main(config_path="config.json"):
    """Run the application; on an unexpected error, log it and reset the board after a delay.

    alerts.restart makes the delay grow with each failed start in a row, and clears the
    count once the sensor loop has run for 10 minutes (in deep-sleep mode, once a wake
    is complete).
    """
    try:
        # Inside the try: an error while setting up the outbox, the rule state, the
        # sensors or the CA roots is logged and resets the board like any other.
        app = _start(config_path)
        if app is None:
            return
        if app.config["deep_sleep"]["enabled"]:
            from .wake import run_once

            # The wake ends in board.deep_sleep(), which clears the count.
            asyncio.run(run_once(app))
        else:
            asyncio.run(app.run())
    except KeyboardInterrupt:
        log.info("stopped (KeyboardInterrupt)")
        raise
    except Exception as exc:
        # Drop the App first: the log line and the wait then find room on a short heap.
        app = None
        from . import restart

        restart.failed(exc, _running, deep_sleep_mode)


# True once the start is complete: a later failure is not one while starting.
_running = False
# alerts.restart's PATH, named here too so that clearing it loads that module only when
# there is a count to clear.
FAILED_STARTS = "failed_starts.txt"
# Clock seconds the sensor loop runs before the failed starts before it stop counting,
# so a board that fails soon after each start backs off too, with a flash write per
# failure rather than two.
_STABLE_S = 600
# config.json's deep_sleep.enabled, set by alerts.boot as soon as config.json is loaded
# (None before): after a failure, a board in deep-sleep mode waits out the back-off asleep.
deep_sleep_mode = None


def start_complete():
    """Mark the start as complete, so that a later failure is not one while starting, and unload alerts.restart."""
    global _running
    _running = True
    if "alerts.restart" in sys.modules:
        # This frees heap for the sensor loop. A later failure imports it again.
        unload(("alerts.restart",))


def clear_failed_starts():
    """Clear alerts.restart's count of failed starts in a row, if there is one."""
    import os

    try:
        os.stat(FAILED_STARTS)
    except OSError:
        return
    from . import restart

    restart.started()
    restart = None
    unload(("alerts.restart",))


def _start(config_path):
    """Set up the App with alerts.boot, unload the boot code and return the App (None if config.json is invalid)."""
    from . import boot

    app = boot.start(config_path)
    boot = None
    unload(("alerts.boot", "alerts.outbox_admin", "alerts.rules_restore"))
    return app
