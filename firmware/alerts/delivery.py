"""One delivery round: WiFi, the clock from NTP, then one SMTP session over the outbox.

alerts.app imports this module for a round and unloads it afterwards, together with
what it imports (alerts.net, alerts.sender, alerts.mailer, the SMTP library and the CA
roots), so the sensor loop does not keep the SMTP client on the heap.
"""

from . import clock, log
from .app import unload


async def network(app):
    """Bring up WiFi and the clock; return seconds to wait on failure, or 0."""
    from . import net
    from .outbox import backoff, random_fraction

    # An estimate after deep sleep is good enough for rules but not for certificate dates.
    # A last sync ahead of the clock means the clock went back since: sync again.
    need_ntp = (
        not clock.is_set()
        or clock.is_estimate()
        or app.last_ntp is None
        or not 0 <= clock.now() - app.last_ntp < app.config["ntp"]["resync_h"] * 3600
    )
    try:
        await net.connect_wifi(app.config, app.round_alive)
        if need_ntp:
            corrected = clock.corrected()
            try:
                await net.sync_time(app.config, app.round_alive)
            except net.NetworkError:
                if not clock.is_set() or clock.is_estimate():
                    raise
                # A resync that fails leaves a clock that NTP set before, which is
                # still good for certificate dates, so the alerts go out anyway.
                log.warning("NTP resync with %s failed; keeping the clock NTP set before" % app.config["ntp"]["host"])
            else:
                app.last_ntp = clock.now()
                if clock.corrected() and not corrected:
                    correct_times(app)
    except net.NetworkError as exc:
        app.network_failures += 1
        outbox = app.config["outbox"]
        delay = backoff(app.network_failures, outbox["retry_min_s"], outbox["retry_max_s"], random_fraction())
        log.error("%s; retry in %d s" % (exc, delay))
        return delay
    app.network_failures = 0
    return 0


def correct_times(app):
    """Date the rule state and the alerts recorded before NTP first set the clock."""
    from .outbox import OutboxError
    from .rules_restore import correct_times as correct_record

    app.rules.convert_times(clock.real_time)
    app.save_rule_state()
    try:
        count = app.outbox.rewrite(lambda entry: correct_record(entry["alert"]))
    except OutboxError as exc:
        # The mailer dates them again at each attempt in this boot.
        log.error("alerts queued before NTP keep their unset time on flash: %s" % exc)
        return
    if count:
        log.info("clock set: dated %d alert(s) queued before NTP" % count)


async def deliver(app):
    """Bring up the network and send what is due.

    Returns the seconds until the next round, or None when the outbox is empty.
    """
    # A round woken by a new alert during a backoff has nothing to send yet, so it returns
    # before bringing up WiFi and before importing the SMTP library only to unload it again.
    now = clock.now()
    wait = app.outbox.due(now)
    if wait is None or wait > 0:
        return wait
    # A new alert during the network back-off waits for it too, instead of bringing up
    # WiFi and NTP again, because outbox entries do not carry the network back-off. While
    # the clock is not set, they are all due. A back-off further ahead than retry_max_s is
    # from before the clock went back.
    wait = app.network_retry_at - now
    if 0 < wait <= app.config["outbox"]["retry_max_s"]:
        return wait
    delay = await network(app)
    if delay:
        app.network_retry_at = clock.now() + delay
        return delay
    # The SMTP client is imported only once the network is up, so a round that fails at
    # WiFi or NTP never loads it, and alerts.net is dropped first to make room for it.
    unload(("alerts.net",))
    from microsmtp.errors import SMTPError

    from .sender import Sender, SenderConfigError, load_ca_roots

    retry_max = app.config["outbox"]["retry_max_s"]
    try:
        roots = load_ca_roots(app.config) if app.config["smtp"]["security"] != "none" else None
    except SenderConfigError as exc:
        log.error("%s; retry in %d s" % (exc, retry_max))
        return retry_max
    sender = Sender(app.config, app.outbox, roots)
    sender.failures = app.send_failures
    sender.progress = app.round_alive
    try:
        return await sender.run_session()
    except SMTPError as exc:
        # The SMTP constructor rejects options (ConfigError) before connecting.
        log.error("sending impossible: %s; check config.json" % exc)
        return retry_max
    finally:
        app.send_failures = sender.failures
