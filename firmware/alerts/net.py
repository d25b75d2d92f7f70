"""WiFi bring-up with a time limit and retries, then NTP time before any TLS."""

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from . import clock, log


class NetworkError(Exception):
    """WiFi did not connect, or the clock could not be set; ``transient`` is always True."""

    transient = True


_wlan = None


def wlan():
    global _wlan
    if _wlan is None:
        import network

        _wlan = network.WLAN(network.STA_IF)
    return _wlan


_FAILED_STATUSES = (
    ("STAT_NO_AP_FOUND", "no access point found"),
    ("STAT_WRONG_PASSWORD", "wrong password"),
    ("STAT_CONNECT_FAIL", "connection failed"),
)


def _failed_statuses():
    """Return {status value: description} of the port's WLAN statuses that end an attempt for good."""
    import network

    return dict((getattr(network, name), text) for name, text in _FAILED_STATUSES if hasattr(network, name))


def is_connected():
    return wlan().isconnected()


def _no_progress(seconds):
    pass


async def connect_wifi(config, progress=_no_progress):
    """Connect to the configured network; raise NetworkError after all retries failed.

    progress(seconds) is called before each attempt with the real seconds the attempt
    and the pause after it may take, for the watchdog (alerts.app.App.round_alive()).
    """
    wifi = config["wifi"]
    station = wlan()
    if station.isconnected():
        return station.ifconfig()[0]
    station.active(True)
    status = None
    for attempt in range(1, wifi["retries"] + 1):
        progress(wifi["timeout_s"] + min(2 * attempt, 10))
        try:
            station.connect(wifi["ssid"], wifi["password"])
        except OSError as exc:
            status = "connect() failed: %s" % exc
        else:
            waited = 0
            failed = _failed_statuses()
            while waited < wifi["timeout_s"] and not station.isconnected():
                if station.status() in failed:
                    # No such network or a wrong password: waiting longer cannot help.
                    break
                # Real time, not clock time: radio timing does not speed up under the simulation.
                await asyncio.sleep(0.25)
                waited += 0.25
            if station.isconnected():
                address = station.ifconfig()[0]
                log.info("WiFi connected to %s as %s (attempt %d)" % (wifi["ssid"], address, attempt))
                return address
            code = station.status()
            if code in failed:
                status = "%s (status %s) after %g s" % (failed[code], code, waited)
            else:
                status = "status %s after %g s" % (code, waited)
        log.warning("WiFi %s not connected (attempt %d of %d): %s" % (wifi["ssid"], attempt, wifi["retries"], status))
        try:
            station.disconnect()
        except (AttributeError, OSError):
            pass
        if attempt < wifi["retries"]:
            await asyncio.sleep(min(2 * attempt, 10))
    raise NetworkError(
        "WiFi %s did not connect after %d attempts (%s); check wifi.ssid, wifi.password and the signal"
        % (wifi["ssid"], wifi["retries"], status)
    )


# Real seconds of one NTP attempt: ntptime's 1 s socket timeout and the 1 s pause after a failure.
_NTP_ATTEMPT_S = 2


async def sync_time(config, progress=_no_progress):
    """Set the clock from NTP; raise NetworkError saying the clock is not set if every try fails.

    progress is called before each attempt, as in connect_wifi().
    """
    import ntptime

    ntp = config["ntp"]
    ntptime.host = ntp["host"]
    problem = None
    for attempt in range(1, ntp["retries"] + 1):
        progress(_NTP_ATTEMPT_S)
        before = clock.reference()
        try:
            # Blocking UDP exchange with ntptime's own 1 s socket timeout.
            ntptime.settime()
        except (OSError, OverflowError, IndexError) as exc:
            problem = "%s: %s" % (type(exc).__name__, exc)
            log.warning("NTP %s failed (attempt %d of %d): %s" % (ntp["host"], attempt, ntp["retries"], problem))
            await asyncio.sleep(1)
            continue
        clock.set_synced(before)
        if clock.is_set():
            log.info("clock set from NTP %s: %s" % (ntp["host"], clock.format_utc(clock.now())))
            return
        problem = "NTP returned a time before %d" % clock.MIN_YEAR
    raise NetworkError(
        "clock not set: NTP %s failed (%s); TLS certificates cannot be checked until the time is set, "
        "alerts stay queued" % (ntp["host"], problem)
    )


async def bring_up(config, need_time=True):
    """Connect WiFi and, when needed, set the clock; raise NetworkError naming the failed step."""
    await connect_wifi(config)
    if need_time and not clock.is_set():
        await sync_time(config)
