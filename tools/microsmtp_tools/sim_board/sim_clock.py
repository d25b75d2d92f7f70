"""Simulated time for the virtual board: seconds since 1970, accelerated by ``speed``.

Both the board and the host compute it from the shared wall clock:
``start_epoch + (time_ns() - wall_start_ns) * speed / 1e9``.
"""

import json
import time

with open("sim.json") as _file:
    _settings = json.loads(_file.read())

speed = _settings["speed"]
_start_epoch = _settings["start_epoch"]
_wall_start_ns = _settings["wall_start_ns"]
# An unset board clock starts at 2000-01-01 (ESP32) and counts from power-on.
_UNSET_EPOCH = 946684800
_boot_elapsed = None
_synced = False


def elapsed():
    """Simulated seconds since the simulation started."""
    return (time.time_ns() - _wall_start_ns) * speed / 1e9


def now():
    global _boot_elapsed
    if _synced:
        return _start_epoch + elapsed()
    if _boot_elapsed is None:
        _boot_elapsed = elapsed()
    return _UNSET_EPOCH + elapsed() - _boot_elapsed


def set_synced():
    global _synced
    _synced = True


def is_synced():
    return _synced


def settings():
    return _settings
