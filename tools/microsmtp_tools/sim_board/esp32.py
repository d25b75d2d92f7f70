"""Stand-in for MicroPython's esp32 module: the MCU temperature and the ext0 deep-sleep wake.

wake_on_ext0() writes the pin and level to wake_pin.json in the board directory; while
the board sleeps, the simulation wakes it early when that pin's timeline in the
scenario (``pins``) reaches the level.
"""

WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True
_WAKE_FILE = "wake_pin.json"


def mcu_temperature():
    return 41


def wake_on_ext0(pin, level=WAKEUP_ALL_LOW):
    """Wake from deep sleep when pin reaches level; pin None disables the wake."""
    import json
    import os

    if pin is None:
        try:
            os.remove(_WAKE_FILE)
        except OSError:
            pass
        return
    number = pin.pin if hasattr(pin, "pin") else pin
    with open(_WAKE_FILE, "w") as file:
        file.write(json.dumps({"pin": str(number), "level": 1 if level else 0}))
    print("[esp32] wake on pin %s level %d" % (number, 1 if level else 0))
