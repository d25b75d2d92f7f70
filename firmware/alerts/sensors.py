"""Sensor drivers with one interface: ``read()`` returns a number or raises SensorError.

Drivers import their hardware modules (machine, dht, onewire, ds18x20, esp32) only when
created, so a board loads only what its config uses. The loop in app.py turns a
SensorError into a failed reading for the rules; nothing here raises anything else for
a read that fails.
"""


class SensorError(Exception):
    """A sensor could not be read (no reply, checksum error, missing hardware)."""


def _pin(machine, pin, mode, pull=None):
    if pull is None:
        return machine.Pin(pin, mode)
    return machine.Pin(pin, mode, pull)


class McuTemperature:
    """The MCU's own temperature in °C: ADC channel 4 on RP2040, esp32.mcu_temperature() on ESP32."""

    def __init__(self, spec):
        self._adc = None
        self._esp32 = None
        try:
            import esp32
        except ImportError:
            esp32 = None
        if esp32 is not None:
            if not hasattr(esp32, "mcu_temperature"):
                raise SensorError("this ESP32 firmware has no esp32.mcu_temperature(); use another sensor type")
            self._esp32 = esp32
        else:
            import machine

            self._adc = machine.ADC(4)

    def read(self):
        if self._esp32 is not None:
            try:
                return self._esp32.mcu_temperature()
            except OSError as exc:
                raise SensorError("esp32.mcu_temperature() failed: %s" % exc) from None
        # RP2040 datasheet section 4.9.5: T = 27 - (V - 0.706) / 0.001721, V from a 3.3 V reference.
        try:
            raw = self._adc.read_u16()
        except OSError as exc:
            raise SensorError("ADC channel 4 read failed: %s" % exc) from None
        volts = raw * 3.3 / 65535
        return round(27 - (volts - 0.706) / 0.001721, 1)


class AnalogPin:
    """An ADC pin: value = read_u16() * scale + offset."""

    def __init__(self, spec):
        import machine

        self._adc = machine.ADC(_pin(machine, spec["pin"], machine.Pin.IN))
        self.scale = spec.get("scale", 1)
        self.offset = spec.get("offset", 0)

    def read(self):
        try:
            raw = self._adc.read_u16()
        except OSError as exc:
            raise SensorError("ADC read failed: %s" % exc) from None
        return round(raw * self.scale + self.offset, 3)


class DigitalPin:
    """A switch input (door, leak, float switch) read as 0 or 1, with an edge interrupt.

    The interrupt handler records every edge, so ``changed`` tells the loop to read now
    instead of at the next interval, and a pulse shorter than the poll period is still
    counted in ``edges``.
    """

    def __init__(self, spec):
        import machine

        pull = {"up": machine.Pin.PULL_UP, "down": machine.Pin.PULL_DOWN}.get(spec.get("pull"))
        self._pin = _pin(machine, spec["pin"], machine.Pin.IN, pull)
        self.invert = spec.get("invert", False)
        self.changed = False
        self.edges = 0
        try:
            self._pin.irq(handler=self._on_edge, trigger=machine.Pin.IRQ_RISING | machine.Pin.IRQ_FALLING)
        except (AttributeError, OSError, ValueError):
            # Without interrupts the pin is still polled every interval_s.
            pass

    def _on_edge(self, pin):
        # Runs in interrupt context: no allocation, only flags.
        self.changed = True
        self.edges += 1

    def read(self):
        self.changed = False
        value = self._pin.value()
        return 1 - value if self.invert else value

    def arm_wake(self):
        """Make a change of this input end a deep sleep; return how, or None if the port cannot.

        ESP32 has one ext0 wake pin (esp32.wake_on_ext0, RTC-capable GPIOs only); other
        ports accept Pin.irq(wake=machine.DEEPSLEEP) where they define it.
        """
        import machine

        raw = self._pin.value()
        try:
            import esp32
        except ImportError:
            esp32 = None
        if esp32 is not None and hasattr(esp32, "wake_on_ext0"):
            level = esp32.WAKEUP_ANY_HIGH if raw == 0 else esp32.WAKEUP_ALL_LOW
            esp32.wake_on_ext0(pin=self._pin, level=level)
            return "esp32.wake_on_ext0, level %d" % (1 - raw)
        if hasattr(machine, "DEEPSLEEP") and hasattr(machine.Pin, "WAKE_HIGH"):
            trigger = machine.Pin.WAKE_HIGH if raw == 0 else machine.Pin.WAKE_LOW
            self._pin.irq(trigger=trigger, wake=machine.DEEPSLEEP)
            return "Pin.irq wake, level %d" % (1 - raw)
        return None


# DHT sensors allow a read every 1 s (DHT11) or 2 s (DHT22); two configured
# measurements of one sensor share a reading through this cache: pin -> (ticks, device).
_dht_devices = {}


class Dht:
    """A DHT11 or DHT22 on one pin, giving temperature (°C) or relative humidity (%)."""

    def __init__(self, spec):
        import dht
        import machine

        pin = spec["pin"]
        self.measure = spec.get("measure", "temperature")
        entry = _dht_devices.get(pin)
        if entry is None:
            device_class = dht.DHT22 if spec["type"] == "dht22" else dht.DHT11
            entry = [None, device_class(machine.Pin(pin))]
            _dht_devices[pin] = entry
        self._entry = entry
        self._min_gap_ms = 2000 if spec["type"] == "dht22" else 1000

    def read(self):
        from . import clock

        entry = self._entry
        device = entry[1]
        if entry[0] is None or clock.ticks_diff(clock.ticks_ms(), entry[0]) >= self._min_gap_ms:
            try:
                device.measure()
            except OSError as exc:
                entry[0] = None
                raise SensorError("DHT read failed (no reply or checksum error): %s" % exc) from None
            entry[0] = clock.ticks_ms()
        return device.temperature() if self.measure == "temperature" else device.humidity()


class Ds18b20:
    """One DS18B20 on a 1-Wire bus (``index`` picks the device found at that position)."""

    def __init__(self, spec):
        import ds18x20
        import machine
        import onewire

        self._bus = ds18x20.DS18X20(onewire.OneWire(machine.Pin(spec["pin"])))
        self.index = spec.get("index", 0)
        self._rom = None

    async def read_async(self):
        from . import clock

        try:
            if self._rom is None:
                roms = self._bus.scan()
                if len(roms) <= self.index:
                    raise SensorError("no DS18B20 at index %d: %d found on the bus" % (self.index, len(roms)))
                self._rom = roms[self.index]
            self._bus.convert_temp()
            # A 12-bit conversion takes up to 750 ms.
            await clock.sleep(clock.speed() * 0.75)
            value = self._bus.read_temp(self._rom)
        except (OSError, onewire_error()) as exc:
            self._rom = None
            raise SensorError("DS18B20 read failed: %s" % exc) from None
        if value == 85.0:
            # 85 °C is the power-on value: the conversion did not run.
            raise SensorError("DS18B20 returned the power-on value 85.0; check the wiring and power")
        return value

    def read(self):
        raise SensorError("DS18B20 needs read_async()")


def onewire_error():
    import onewire

    return getattr(onewire, "OneWireError", OSError)


class Simulated:
    """Values from a scenario: ``values`` [[seconds, value], ...] hold from their time on.

    Seconds count from the first read, or under the host simulation from the start of
    the scenario. ``failures`` [[start, end], ...] are periods in which reads fail, as a
    disconnected sensor would. ``hangs`` [[start, end], ...] are periods in which a read
    blocks the whole board until the period ends, as a driver stuck in a busy loop does
    (the case the watchdog exists for). Used by the host simulation; it works on a board
    too, for trying rules without hardware.
    """

    def __init__(self, spec, start=None):
        self.values = spec["values"]
        self.failures = spec.get("failures") or []
        self.hangs = spec.get("hangs") or []
        self.start = start

    def read_at(self, now):
        if self.start is None:
            self.start = now
        elapsed = now - self.start
        for begin, end in self.hangs:
            if begin <= elapsed < end:
                _block(end - elapsed)
        for begin, end in self.failures:
            if begin <= elapsed < end:
                raise SensorError("simulated read failure")
        value = self.values[0][1]
        for seconds, item in self.values:
            if seconds > elapsed:
                break
            value = item
        return value

    def read(self):
        from . import clock

        scenario = clock.scenario_seconds()
        if scenario is not None:
            self.start = 0
            return self.read_at(scenario)
        return self.read_at(clock.now())


def _block(seconds):
    """Block without yielding to asyncio for seconds of clock time."""
    import time

    from . import clock

    time.sleep(clock.real_seconds(seconds))


_DRIVERS = {
    "mcu_temperature": McuTemperature,
    "adc": AnalogPin,
    "digital": DigitalPin,
    "dht11": Dht,
    "dht22": Dht,
    "ds18b20": Ds18b20,
    "simulated": Simulated,
}


def create(spec):
    """Return the driver for a validated sensor spec; raise SensorError if the hardware is missing."""
    try:
        return _DRIVERS[spec["type"]](spec)
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
