"""Deep-sleep mode: wake, read each sensor once, decide, send or queue, then sleep again.

alerts.app imports this module only when deep_sleep.enabled is set.
"""

import json

from . import clock, log

# Real seconds one wake may go without progress before the watchdog stops feeding. The
# wake may block in DNS and TLS steps while it sends.
_WAKE_SLACK_S = 120


async def run_once(app):
    """Wake, read each sensor once, decide, send or queue, then deep sleep."""
    from . import board, sleepstate

    state = sleepstate.load()
    if state.get("time"):
        # After a reset during a send, slept is 0: the saved time is the best guess.
        clock.estimate(state["time"] + state.get("slept", 0))
    if state.get("rules"):
        if app.rules.restore(state["rules"]):
            # The state saved before a send has slept 0: this start followed a reset, not a wake.
            start = "started again after a reset during a send" if state.get("slept") == 0 else "woke from deep sleep"
            log.info("%s; active rules: %s" % (start, ", ".join(app.rules.active()) or "none"))
        else:
            log.error("the saved sleep state is not one this firmware can read; starting with no open alerts")
    app.last_ntp = state.get("ntp")
    app.network_failures = state.get("network_failures", 0)
    app.rule_state = RulesInSleepState(app)
    # The watchdog started in App.__init__ must be fed while this wake runs.
    app.watchdog.alive("wake", _WAKE_SLACK_S)
    app.start(app.watchdog.run())
    if not clock.is_set():
        # First power-on: alert times need the clock.
        await app.run_delivery("network")
    for spec in app.config["sensors"]:
        await app.read_sensor(spec["name"])
    app.queue(app.rules.tick(clock.now()))
    app.watchdog.alive("wake", _WAKE_SLACK_S)
    wait = app.outbox.due(clock.now())
    if app.can_send and wait == 0:
        await app.run_delivery("deliver")
        save_oauth2_state(app.config["smtp"].get("oauth2"))
    interval = app.config["deep_sleep"]["interval_s"]
    try:
        where = save_state(app, interval)
    except OSError as exc:
        # No RTC memory and a full flash: a reset now would fail the same way at every
        # wake. The next wake starts from the state saved before, if any.
        from .outbox_admin import write_problem

        where = None
        log.error("sleep state not saved to %s: %s" % (sleepstate.PATH, write_problem(exc)))
    arm_wake_pins(app)
    where = "state in " + where if where else "state not saved"
    log.info("deep sleep for %d s (%d alert(s) queued, %s)" % (interval, len(app.outbox.pending()), where))
    board.deep_sleep(interval)


def save_oauth2_state(settings):
    """Write oauth2_token.json now if the round left it out of date.

    That happens when the server rejected an access token that is kept there. Only a
    mark in RAM records it, and deep sleep loses RAM, so the next wake would try the
    rejected token again.
    """
    cache = settings.get("cache") if settings else None
    if not cache or not cache.get("unsaved"):
        return
    from . import oauth2
    from .app import unload

    try:
        oauth2.save_pending(settings)
    except MemoryError:
        # The next wake tries the rejected token once, then requests a new one.
        log.warning("OAuth2: no heap left to remove the rejected access token from %s" % oauth2.STATE_PATH)
    finally:
        oauth2 = None
        unload(("alerts.oauth2",))


def save_state(app, slept):
    """Save what the next wake needs; slept is the time until it, 0 before a send.

    While an alert waits in memory (App.unwritten, the outbox could not store it), the
    rule state is left out: it would mark the alert as raised, and deep sleep loses RAM.
    The next wake then starts with no open alerts, and the rule raises it again.
    """
    from . import sleepstate

    state = {
        "time": clock.now(),
        "slept": slept,
        "ntp": app.last_ntp,
        "network_failures": app.network_failures,
    }
    if app.unwritten:
        log.error(
            "rule state not saved: %d alert(s) the outbox could not store are lost at deep sleep;"
            " the rules raise them again at the next wake" % len(app.unwritten)
        )
    else:
        state["rules"] = app.rules.state()
    return sleepstate.save(state)


class RulesInSleepState:
    """Rule-state store of deep-sleep mode, which saves the sleep state when a rule decides.

    App.queue() saves the rule state right after the outbox took the alerts. A reset
    during the send that follows (the watchdog, a crash) then does not queue them again
    at the next wake, because the rules know they were raised.
    """

    path = "the sleep state"

    def __init__(self, app):
        self.app = app
        self._saved = json.dumps(app.rules.durable_state())

    def save(self):
        # durable_state() leaves out the last readings, so a wake without a decision
        # writes nothing (the file is on flash where the port has no RTC memory).
        text = json.dumps(self.app.rules.durable_state())
        if text != self._saved:
            save_state(self.app, 0)
            self._saved = text


def arm_wake_pins(app):
    """Let a digital input end the deep sleep where the port supports it (one pin)."""
    armed = None
    for name in app.drivers:
        driver = app.drivers[name]
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
