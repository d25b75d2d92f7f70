"""config.json validation: defaults, and an error naming each bad key without secrets."""

import json

from alerts.config import ConfigError, validate

from helpers import raises


def good_config():
    return {
        "device": "greenhouse-1",
        "wifi": {"ssid": "home", "password": "wifi-secret"},
        "smtp": {
            "host": "smtp.example.com",
            "user": "alerts@example.com",
            "password": "smtp-secret",
            "from": "Greenhouse <alerts@example.com>",
            "to": ["you@example.com"],
        },
        "ntp": {"host": "pool.ntp.org"},
        "sensors": [
            {"name": "board", "type": "mcu_temperature", "unit": "C"},
            {"name": "door", "type": "digital", "pin": 14, "pull": "up"},
            {"name": "sim", "type": "simulated", "values": [[0, 20], [60, 35]]},
        ],
        "rules": [
            {"name": "hot", "sensor": "board", "above": 60, "hysteresis": 3},
            {"name": "door-open", "sensor": "door", "state": 1},
        ],
    }


def error_for(change):
    config = json.loads(json.dumps(good_config()))
    change(config)
    return raises(ConfigError, validate, config)


def test_good_config_gets_defaults():
    config = validate(good_config())
    assert config["smtp"]["port"] == 587
    assert config["smtp"]["security"] == "starttls"
    assert config["wifi"]["timeout_s"] == 20
    assert config["outbox"]["max_entries"] == 50
    assert config["alerts"]["max_per_hour"] == 10
    assert config["deep_sleep"]["enabled"] is False
    assert config["sensors"][0]["interval_s"] == 60
    assert config["sensors"][1]["interval_s"] == 1
    assert config["sensors"][2]["repeat_s"] == 0
    assert config["rules"][0]["min_interval_s"] == 0


def test_port_default_follows_security():
    config = good_config()
    config["smtp"]["security"] = "tls"
    assert validate(config)["smtp"]["port"] == 465


def test_example_config_is_valid():
    # The repository's config.example.json, read relative to this file.
    import sys

    path = __file__.replace("\\", "/")
    root = "/".join(path.split("/")[:-3]) or "."
    with open(root + "/config.example.json") as file:
        validate(json.loads(file.read()))
    assert sys is not None


def set_value(path, value):
    def change(config):
        target = config
        parts = path.split(".")
        for part in parts[:-1]:
            target = target[int(part)] if isinstance(target, list) else target[part]
        last = parts[-1]
        if isinstance(target, list):
            target[int(last)] = value
        elif value is None:
            del target[last]
        else:
            target[last] = value

    return change


CASES = (
    ("device", None, "device is missing"),
    ("device", 5, "device is invalid: expected a non-empty string"),
    ("wifi.ssid", "", "wifi.ssid is invalid"),
    ("wifi.timeout_s", 0, "wifi.timeout_s is invalid: expected a number from 1 to 300"),
    ("wifi.retries", "3", "wifi.retries is invalid: expected an integer"),
    ("smtp.host", None, "smtp.host is missing"),
    ("smtp.port", 70000, "smtp.port is invalid: expected an integer from 1 to 65535"),
    ("smtp.security", "ssl", "smtp.security is invalid: expected one of starttls, tls, none"),
    ("smtp.from", "not-an-address", "smtp.from is invalid: expected an email address"),
    ("smtp.from", "<>", "smtp.from is invalid: expected an email address"),
    ("smtp.from", "Greenhouse <alerts>", "smtp.from is invalid: expected an email address"),
    ("smtp.from", "Greenhouse <a b@example.com>", "smtp.from is invalid: expected an email address"),
    ("smtp.from", "a..b@example.com", "smtp.from is invalid: expected an email address"),
    ("smtp.from", "a@b@example.com", "smtp.from is invalid: expected an email address"),
    ("smtp.from", "a@example.com.", "smtp.from is invalid: expected an email address"),
    ("smtp.from", "Name <a@b.example> <c@d.example>", "smtp.from is invalid: expected an email address"),
    ("smtp.from", "a@exa\u2028mple.com", "smtp.from is invalid: expected an email address"),
    ("smtp.from", "alerts@exa_mple.com", "smtp.from is invalid: expected an email address"),
    ("smtp.to.0", "a(b)@example.com", "smtp.to[0] is invalid"),
    ("smtp.to.0", "a@b.example, c@d.example", "smtp.to[0] is invalid"),
    ("smtp.to.0", "x@", "smtp.to[0] is invalid"),
    ("sensors.0.unit", "C\n", "sensors[0].unit is invalid: expected a string on one line"),
    ("smtp.to", [], "smtp.to is invalid"),
    ("smtp.to.0", "nobody", "smtp.to[0] is invalid"),
    ("smtp.password", None, "smtp.password is missing"),
    ("smtp.password", "pass\nword", "smtp.password is invalid: expected a non-empty string without CR, LF or NUL"),
    ("smtp.password", "pass\x00word", "smtp.password is invalid: expected a non-empty string without CR, LF or NUL"),
    ("smtp.pasword", "x", "unknown key smtp.pasword"),
    ("smtp.timeout_s", 1, "smtp.timeout_s is invalid"),
    ("ntp.host", None, "ntp.host is missing"),
    ("sensors", [], "sensors is invalid: expected a non-empty list"),
    ("sensors", None, "sensors is missing: expected a non-empty list"),
    ("smtp.to", None, "smtp.to is missing: expected an address"),
    ("sensors.0.type", "thermometer", "sensors[0].type is invalid: expected one of mcu_temperature"),
    ("sensors.1.pin", None, "sensors[1].pin is missing"),
    ("sensors.1.pull", "sideways", "sensors[1].pull is invalid: expected one of up, down, none"),
    ("sensors.2.values", [[10, 1], [5, 2]], "sensors[2].values is invalid: expected a list of [seconds, value] pairs"),
    ("sensors.0.colour", "red", "unknown key sensors[0].colour"),
    ("sensors.2.repeat_s", -5, "sensors[2].repeat_s is invalid: expected a number from 0 to 31536000"),
    ("rules.0.sensor", "nothing", "rules[0].sensor is invalid: expected one of board, door, sim"),
    ("rules.0.above", None, "rules[0] needs exactly one of above, below, state or on_change, got none"),
    ("rules.0.below", 5, "rules[0] needs exactly one of above, below, state or on_change, got above, below"),
    ("rules.0.hysteresis", -1, "rules[0].hysteresis is invalid: expected a number of at least 0"),
    ("rules.1.state", 2, "rules[1].state is invalid: expected one of 0, 1"),
    ("rules.1", {"name": "door", "sensor": "door", "on_change": False}, "rules[1].on_change is invalid: expected true"),
    ("alerts", {"max_per_hour": 0}, "alerts.max_per_hour is invalid"),
    (
        "outbox",
        {"retry_min_s": 60, "retry_max_s": 30},
        "outbox.retry_max_s is invalid: expected a number from 60 to 86400",
    ),
    ("deep_sleep", {"enabled": "yes"}, "deep_sleep.enabled is invalid: expected true or false"),
)


def test_each_bad_key_is_named():
    for path, value, expected in CASES:
        error = error_for(set_value(path, value))
        assert expected in str(error), (path, str(error))
        assert str(error).startswith("config.json: "), str(error)


def test_lenient_values_accepted():
    config = good_config()
    config["wifi"]["password"] = None
    config["sensors"][0]["unit"] = ""
    config["smtp"]["from"] = "Greenhouse <alerts@example.com> "
    config["smtp"]["to"] = ['"night shift"@example.com', "ops+freezer@sub.example.co.uk", "a@[192.0.2.1]"]
    validate(config)
    # null means the default, as for every other key: an open network.
    assert config["wifi"]["password"] == ""
    assert config["sensors"][0]["unit"] == ""


def test_watchdog_limit_of_board():
    config = good_config()
    config["board"] = {"watchdog_ms": 8388}
    assert validate(config, {"watchdog_ms": 8388})["board"]["watchdog_ms"] == 8388
    # Without limits 30000 is valid. The Pico W's board.json gives its port's limit.
    config = good_config()
    config["board"] = {"watchdog_ms": 30000}
    assert validate(config)["board"]["watchdog_ms"] == 30000
    config = good_config()
    config["board"] = {"watchdog_ms": 30000}
    error = raises(ConfigError, validate, config, {"watchdog_ms": 8388})
    assert "board.watchdog_ms is invalid: expected at most 8388" in str(error), str(error)
    # A limit that is no positive whole number is ignored alike on both runtimes.
    for limit in (True, 8388.0, -1, "8388"):
        config = good_config()
        config["board"] = {"watchdog_ms": 30000}
        assert validate(config, {"watchdog_ms": limit})["board"]["watchdog_ms"] == 30000, limit


def test_duplicate_sensor_name():
    def change(config):
        config["sensors"][1]["name"] = "board"

    error = error_for(change)
    assert "sensors[1].name 'board' is used twice" in str(error)
    assert error.key == "sensors[1].name"


def test_secrets_never_in_messages():
    for path in ("smtp.password", "wifi.password", "smtp.oauth2_token"):
        error = error_for(set_value(path, 12345))
        assert path in str(error)
        assert "12345" not in str(error)
        assert "not shown" in str(error)


def test_password_and_token_together_rejected():
    def change(config):
        config["smtp"]["oauth2_token"] = "token-secret"

    error = error_for(change)
    assert "both set" in str(error)
    assert "token-secret" not in str(error)
    assert "smtp-secret" not in str(error)


def test_auth_over_plaintext_rejected():
    error = error_for(set_value("smtp.security", "none"))
    assert "smtp.security is none" in str(error)


def test_top_level_must_be_object():
    error = raises(ConfigError, validate, [1, 2])
    assert "one JSON object" in str(error)


def config_path(name):
    return "/tmp/alerts-config-test-%s.json" % name


def remove_file(path):
    import os

    try:
        os.remove(path)
    except OSError:
        pass


def test_missing_config_file_named_with_fix():
    from alerts.config import load

    path = config_path("missing")
    remove_file(path)
    error = raises(ConfigError, load, path, config_path("no-board"))
    assert str(error) == "%s not found: copy config.example.json to the board as %s and edit it" % (path, path)


def test_invalid_json_names_file_and_position():
    from alerts.config import load

    path = config_path("broken")
    # One top-level key per line, and the NTP host without its quotes.
    config = good_config()
    lines = ['"%s": %s' % (key, json.dumps(config[key])) for key in sorted(config)]
    text = "{\n" + ",\n".join(lines) + "\n}\n"
    text = text.replace('"pool.ntp.org"', "pool.ntp.org")
    with open(path, "w") as file:
        file.write(text)
    error = raises(ConfigError, load, path, config_path("no-board"))
    message = str(error)
    remove_file(path)
    assert message.startswith(path + " is not valid JSON ("), message
    assert message.endswith("): check commas, quotes and brackets there"), message
    before = text[: text.index("pool.ntp.org")]
    line = before.count("\n") + 1
    column = len(before) - before.rfind("\n")
    assert "(line %d, column %d: invalid value: expected a string in double quotes" % (line, column) in message, message


# Text that MicroPython's json.loads accepts (or reads differently) but JSON forbids,
# with the position and problem check_json() reports on both runtimes.
STRICT_CASES = (
    ('{"a": 1,}', "line 1, column 9: comma before '}'; remove it"),
    ('{"a": [1, 2,]}', "line 1, column 13: comma before ']'; remove it"),
    ('{,"a": 1}', "line 1, column 2: expected a key in double quotes before ','"),
    ("[,1]", "line 1, column 2: expected a value"),
    ('{"a": }', "line 1, column 7: expected a value"),
    ('{"a":, "b": 1}', "line 1, column 6: expected a value"),
    ("[1,,2]", "line 1, column 4: expected a value"),
    ('{"a": 1\n "b": 2}', "line 2, column 2: missing comma before this value"),
    ('{"a": [1 2]}', "line 1, column 10: missing comma before this value"),
    ('{"a": {} {}}', "line 1, column 10: missing comma before this value"),
    ('{"a" 1}', "line 1, column 6: expected ':' after the key"),
    ('{"a": 1}}', "line 1, column 9: extra text after the end"),
    ('{"a": [1}', "line 1, column 9: '}' does not match '['"),
    ('{"a": 01}', "line 1, column 7: invalid value"),
    ('{"a": True}', "line 1, column 7: invalid value"),
    ('{"a": "x', "line 1, column 7: string without its closing double quote"),
    ('{"a": 1', "line 1, column 8: text ends with 1 bracket(s) not closed"),
    ("  ", "line 1, column 3: no JSON value"),
)


def test_strict_check_rejects_lenient_json():
    from alerts.config import check_json

    for text, expected in STRICT_CASES:
        problem = check_json(text)
        assert problem is not None, text
        assert problem.startswith(expected), (text, problem)


def test_strict_check_accepts_valid_json():
    from alerts.config import check_json

    valid = (
        '{"a": -1.5e3, "b": [true, false, null, {}, []], "c": "q\\"\\\\", "d": 0, "e": 2E+2}',
        "[]",
        ' "text" ',
        config_text(good_config()),
    )
    for text in valid:
        assert check_json(text) is None, text
        json.loads(text)


def config_text(config, trailing_comma=False):
    """Return config as JSON with one top-level key per line (MicroPython has no indent=)."""
    lines = ['"%s": %s' % (key, json.dumps(config[key])) for key in sorted(config)]
    return "{\n" + ",\n".join(lines) + (",\n" if trailing_comma else "\n") + "}\n"


def test_trailing_comma_config_not_loaded():
    from alerts.config import load

    path = config_path("comma")
    # A stray comma after the last key, as an edit by hand leaves it.
    text = config_text(good_config(), trailing_comma=True)
    with open(path, "w") as file:
        file.write(text)
    message = str(raises(ConfigError, load, path, config_path("no-board")))
    remove_file(path)
    line = text.count("\n")
    assert "is not valid JSON (line %d, column 1: comma before '}'; remove it)" % line in message, message


def test_secret_in_broken_json_not_shown():
    from alerts.config import load

    path = config_path("secret")
    with open(path, "w") as file:
        file.write('{"smtp": {"password": "hunter2-secret", "user": alice}}')
    message = str(raises(ConfigError, load, path, config_path("no-board")))
    remove_file(path)
    assert "hunter2-secret" not in message, message
    assert path in message
