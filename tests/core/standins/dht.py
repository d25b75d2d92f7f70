"""Stand-in for MicroPython's dht module: DHT11 and DHT22 on a pin.

``READINGS`` is what measure() finds: (temperature, humidity), or None for a sensor
that does not reply, which raises OSError(ETIMEDOUT) as the real driver does.
``MEASURES`` counts measure() calls.
"""

READINGS = [(21.5, 40.0)]
MEASURES = [0]


class DHTBase:
    def __init__(self, pin):
        self.pin = pin
        self._reading = None

    def measure(self):
        MEASURES[0] += 1
        reading = READINGS[0]
        if reading is None:
            raise OSError(110)
        self._reading = reading

    def temperature(self):
        return self._reading[0]

    def humidity(self):
        return self._reading[1]


class DHT11(DHTBase):
    pass


class DHT22(DHTBase):
    pass
