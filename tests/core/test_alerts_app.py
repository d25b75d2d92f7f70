"""alerts.app's module unloading, which drops boot and sending code from the heap, and its
delivery rounds."""

import sys

from alerts.app import unload


def load(name):
    __import__(name)
    return sys.modules[name]


def test_unload_removes_module_and_attribute():
    first = load("alerts.sleepstate")
    unload(("alerts.sleepstate",))
    assert "alerts.sleepstate" not in sys.modules
    assert not hasattr(sys.modules["alerts"], "sleepstate")
    again = load("alerts.sleepstate")
    assert again is not first
    assert again.PATH == "sleep_state.json"


def test_unload_matches_whole_module_names():
    history = load("alerts.history")
    load("alerts.sleepstate")
    # "alerts.sleep" is a prefix of the text but not a parent of alerts.sleepstate.
    unload(("alerts.sleep",))
    assert "alerts.sleepstate" in sys.modules
    unload(("alerts.sleepstate",))
    assert "alerts.sleepstate" not in sys.modules
    assert sys.modules["alerts.history"] is history


def test_unload_of_missing_module_is_harmless():
    before = sorted(sys.modules)
    unload(("alerts.no_such_module",))
    assert sorted(sys.modules) == before


def restore(saved):
    """Put back the modules of ``saved`` (a copy of sys.modules), as attributes of their packages too."""
    for name in saved:
        sys.modules[name] = saved[name]
        package, _, attribute = name.rpartition(".")
        if package in saved:
            setattr(saved[package], attribute, saved[name])


class RoundState:
    """The App attributes that App.run_delivery() reads and sets."""

    def __init__(self):
        self.config = {"outbox": {"retry_min_s": 30, "retry_max_s": 300}}
        self.send_failures = 0
        self.delivering = False


def test_delivery_round_out_of_memory_backs_off():
    try:
        import asyncio
    except ImportError:
        import uasyncio as asyncio

    from alerts.app import App

    class Delivery:
        async def deliver(self, app):
            # A round whose message, CSV or log line found no heap.
            raise MemoryError()

    load("alerts.delivery")
    # The round unloads the SMTP library too; the other tests keep their module objects.
    saved = dict(sys.modules)
    sys.modules["alerts.delivery"] = Delivery()
    sys.modules["alerts"].delivery = sys.modules["alerts.delivery"]
    state = RoundState()
    try:
        delay = asyncio.run(App.run_delivery(state, "deliver"))
        unloaded = "alerts.delivery" not in sys.modules
    finally:
        restore(saved)

    assert unloaded
    assert 15 <= delay <= 30, delay
    assert state.send_failures == 1
    assert not state.delivering


class StopSender(Exception):
    """Ends App.sender_task() in a test."""


class SenderState:
    """The App attributes that App.sender_task() reads; the first wait finds no heap."""

    def __init__(self):
        self.config = {"outbox": {"retry_min_s": 30, "retry_max_s": 300}}
        self.waits = []
        self.rounds = 0
        self.watchdog = self
        self.outbox = self

    def alive(self, name, seconds):
        pass

    def pending(self):
        return ["00000001.json"]

    async def _wait_wake(self, seconds):
        self.waits.append(seconds)
        if len(self.waits) == 1:
            raise MemoryError()

    async def run_delivery(self, step):
        self.rounds += 1
        if self.rounds == 2:
            raise StopSender()
        return 20

    def update_led(self):
        pass


def test_sender_wait_out_of_memory_keeps_running():
    try:
        import asyncio
    except ImportError:
        import uasyncio as asyncio

    from alerts import clock
    from alerts.app import App

    state = SenderState()
    state.wake = asyncio.Event()
    state._sender_step = lambda delay: App._sender_step(state, delay)
    slept = []

    async def sleep(seconds):
        slept.append(seconds)

    real_sleep = clock.sleep
    clock.sleep = sleep
    try:
        asyncio.run(App.sender_task(state))
    except StopSender:
        pass
    finally:
        clock.sleep = real_sleep

    # A round at once (an alert is pending), then a wait of the 20 s it returned that
    # runs out of memory, a plain sleep of retry_min_s instead, and the second round.
    assert state.waits == [20], state.waits
    assert slept == [30], slept
    assert state.rounds == 2, state.rounds


class SensorState:
    """The App attributes that App.sensor_task() reads; its readings fail, then the test ends."""

    def __init__(self, failures):
        self.drivers = {"freezer": object()}
        self.failures = failures
        self.reads = 0
        self.alive_calls = []
        self.watchdog = self

    def alive(self, name, seconds):
        self.alive_calls.append(name)

    async def read_sensor(self, name):
        self.reads += 1
        if self.reads > len(self.failures):
            raise KeyboardInterrupt()
        raise self.failures[self.reads - 1]


def test_sensor_task_survives_failed_readings():
    try:
        import asyncio
    except ImportError:
        import uasyncio as asyncio

    from alerts import clock
    from alerts.app import App

    # Lack of heap while the rules ran, then a fault in them: the sensor is read again.
    state = SensorState([MemoryError("memory allocation failed, allocating 216 bytes"), TypeError("bad rule state")])
    slept = []

    async def sleep(seconds):
        slept.append(seconds)

    real_sleep = clock.sleep
    clock.sleep = sleep
    try:
        asyncio.run(App.sensor_task(state, {"name": "freezer", "interval_s": 30}))
    except KeyboardInterrupt:
        pass
    finally:
        clock.sleep = real_sleep

    assert state.reads == 3, state.reads
    assert state.alive_calls == ["freezer", "freezer"], state.alive_calls
    assert slept == [30, 30], slept
