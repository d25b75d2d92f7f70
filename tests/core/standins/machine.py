"""Stand-in for MicroPython's machine module: Pin with interrupts and ADC, driven by the test.

Tests set ``ADC_VALUES[source]`` (int, or an exception to raise) and change inputs
with ``Pin.drive(value)``, which calls the interrupt handler on each edge as the
hardware does.
"""

# read_u16() results by ADC source: 4 for the RP2040 temperature channel, or a pin number.
ADC_VALUES = {}
# Pins by number, so a test can reach the Pin a driver created.
PINS = {}


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, pin, mode=IN, pull=None):
        self.pin = pin
        self.mode = mode
        self.pull = pull
        self._value = 1 if pull == Pin.PULL_UP else 0
        self.handler = None
        self.trigger = None
        PINS[pin] = self

    def value(self, value=None):
        if value is None:
            return self._value
        self._value = 1 if value else 0
        return None

    def irq(self, handler=None, trigger=IRQ_RISING | IRQ_FALLING):
        self.handler = handler
        self.trigger = trigger

    def drive(self, value):
        """Set the input level from outside; call the handler on a matching edge."""
        old = self._value
        self._value = 1 if value else 0
        if self.handler is None or old == self._value:
            return
        edge = Pin.IRQ_RISING if self._value else Pin.IRQ_FALLING
        if self.trigger & edge:
            self.handler(self)


class ADC:
    def __init__(self, source):
        self.source = source.pin if isinstance(source, Pin) else source

    def read_u16(self):
        value = ADC_VALUES.get(self.source, 0)
        if isinstance(value, Exception):
            raise value
        return value
