"""Stand-in for MicroPython's esp32 module: the MCU temperature and the ext0 deep-sleep wake."""

WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True

# mcu_temperature() result, or an exception to raise.
TEMPERATURE = [41]
# (pin, level) of the last wake_on_ext0() call.
EXT0 = []


def mcu_temperature():
    value = TEMPERATURE[0]
    if isinstance(value, Exception):
        raise value
    return value


def wake_on_ext0(pin, level):
    EXT0[:] = [pin, level]
