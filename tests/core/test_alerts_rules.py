"""Alert rules: hysteresis, digital states and changes, minimum interval, hourly cap, digest, heartbeat."""

from alerts.rules import Rules

T0 = 1767225600  # 2026-01-01 00:00:00 UTC


def make_rules(rules, alerts=None, sensors=None):
    config = {
        "sensors": sensors or [{"name": "temp", "unit": "C"}, {"name": "door", "unit": ""}],
        "rules": rules,
        "alerts": alerts or {"max_per_hour": 100, "heartbeat_h": 0, "history": 5, "sensor_failures": 3},
    }
    return Rules(config)


def feed(rules, sensor, values, start=T0, step=60):
    """Feed values one per step seconds; return the kinds of the records produced."""
    kinds = []
    now = start
    for value in values:
        for record in rules.process(sensor, value, now):
            kinds.append(record["kind"])
        now += step
    return kinds


def test_above_alerts_once_then_back_to_normal():
    rules = make_rules([{"name": "hot", "sensor": "temp", "above": 30, "hysteresis": 2}])
    assert feed(rules, "temp", [25, 31, 35, 33, 29, 27.5, 26]) == ["alert", "normal"]


def test_hysteresis_keeps_alert_open_inside_band():
    rules = make_rules([{"name": "hot", "sensor": "temp", "above": 30, "hysteresis": 2}])
    assert feed(rules, "temp", [31, 29, 28.5, 31, 29]) == ["alert"]
    assert rules.active() == ["hot"]
    assert feed(rules, "temp", [28], start=T0 + 600) == ["normal"]


def test_zero_hysteresis_clears_at_threshold():
    rules = make_rules([{"name": "hot", "sensor": "temp", "above": 30}])
    assert feed(rules, "temp", [30.5, 30, 30.5]) == ["alert", "normal", "alert"]


def test_below_threshold_with_hysteresis():
    rules = make_rules([{"name": "frost", "sensor": "temp", "below": 2, "hysteresis": 1}])
    assert feed(rules, "temp", [5, 1.5, 2.5, 3, 1]) == ["alert", "normal", "alert"]


def test_alert_record_fields():
    rules = make_rules([{"name": "hot", "sensor": "temp", "above": 30}])
    feed(rules, "temp", [20, 21])
    records = rules.process("temp", 32.5, T0 + 300)
    assert len(records) == 1
    record = records[0]
    assert record["kind"] == "alert"
    assert record["rule"] == "hot"
    assert record["sensor"] == "temp"
    assert record["value"] == 32.5
    assert record["threshold"] == 30
    assert record["condition"] == "above"
    assert record["unit"] == "C"
    assert record["time"] == T0 + 300
    assert record["readings"] == [[T0, 20], [T0 + 60, 21], [T0 + 300, 32.5]]


def test_history_keeps_last_readings():
    rules = make_rules([{"name": "hot", "sensor": "temp", "above": 30}])
    feed(rules, "temp", [1, 2, 3, 4, 5, 6, 7])
    records = rules.process("temp", 40, T0 + 1000)
    assert [value for _, value in records[0]["readings"]] == [4, 5, 6, 7, 40]


def test_digital_state_alert_and_normal():
    rules = make_rules([{"name": "leak", "sensor": "door", "state": 1}])
    assert feed(rules, "door", [0, 0, 1, 1, 0, 1]) == ["alert", "normal", "alert"]


def test_digital_change_reports_each_change():
    rules = make_rules([{"name": "door", "sensor": "door", "on_change": True}])
    assert feed(rules, "door", [0, 1, 1, 0, 0, 1]) == ["change", "change", "change"]


def test_first_reading_in_alarm_alerts():
    rules = make_rules([{"name": "hot", "sensor": "temp", "above": 30}])
    assert feed(rules, "temp", [40]) == ["alert"]


def test_min_interval_holds_back_repeat_alert():
    rules = make_rules([{"name": "hot", "sensor": "temp", "above": 30, "min_interval_s": 3600}])
    # Alert at T0, normal, alert again 2 and 4 minutes later: held back with its normal.
    assert feed(rules, "temp", [31, 29, 31, 29, 31, 29]) == ["alert", "normal"]
    assert rules.rules[0].skipped == 2
    later = rules.process("temp", 35, T0 + 3600)
    assert [record["kind"] for record in later] == ["alert"]
    assert later[0]["skipped"] == 2
    assert rules.rules[0].skipped == 0


def test_min_interval_applies_per_rule():
    rules = make_rules(
        [
            {"name": "hot", "sensor": "temp", "above": 30, "min_interval_s": 3600},
            {"name": "very-hot", "sensor": "temp", "above": 40},
        ]
    )
    kinds = feed(rules, "temp", [31, 29, 45, 29])
    assert kinds == ["alert", "normal", "alert", "normal"]


def test_hourly_cap_suppresses_and_digest_follows():
    rules = make_rules(
        [{"name": "door", "sensor": "door", "on_change": True}], alerts={"max_per_hour": 3, "history": 5}
    )
    kinds = feed(rules, "door", [0, 1, 0, 1, 0, 1, 0], step=60)
    assert kinds == ["change", "change", "change"]
    assert rules.limit.suppressed_count == 3
    assert rules.tick(T0 + 1800) == []
    digest = rules.tick(T0 + 3600 + 60)
    assert len(digest) == 1
    assert digest[0]["kind"] == "digest"
    assert digest[0]["count"] == 3
    assert len(digest[0]["items"]) == 3
    assert "change door 0" in digest[0]["items"][0]
    assert rules.tick(T0 + 3700) == []


def test_digest_lists_at_most_twenty_items():
    rules = make_rules(
        [{"name": "door", "sensor": "door", "on_change": True}], alerts={"max_per_hour": 1, "history": 5}
    )
    feed(rules, "door", [0, 1] * 15, step=10)
    digest = rules.tick(T0 + 2 * 3600)[0]
    assert digest["count"] == 28
    assert len(digest["items"]) == 20


def test_capped_alert_sends_its_normal_to_digest():
    rules = make_rules(
        [{"name": "door", "sensor": "door", "on_change": True}, {"name": "hot", "sensor": "temp", "above": 30}],
        alerts={"max_per_hour": 1, "history": 5},
    )
    assert feed(rules, "door", [0, 1]) == ["change"]
    assert feed(rules, "temp", [35, 20], start=T0 + 200) == []
    assert rules.limit.suppressed_count == 2
    assert " alert hot " in rules.limit.suppressed[0]
    assert " normal hot " in rules.limit.suppressed[1]


def test_sensor_failure_alert_and_recovery():
    rules = make_rules([{"name": "hot", "sensor": "temp", "above": 30}])
    assert rules.process("temp", None, T0, error="timeout") == []
    assert rules.process("temp", None, T0 + 60, error="timeout") == []
    failed = rules.process("temp", None, T0 + 120, error="timeout")
    assert [record["kind"] for record in failed] == ["sensor_failed"]
    assert failed[0]["error"] == "timeout"
    assert rules.process("temp", None, T0 + 180, error="timeout") == []
    recovered = rules.process("temp", 20, T0 + 240)
    assert [record["kind"] for record in recovered] == ["sensor_ok"]


def test_heartbeat_daily():
    rules = make_rules([{"name": "hot", "sensor": "temp", "above": 30}], alerts={"heartbeat_h": 24, "history": 5})
    feed(rules, "temp", [21])
    assert rules.tick(T0) == []
    assert rules.tick(T0 + 23 * 3600) == []
    beats = rules.tick(T0 + 24 * 3600)
    assert len(beats) == 1
    assert beats[0]["kind"] == "heartbeat"
    assert ["temp", 21, "C"] in beats[0]["values"]
    assert rules.tick(T0 + 25 * 3600) == []
    assert len(rules.tick(T0 + 48 * 3600)) == 1


def test_heartbeat_off_by_default():
    rules = make_rules([], alerts={"history": 5})
    assert rules.tick(T0) == []
    assert rules.tick(T0 + 100 * 3600) == []


def test_state_survives_restore():
    spec = [{"name": "hot", "sensor": "temp", "above": 30, "hysteresis": 2}]
    before = make_rules(spec, alerts={"max_per_hour": 2, "heartbeat_h": 1, "history": 5})
    feed(before, "temp", [20, 31])
    before.tick(T0)
    import json

    saved = json.loads(json.dumps(before.state()))
    after = make_rules(spec, alerts={"max_per_hour": 2, "heartbeat_h": 1, "history": 5})
    after.restore(saved)
    assert after.active() == ["hot"]
    assert after.process("temp", 32, T0 + 200) == []
    normal = after.process("temp", 27, T0 + 260)
    assert [record["kind"] for record in normal] == ["normal"]
    assert normal[0]["readings"][0] == [T0, 20]
    # The cap of 2 is used up by the restored alert and this normal.
    assert after.limit.allow(T0 + 300) is False
    assert after.tick(T0 + 3600)[0]["kind"] == "heartbeat"


def rule_state_path():
    """Return a file name of this process under /tmp, with no file there yet."""
    import os

    # pytest and the MicroPython run of these tests may run at the same time.
    path = "/tmp/alerts-rule-state-test-%d.json" % (os.getpid() if hasattr(os, "getpid") else 0)
    remove_file(path)
    return path


def remove_file(path):
    import os

    try:
        os.remove(path)
    except OSError:
        pass


def test_rule_state_file_survives_reset():
    from alerts.rulestate import RuleState

    path = rule_state_path()
    spec = [{"name": "hot", "sensor": "temp", "above": 30, "hysteresis": 2, "min_interval_s": 600}]
    before = make_rules(spec)
    saved = RuleState(before, path)
    assert feed(before, "temp", [20, 31]) == ["alert"]
    assert saved.save() is True
    # Another reading inside the alert changes no decision, so nothing is written.
    feed(before, "temp", [32], start=T0 + 120)
    assert saved.save() is False

    after = make_rules(spec)
    assert RuleState(after, path).load() is True
    assert after.active() == ["hot"]
    assert after.rules[0].last_sent == T0 + 60
    assert feed(after, "temp", [33, 27], start=T0 + 300) == ["normal"]
    # min_interval_s still counts from the alert sent before the reset.
    assert feed(after, "temp", [31], start=T0 + 400) == []
    remove_file(path)


def test_rule_state_missing_or_broken_file():
    from alerts.rulestate import RuleState

    path = rule_state_path()
    rules = make_rules([{"name": "hot", "sensor": "temp", "above": 30}])
    assert RuleState(rules, path).load() is False
    with open(path, "w") as file:
        file.write('{"rules": ')
    assert RuleState(rules, path).load() is False
    assert rules.active() == []
    remove_file(path)


def test_rule_state_from_unset_clock_keeps_open_alert():
    import json

    from alerts.rulestate import RuleState

    path = rule_state_path()
    unset = 946684800 + 300  # saved before NTP, in an earlier boot
    state = {"rules": {"hot": [True, True, False, unset, 0, None]}, "sent": [unset], "timeline": "0badc0de"}
    with open(path, "w") as file:
        file.write(json.dumps(state))
    rules = make_rules([{"name": "hot", "sensor": "temp", "above": 30}])
    assert RuleState(rules, path).load() is True
    assert rules.active() == ["hot"]
    assert rules.rules[0].last_sent is None
    assert rules.limit.sent == []
    remove_file(path)


def test_rule_state_wrong_shape_starts_fresh():
    from alerts.rulestate import RuleState

    path = rule_state_path()
    spec = [{"name": "hot", "sensor": "temp", "above": 30, "hysteresis": 2}]
    shapes = (
        '{"sent": 5}',
        '{"rules": {"hot": [true, 1, 0, 5, 0, null]}, "history": {"temp": [1, 2]}}',
        '{"rules": {"hot": 7}}',
        '{"failures": 3}',
    )
    for text in shapes:
        with open(path, "w") as file:
            file.write(text)
        rules = make_rules(spec)

        assert RuleState(rules, path).load() is False, text
        assert rules.active() == [], text
        assert feed(rules, "temp", [20, 31]) == ["alert"], text
    remove_file(path)
