"""DS18B20 driver: one temperature sensor on a 1-Wire bus."""

from .sensors import SensorError


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
