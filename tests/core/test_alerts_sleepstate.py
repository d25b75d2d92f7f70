"""alerts.sleepstate: clearing the state that deep-sleep mode keeps, once that mode is off."""

import os

from alerts import sleepstate

from helpers import fresh_directory, remove_tree


class RTC:
    """machine.RTC with the memory() of ESP32, which keeps its bytes across resets."""

    def __init__(self, memory):
        self.stored = memory

    def memory(self, data=None):
        if data is None:
            return self.stored
        self.stored = data
        return None


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def test_clear_removes_file_and_rtc_memory():
    directory = fresh_directory("sleep-state")
    path = directory + "/sleep_state.json"
    with open(path, "w") as file:
        file.write('{"time": 1}')
    rtc = RTC(b'{"time": 1}')
    saved = sleepstate._rtc_memory
    sleepstate._rtc_memory = lambda: rtc
    try:
        sleepstate.clear(path)
        assert not exists(path)
        assert rtc.stored == b""
        assert sleepstate.load(path) == {}
        # Nothing left to clear: no error, and no write to the RTC memory.
        rtc.stored = None
        sleepstate.clear(path)
        assert rtc.stored is None
    finally:
        sleepstate._rtc_memory = saved
        remove_tree(directory)


def test_continuous_start_forgets_sleep_state():
    from alerts import boot

    directory = fresh_directory("sleep-state-boot")
    previous = os.getcwd()
    os.chdir(directory)
    try:
        with open(sleepstate.PATH, "w") as file:
            file.write('{"time": 1}')
        boot._forget_sleep_state()
        assert not exists(sleepstate.PATH)
    finally:
        os.chdir(previous)
        remove_tree(directory)
