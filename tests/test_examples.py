"""The example configurations in the repository pass the board's own validation."""

import json
from pathlib import Path

import pytest
from alerts import config

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = ["config.example.json", "boards/ESP32_GENERIC/config.example.json"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_config_validates(name):
    data = json.loads((REPO / name).read_text())
    config.validate(data)


def test_esp32_example_uses_adc1_pins():
    # ADC2 pins stop working while WiFi is on (boards/ESP32_GENERIC/board.json).
    data = json.loads((REPO / "boards/ESP32_GENERIC/config.example.json").read_text())
    pins = [sensor["pin"] for sensor in data["sensors"] if sensor["type"] == "adc"]
    assert pins
    for pin in pins:
        assert 32 <= pin <= 39, pin
    assert all(sensor["type"] != "mcu_temperature" for sensor in data["sensors"])
