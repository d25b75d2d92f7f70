"""Stand-in for MicroPython's onewire module: a bus whose devices the test sets.

``DEVICES`` holds the ROM codes (8 bytes) present; with ``PRESENT[0]`` False no device
answers the reset pulse, and every bus operation raises OneWireError.
"""

DEVICES = []
PRESENT = [True]


class OneWireError(Exception):
    pass


class OneWire:
    def __init__(self, pin):
        self.pin = pin

    def reset(self, required=False):
        if required and not PRESENT[0]:
            raise OneWireError()
        return PRESENT[0]

    def scan(self):
        return list(DEVICES) if PRESENT[0] else []
