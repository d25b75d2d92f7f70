"""alerts.app's module unloading, which drops boot and sending code from the heap."""

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
