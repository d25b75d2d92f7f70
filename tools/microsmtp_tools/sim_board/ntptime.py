"""Stand-in for MicroPython's ntptime: settime() sets the simulated clock.

It fails with OSError(ETIMEDOUT), as the real module does when no reply arrives,
while WiFi is down or during an ``ntp_down`` period of the scenario.
"""

import network
import sim_clock

host = "pool.ntp.org"
timeout = 1


def time():
    return int(sim_clock.now())


def settime():
    if not network.WLAN(network.STA_IF).isconnected():
        raise OSError(110)
    elapsed = sim_clock.elapsed()
    for start, end in sim_clock.settings().get("ntp_down") or ():
        if start <= elapsed < end:
            raise OSError(110)
    sim_clock.set_synced()
