"""Stand-in for MicroPython's network module: a WLAN station that joins the simulated network."""

import sim_clock

STA_IF = 0
AP_IF = 1
# Status values of the ESP32 port.
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_WRONG_PASSWORD = 202
STAT_NO_AP_FOUND = 201
STAT_GOT_IP = 1010


def _wifi_down():
    """Return True inside a ``wifi_down`` period of the scenario: no access point in range."""
    elapsed = sim_clock.elapsed()
    for start, end in sim_clock.settings().get("wifi_down") or ():
        if start <= elapsed < end:
            return True
    return False


class WLAN:
    _instances = {}

    def __new__(cls, interface=STA_IF):
        # Like the real module, every WLAN(STA_IF) is the same interface.
        if interface not in cls._instances:
            instance = object.__new__(cls)
            instance._interface = interface
            instance._active = False
            instance._status = STAT_IDLE
            instance._connect_at = None
            cls._instances[interface] = instance
        return cls._instances[interface]

    def __init__(self, interface=STA_IF):
        pass

    def active(self, value=None):
        if value is None:
            return self._active
        self._active = bool(value)
        if not self._active:
            self._status = STAT_IDLE
        return None

    def connect(self, ssid=None, key=None, **kwargs):
        if not self._active:
            raise OSError("WiFi interface is not active; call active(True) first")
        wifi = sim_clock.settings().get("wifi") or {}
        if _wifi_down() or ssid != wifi.get("ssid"):
            self._status = STAT_NO_AP_FOUND
        elif (key or "") != wifi.get("password", ""):
            self._status = STAT_WRONG_PASSWORD
        else:
            self._status = STAT_CONNECTING
            # Association takes about a second of real time.
            import time

            self._connect_at = time.ticks_add(time.ticks_ms(), int(wifi.get("connect_ms", 300)))

    def _update(self):
        import time

        if self._status == STAT_CONNECTING and time.ticks_diff(time.ticks_ms(), self._connect_at) >= 0:
            self._status = STAT_GOT_IP

    def status(self, param=None):
        self._update()
        if param == "rssi":
            return -55
        return self._status

    def isconnected(self):
        self._update()
        if self._status == STAT_GOT_IP and _wifi_down():
            # The access point went away: the link drops, as on a board.
            self._status = STAT_NO_AP_FOUND
        return self._active and self._status == STAT_GOT_IP

    def disconnect(self):
        self._status = STAT_IDLE

    def ifconfig(self, config=None):
        if self.isconnected():
            return ("10.0.0.23", "255.255.255.0", "10.0.0.1", "10.0.0.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def config(self, *args, **kwargs):
        if args == ("mac",):
            return b"\x02\x00\x00\x00\x00\x23"
        return None
