"""Sensor drivers with one interface: ``read()`` returns a number or raises SensorError.

``create()`` imports only the driver module of the sensor's type (sensor_pins,
sensor_dht, sensor_ds18b20, sensor_simulated), and a driver imports its hardware
modules (machine, dht, onewire, ds18x20, esp32) only when created, so a board loads
only the code its config uses. The loop in app.py turns a SensorError into a failed
reading for the rules; nothing here raises anything else for a read that fails.
"""


class SensorError(Exception):
    """A sensor could not be read (no reply, checksum error, missing hardware)."""


class Broken:
    """Stands in for a sensor whose driver could not be created, so every read reports why."""

    def __init__(self, error):
        self.error = error

    def read(self):
        raise SensorError(str(self.error))


def _driver_class(kind):
    """Import the driver module for a sensor type and return its class."""
    if kind == "simulated":
        from .sensor_simulated import Simulated

        return Simulated
    if kind in ("dht11", "dht22"):
        from .sensor_dht import Dht

        return Dht
    if kind == "ds18b20":
        from .sensor_ds18b20 import Ds18b20

        return Ds18b20
    from . import sensor_pins

    if kind == "mcu_temperature":
        return sensor_pins.McuTemperature
    if kind == "adc":
        return sensor_pins.AnalogPin
    return sensor_pins.DigitalPin


def create(spec):
    """Return the driver for a validated sensor spec; raise SensorError if the hardware is missing."""
    try:
        return _driver_class(spec["type"])(spec)
    except ImportError as exc:
        raise SensorError(
            "sensor %s: this firmware lacks a module for type %s (%s)" % (spec["name"], spec["type"], exc)
        ) from None
    except (OSError, ValueError) as exc:
        raise SensorError("sensor %s: cannot set up pin %s (%s)" % (spec["name"], spec.get("pin"), exc)) from None


async def read(driver):
    """Read one value from any driver; raise SensorError on every failure."""
    try:
        if hasattr(driver, "read_async"):
            return await driver.read_async()
        return driver.read()
    except SensorError:
        raise
    except Exception as exc:
        # A driver bug or an unexpected hardware error must not end the loop.
        raise SensorError("%s: %s" % (type(exc).__name__, exc)) from None
