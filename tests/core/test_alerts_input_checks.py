"""Checks of what the firmware reads: config.json addresses, finite numbers and the
outbox folder, and the types in rule_state.json."""

import json
import os

from alerts.config import ConfigError, validate
from alerts.rules import Rules
from alerts.rulestate import RuleState

from helpers import fresh_directory, raises, remove_tree


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
        "sensors": [{"name": "temp", "type": "simulated", "unit": "C", "values": [[0, 20], [60, 35]]}],
        "rules": [{"name": "hot", "sensor": "temp", "above": 30, "hysteresis": 2, "min_interval_s": 60}],
    }


def error_for(change):
    config = good_config()
    change(config)
    return raises(ConfigError, validate, config)


# -- addresses, checked as the SMTP library's parser checks them ---------------------------


def test_display_name_line_break_rejected():
    for value in ("Bob\n <b@example.com>", "Bo\rb <b@example.com>", "Bo\x00b <b@example.com>"):
        exc = error_for(lambda config, value=value: config["smtp"].update(to=["you@example.com", value]))
        assert exc.key == "smtp.to[1]", exc.key
        assert "smtp.to[1] is invalid: expected an email address on one line" in str(exc), str(exc)
    exc = error_for(lambda config: config["smtp"].update({"from": "Green\x00house <alerts@example.com>"}))
    assert exc.key == "smtp.from", exc.key


def test_library_addresses_accepted():
    for value in ('"a b"@example.com', "a@[192.0.2.1]", "Gr\u00fcn <a@example.com>", '"Doe, Jane" <j@example.com>'):
        config = good_config()
        config["smtp"]["to"] = [value]
        validate(config)


# Addresses on both sides of each rule of microsmtp.message.parse_address.
ADDRESSES = (
    "a@example.com",
    " a@example.com\t",
    "Ann <a@example.com>",
    "<a@example.com>",
    '"Doe, Jane" <j@example.com>',
    '"Doe <x> Jane" <j@example.com>',
    '"Doe \\" <x>" <j@example.com>',
    "Ann <a@example.com> <b@example.com>",
    "Ann a@example.com>",
    '"Ann <a@example.com>',
    "Bob\n <b@example.com>",
    "Bob <b@example.com>\r",
    "Bo\x00b <b@example.com>",
    "Bo\u2028b <b@example.com>",
    "Bo\x85b <b@example.com>",
    "Gr\u00fcn <a@example.com>",
    "",
    "<>",
    "nobody",
    "@example.com",
    "a@",
    "a@b@example.com",
    '"a@b"@example.com',
    '"a b"@example.com',
    '"a\\"b"@example.com',
    '"a"b"@example.com',
    '"a\\"@example.com',
    '"@example.com',
    '""@example.com',
    '"a\x01"@example.com',
    "a..b@example.com",
    ".a@example.com",
    "a.@example.com",
    "a b@example.com",
    "a(b)@example.com",
    "a,b@example.com",
    "a[b]@example.com",
    "a\\b@example.com",
    "a!#$%&'*+-/=?^_`{|}~@example.com",
    "a\x7fb@example.com",
    "J\u00f6rg@b\u00fccher.de",
    "a@example.com.",
    "a@.example.com",
    "a@-example.com",
    "a@example-.com",
    "a@exa_mple.com",
    "a@exa mple.com",
    "a@exa\u2028mple.com",
    "a@[192.0.2.1]",
    "a@[]",
    "a@[1 2]",
    "a@[a[b]",
    "a@b.example, c@d.example",
    "x" * 64 + "@example.com",
    "x" * 65 + "@example.com",
    "a@" + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + "." + "e" * 60 + ".com",
    "a@" + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + "." + "e" * 60 + ".co",
    "\u00e9" * 32 + "@example.com",
    "\u00e9" * 33 + "@example.com",
)


def test_address_check_matches_library():
    from alerts.config import _address_ok

    from microsmtp.errors import InvalidInputError
    from microsmtp.message import parse_address

    for value in ADDRESSES:
        try:
            parse_address(value, "to")
            library = True
        except InvalidInputError:
            library = False
        assert _address_ok(value) == library, (value, library)


# -- numbers must be finite ----------------------------------------------------------------

INFINITY = float("1e999")


def test_number_fields_reject_infinity_and_nan():
    nan = INFINITY - INFINITY
    cases = (
        ("outbox.retry_max_s", lambda config, v: config.update(outbox={"retry_max_s": v})),
        ("outbox.retry_min_s", lambda config, v: config.update(outbox={"retry_min_s": v})),
        ("rules[0].hysteresis", lambda config, v: config["rules"][0].update(hysteresis=v)),
        ("rules[0].above", lambda config, v: config["rules"][0].update(above=v)),
        ("rules[0].min_interval_s", lambda config, v: config["rules"][0].update(min_interval_s=v)),
        ("alerts.heartbeat_h", lambda config, v: config.update(alerts={"heartbeat_h": v})),
        ("ntp.resync_h", lambda config, v: config["ntp"].update(resync_h=v)),
        ("deep_sleep.interval_s", lambda config, v: config.update(deep_sleep={"interval_s": v})),
    )
    for key, change in cases:
        for value in (INFINITY, -INFINITY, nan):
            exc = error_for(lambda config, change=change, value=value: change(config, value))
            assert exc.key == key, (key, exc.key)
            assert "expected a finite number" in str(exc), str(exc)


def test_timeline_rejects_infinity():
    exc = error_for(lambda config: config["sensors"][0].update(values=[[0, 20], [60, INFINITY]]))
    assert exc.key == "sensors[0].values", exc.key


def test_config_text_1e999_rejected():
    from alerts.config import load

    directory = fresh_directory("alerts-input-checks")
    path = directory + "/config.json"
    text = json.dumps(good_config())
    with open(path, "w") as file:
        file.write(text[:-1] + ', "outbox": {"retry_max_s": 1e999}}')
    try:
        exc = raises(ConfigError, load, path, directory + "/board.json")
        assert exc.key == "outbox.retry_max_s", exc.key
    finally:
        remove_tree(directory)


# -- the outbox folder ------------------------------------------------------------------------


def test_outbox_dir_own_folder():
    here = os.getcwd()
    for value in (
        ".",
        "/",
        "./",
        "//",
        "./outbox",
        "../outbox",
        "outbox/../..",
        "a//b",
        "alerts",
        "microsmtp",
        "lib/outbox",
        "main.py",
        " outbox",
        here,
        here + "/",
    ):
        exc = error_for(lambda config, value=value: config.update(outbox={"dir": value}))
        assert exc.key == "outbox.dir", (value, exc.key)
        assert "a folder of its own" in str(exc), str(exc)
    for value in ("outbox", "data/outbox", "/outbox", "outbox/", here + "/outbox"):
        config = good_config()
        config["outbox"] = {"dir": value}
        validate(config)


# -- rule_state.json ------------------------------------------------------------------------

RULES_CONFIG = {
    "sensors": [{"name": "t", "unit": "C"}],
    "rules": [{"name": "r", "sensor": "t", "above": 35, "hysteresis": 2, "min_interval_s": 60}],
    "alerts": {},
}

DAMAGED_STATES = (
    {"rules": {"r": [False, False, False, "2026-01-01", 0, None]}},
    {"rules": {"r": [True, True, False, None, 0]}},
    {"rules": {"r": [1, True, False, None, 0, None]}},
    {"rules": {"r": [True, True, False, None, -1, None]}},
    {"rules": {"r": "open"}},
    {"rules": [], "sent": ["x"]},
    {"sent": {"a": 1}},
    {"sent": [INFINITY]},
    {"sent": [-5]},
    {"failures": {"t": 5}},
    {"failures": {"t": [3, "yes"]}},
    {"suppressed_count": "3"},
    {"suppressed_count": -1},
    {"suppressed": [3]},
    {"heartbeat": "noon"},
    {"history": {"t": [[1780000000, "hot"]]}},
    {"history": {"t": 5}},
    {"timeline": 5},
)


def test_damaged_rule_state_rejected():
    directory = fresh_directory("alerts-rulestate")
    path = directory + "/rule_state.json"
    try:
        for state in DAMAGED_STATES:
            # A valid open alert next to the damaged field: it must not be loaded either.
            data = {"rules": {"r": [True, True, False, 1780000000, 0, None]}, "sent": [1780000000]}
            data.update(state)
            with open(path, "w") as file:
                file.write(json.dumps(data))
            rules = Rules(RULES_CONFIG)
            assert RuleState(rules, path).load() is False, state
            assert rules.active() == [], state
            assert rules.limit.sent == [], state
            # The first reading works and raises the alert afresh.
            records = rules.process("t", 37.0, 1780000100) + rules.tick(1780000100)
            assert [record["kind"] for record in records] == ["alert"], (state, records)
    finally:
        remove_tree(directory)


def test_valid_rule_state_loads():
    directory = fresh_directory("alerts-rulestate")
    path = directory + "/rule_state.json"
    data = {
        "rules": {"r": [True, True, False, 1780000000, 2, None], "gone": [False, False, False, None, 0, 3.5]},
        "sent": [1780000000, 1780000010.5],
        "suppressed": ["line"],
        "suppressed_count": 1,
        "heartbeat": None,
        "failures": {"t": [3, True]},
    }
    try:
        with open(path, "w") as file:
            file.write(json.dumps(data))
        rules = Rules(RULES_CONFIG)
        assert RuleState(rules, path).load() is True
        assert rules.active() == ["r"]
        assert rules.rules[0].skipped == 2
        assert rules.failures == {"t": [3, True]}
    finally:
        remove_tree(directory)


def test_sleep_state_wrong_types_rejected():
    rules = Rules(RULES_CONFIG)
    good = rules.state()
    assert rules.restore(good) is True
    bad = rules.state()
    bad["history"] = {"t": [[1780000000, None, 1]]}
    assert rules.restore(bad) is False
    assert rules.process("t", 37.0, 1780000100)[0]["kind"] == "alert"


def test_time_fields_have_upper_bounds():
    cases = (
        ("outbox.retry_max_s", lambda config: config.update(outbox={"retry_max_s": 1e300})),
        ("outbox.retry_min_s", lambda config: config.update(outbox={"retry_min_s": 86401, "retry_max_s": 86400})),
        ("deep_sleep.interval_s", lambda config: config.update(deep_sleep={"interval_s": 10**400})),
        ("ntp.resync_h", lambda config: config["ntp"].update(resync_h=8761)),
        ("alerts.heartbeat_h", lambda config: config.update(alerts={"heartbeat_h": 1e300})),
        ("rules[0].min_interval_s", lambda config: config["rules"][0].update(min_interval_s=2592001)),
    )
    for key, change in cases:
        exc = error_for(change)
        assert exc.key == key, (key, exc.key)
    # The largest values pass.
    config = good_config()
    config["outbox"] = {"retry_max_s": 86400}
    config["ntp"]["resync_h"] = 8760
    validate(config)


def test_message_id_domain_is_ascii():
    from alerts.app import message_id_domain

    from microsmtp.message import Message

    cases = (
        ("Greenhouse <alerts@example.com>", "example.com"),
        ("alerts@example.com", "example.com"),
        ("Ann <a@example.com> ", "example.com"),
        ("a@example.com\t", "example.com"),
        ("alerts@b\u00fccher.de", "localhost"),
        ("Gr\u00fcn <a@b\u00fccher.de>", "localhost"),
        ("a@[192.0.2.1]", "localhost"),
    )
    for sender, domain in cases:
        assert message_id_domain(sender) == domain, (sender, message_id_domain(sender))
        # Every such ID is one that Message accepts.
        message = Message(sender, "you@example.com", subject="s", text="t", message_id="<1.2@%s>" % domain)
        assert message.message_id == "<1.2@%s>" % domain
