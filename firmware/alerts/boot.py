"""Start-up of the alert application: config.json, outbox recovery, rule state, sensors, CA roots.

alerts.app imports this module once at boot and unloads it before the sensor loop
starts. alerts.config, which checks config.json, is unloaded as soon as the check is
done, so only the plain dict it returned stays on the heap.
"""

from . import log
from .app import _DELIVERY_MODULES, App, unload


def start(config_path):
    """Load config.json, set up the App and return it, or None when config.json is invalid."""
    config = load_config(config_path)
    if config is None:
        _halt()
        return None
    from . import app as application

    application.deep_sleep_mode = config["deep_sleep"]["enabled"]
    application = None
    app = App(config)
    removed = app.outbox.recover()
    if removed:
        log.error("outbox: %d unreadable entries removed (counted as dropped)" % removed)
    if not config["deep_sleep"]["enabled"]:
        _forget_sleep_state()
        _load_rule_state(app)
    create_sensors(app)
    if check_sending(app) and not config["deep_sleep"]["enabled"]:
        pending = len(app.outbox.pending())
        if pending:
            log.info("outbox holds %d alert(s) from before the restart" % pending)
    # Rules, the LED and the watchdog took what they need from these sections.
    for key in ("rules", "alerts", "board"):
        del config[key]
    return app


def load_config(path):
    """Load and check config.json, log its summary and return the dict, or None if it is invalid."""
    from .config import ConfigError, describe, load

    try:
        config = load(path)
        log.info("starting: " + describe(config))
    except ConfigError as exc:
        log.error(str(exc))
        config = None
    ConfigError = describe = load = None
    unload(("alerts.config",))
    return config


def _forget_sleep_state():
    # alerts.restart takes a sleep state as a sign of deep-sleep mode when a start fails
    # before config.json is read, so one left from that mode must go.
    from . import sleepstate

    sleepstate.clear()
    sleepstate = None
    unload(("alerts.sleepstate",))


def _load_rule_state(app):
    from .rulestate import RuleState

    app.rule_state = RuleState(app.rules)
    if app.rule_state.load():
        log.info(
            "rule state restored from %s; active rules: %s"
            % (app.rule_state.path, ", ".join(app.rules.active()) or "none")
        )


def create_sensors(app):
    """Create each configured sensor's driver, or a stand-in that reports why it could not be created."""
    from .sensors import Broken, SensorError, create

    for spec in app.config["sensors"]:
        try:
            app.drivers[spec["name"]] = create(spec)
        except SensorError as exc:
            log.error("sensor %s unavailable: %s" % (spec["name"], exc))
            app.drivers[spec["name"]] = Broken(exc)


def check_sending(app):
    """Load the CA roots once to find out whether alerts can be sent, and log why not."""
    try:
        # Inside the try: alerts.sender itself may not fit beside the boot code.
        from .sender import SenderConfigError, load_ca_roots

        try:
            if app.config["smtp"]["security"] != "none":
                load_ca_roots(app.config)
            app.can_send = True
        except SenderConfigError as exc:
            log.error(str(exc))
            app.can_send = False
    except MemoryError:
        # Each delivery round loads the roots again and reports what is wrong with
        # them, so the sensors start instead of the board resetting at every boot.
        log.error("out of memory while loading the CA roots at boot; each delivery round tries again")
        app.can_send = True
    load_ca_roots = SenderConfigError = None
    unload(_DELIVERY_MODULES)
    return app.can_send


def _halt():
    """Show the error pattern and wait for a fixed config.json (the REPL stays usable via Ctrl-C)."""
    from . import board

    led = board.Led(None)
    led.pattern = board.ERROR
    log.error("configuration invalid; fix config.json and reset the board")
