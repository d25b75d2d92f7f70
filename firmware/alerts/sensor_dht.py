"""DHT11 and DHT22 driver (temperature or relative humidity)."""

from .sensors import SensorError

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
