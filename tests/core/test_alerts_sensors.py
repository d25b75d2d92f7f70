"""Hardware sensor drivers against stand-ins for machine, dht, onewire, ds18x20 and esp32.

The stand-ins (tests/core/standins/) have the interfaces of MicroPython's modules. Each
test puts them first on sys.path and removes them again, so no other test sees them.
"""

import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from alerts import sensors
from alerts.sensors import SensorError

from helpers import raises

_HERE = __file__.replace("\\", "/").rsplit("/", 1)[0] if "/" in __file__ else "."
STANDINS = _HERE + "/standins"
ESP32_PORT = STANDINS + "/esp32_port"
_MODULES = ("machine", "dht", "onewire", "ds18x20", "esp32")


def use_standins(esp32=False):
    """Put the stand-ins first on sys.path (with esp32 for an ESP32 port) and return machine."""
    drop_standins()
    sys.path.insert(0, STANDINS)
    if esp32:
        sys.path.insert(0, ESP32_PORT)
    import machine

    return machine


def drop_standins():
    for path in (STANDINS, ESP32_PORT):
        while path in sys.path:
            sys.path.remove(path)
    for name in _MODULES:
        if name in sys.modules:
            del sys.modules[name]
    if "alerts.sensor_dht" in sys.modules:
        sys.modules["alerts.sensor_dht"]._dht_devices.clear()


def read(driver):
    return asyncio.run(sensors.read(driver))


def spec(kind, **fields):
    result = {"name": "s", "type": kind}
    result.update(fields)
    return result


def rp2040_celsius(raw):
    return 27 - (raw * 3.3 / 65535 - 0.706) / 0.001721


def test_mcu_temperature_rp2040_adc4():
    machine = use_standins()
    try:
        driver = sensors.create(spec("mcu_temperature"))
        for raw in (14021, 13000, 15500):
            machine.ADC_VALUES[4] = raw
            value = read(driver)
            assert abs(value - rp2040_celsius(raw)) < 0.051, (raw, value)
        machine.ADC_VALUES[4] = 14021
        assert read(driver) == 27.0
        machine.ADC_VALUES[4] = OSError(5)
        error = raises(SensorError, read, driver)
        assert "ADC channel 4 read failed" in str(error)
    finally:
        drop_standins()


def test_mcu_temperature_esp32():
    use_standins(esp32=True)
    try:
        import esp32

        driver = sensors.create(spec("mcu_temperature"))
        esp32.TEMPERATURE[0] = 43
        assert read(driver) == 43
        esp32.TEMPERATURE[0] = OSError(22)
        error = raises(SensorError, read, driver)
        assert "esp32.mcu_temperature() failed" in str(error)
        del esp32.mcu_temperature
        error = raises(SensorError, sensors.create, spec("mcu_temperature"))
        assert "no esp32.mcu_temperature()" in str(error)
    finally:
        drop_standins()


def test_adc_scale_offset_and_failure():
    machine = use_standins()
    try:
        driver = sensors.create(spec("adc", pin=26, scale=0.0015259, offset=-2))
        machine.ADC_VALUES[26] = 32768
        assert read(driver) == round(32768 * 0.0015259 - 2, 3)
        machine.ADC_VALUES[26] = OSError(5)
        error = raises(SensorError, read, driver)
        assert "ADC read failed" in str(error)
    finally:
        drop_standins()


def test_digital_pin_pull_up_and_invert():
    machine = use_standins()
    try:
        driver = sensors.create(spec("digital", pin=14, pull="up", invert=False))
        pin = machine.PINS[14]
        assert pin.pull == machine.Pin.PULL_UP
        assert read(driver) == 1
        inverted = sensors.create(spec("digital", pin=15, pull="up", invert=True))
        assert read(inverted) == 0
    finally:
        drop_standins()


def test_digital_pin_interrupt_records_changes():
    machine = use_standins()
    try:
        driver = sensors.create(spec("digital", pin=14, pull="up"))
        pin = machine.PINS[14]
        assert pin.trigger == machine.Pin.IRQ_RISING | machine.Pin.IRQ_FALLING
        assert read(driver) == 1
        assert driver.changed is False
        pin.drive(0)
        assert driver.changed is True
        assert driver.edges == 1
        assert read(driver) == 0
        assert driver.changed is False
        # A pulse shorter than the poll period: both edges are counted.
        pin.drive(1)
        pin.drive(0)
        assert driver.changed is True
        assert driver.edges == 3
        assert read(driver) == 0
    finally:
        drop_standins()


def test_digital_pin_wake_on_ext0():
    machine = use_standins(esp32=True)
    try:
        import esp32

        driver = sensors.create(spec("digital", pin=14, pull="up"))
        assert "wake_on_ext0" in driver.arm_wake()
        # The input idles high, so a change means low.
        assert esp32.EXT0 == [machine.PINS[14], esp32.WAKEUP_ALL_LOW]
    finally:
        drop_standins()


def test_digital_pin_without_wake_support():
    use_standins()
    try:
        driver = sensors.create(spec("digital", pin=14))
        assert driver.arm_wake() is None
    finally:
        drop_standins()


def test_dht22_temperature_humidity_and_timeout():
    use_standins()
    try:
        import dht

        dht.READINGS[0] = (23.4, 55.0)
        temperature = sensors.create(spec("dht22", pin=15, measure="temperature"))
        humidity = sensors.create(spec("dht22", pin=15, measure="humidity"))
        before = dht.MEASURES[0]
        assert read(temperature) == 23.4
        assert read(humidity) == 55.0
        # Both measurements of one sensor share one measure() within 2 s.
        assert dht.MEASURES[0] == before + 1
        other = sensors.create(spec("dht11", pin=16))
        dht.READINGS[0] = None
        error = raises(SensorError, read, other)
        assert "DHT read failed (no reply or checksum error)" in str(error)
        dht.READINGS[0] = (19.0, 60.0)
        assert read(other) == 19.0
    finally:
        drop_standins()


ROM_A = b"\x28\x01\x02\x03\x04\x05\x06\x07"
ROM_B = b"\x28\x11\x12\x13\x14\x15\x16\x17"


def test_ds18b20_reads_device_by_index():
    use_standins()
    try:
        import ds18x20
        import onewire

        onewire.DEVICES[:] = [ROM_A, ROM_B]
        onewire.PRESENT[0] = True
        ds18x20.TEMPERATURES.clear()
        ds18x20.TEMPERATURES[ROM_A] = 4.5
        ds18x20.TEMPERATURES[ROM_B] = -17.25
        assert read(sensors.create(spec("ds18b20", pin=16, index=1))) == -17.25
        assert read(sensors.create(spec("ds18b20", pin=16))) == 4.5
        error = raises(SensorError, read, sensors.create(spec("ds18b20", pin=16, index=2)))
        assert "no DS18B20 at index 2: 2 found on the bus" in str(error)
    finally:
        drop_standins()


def test_ds18b20_failures_are_failed_readings():
    use_standins()
    try:
        import ds18x20
        import onewire

        onewire.DEVICES[:] = [ROM_A]
        onewire.PRESENT[0] = True
        ds18x20.TEMPERATURES.clear()
        driver = sensors.create(spec("ds18b20", pin=16))
        ds18x20.TEMPERATURES[ROM_A] = 85.0
        error = raises(SensorError, read, driver)
        assert "power-on value 85.0" in str(error)
        ds18x20.TEMPERATURES[ROM_A] = Exception("CRC error")
        error = raises(SensorError, read, driver)
        assert "CRC error" in str(error)
        onewire.PRESENT[0] = False
        error = raises(SensorError, read, driver)
        assert "DS18B20 read failed" in str(error)
        onewire.PRESENT[0] = True
        ds18x20.TEMPERATURES[ROM_A] = 21.0
        assert read(driver) == 21.0
    finally:
        drop_standins()


def test_simulated_values_repeat():
    driver = sensors.create(spec("simulated", values=[[0, 20], [60, 35]], repeat_s=100))
    readings = [driver.read_at(seconds) for seconds in (0, 59, 60, 99, 100, 159, 160, 1065)]
    assert readings == [20, 20, 35, 35, 20, 20, 35, 35], readings


def test_simulated_values_without_repeat():
    driver = sensors.create(spec("simulated", values=[[0, 20], [60, 35]]))
    readings = [driver.read_at(seconds) for seconds in (0, 60, 100, 1065)]
    assert readings == [20, 35, 35, 35], readings


def test_missing_driver_module_is_sensor_error():
    # Without the stand-ins a CPython host has no dht module; the unix port has none either.
    drop_standins()
    error = raises(SensorError, sensors.create, spec("dht22", pin=4))
    assert "this firmware lacks a module for type dht22" in str(error)
