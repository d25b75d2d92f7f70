"""Pin-based sensor drivers: the MCU's temperature, an ADC pin and a digital input."""

from .sensors import SensorError


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

    The interrupt handler records every edge, so ``changed`` signals the loop to read now
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
