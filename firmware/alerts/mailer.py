"""Turn outbox entries into email messages: subject, text and a CSV of recent readings."""

from . import clock
from .rules_restore import correct_times


def _value(value, unit):
    if value is None:
        return "none"
    if isinstance(value, float):
        value = "%.2f" % value
        value = value.rstrip("0").rstrip(".") if "." in value else value
    return ("%s %s" % (value, unit)).strip()


def _what(alert):
    """Return (subject text, what-happened sentence) for an alert record."""
    kind = alert["kind"]
    sensor = alert.get("sensor")
    value = _value(alert.get("value"), alert.get("unit") or "")
    threshold = _value(alert.get("threshold"), alert.get("unit") or "")
    condition = alert.get("condition")
    if kind == "alert" and condition in ("above", "below"):
        text = "%s is %s, %s the threshold of %s" % (sensor, value, condition, threshold)
        return "ALERT %s: %s" % (alert["rule"], text), text
    if kind == "alert":
        text = "%s is in state %s" % (sensor, value)
        return "ALERT %s: %s" % (alert["rule"], text), text
    if kind == "normal":
        text = "%s is back to normal at %s (threshold %s)" % (sensor, value, threshold)
        return "back to normal %s: %s" % (alert["rule"], text), text
    if kind == "change":
        text = "%s changed to %s" % (sensor, value)
        return "%s: %s" % (alert["rule"], text), text
    if kind == "sensor_failed":
        text = "sensor %s failed %d reads in a row: %s" % (sensor, alert.get("failures", 0), alert.get("error"))
        return "sensor %s failed" % sensor, text
    if kind == "sensor_ok":
        text = "sensor %s reads again: %s" % (sensor, value)
        return "sensor %s reads again" % sensor, text
    if kind == "digest":
        text = "%d alert emails were suppressed by the cap on emails per hour" % alert.get("count", 0)
        return "digest: " + text, text
    if kind == "heartbeat":
        active = alert.get("active") or []
        text = "heartbeat: %s" % ("active rules: " + ", ".join(active) if active else "all rules normal")
        return text, text
    return kind, kind


# Stands in for the time of an alert made before NTP set the clock, in an earlier boot.
UNKNOWN_TIME = "unknown (clock not set)"


def _time(alert):
    """Return the alert's time as "2026-01-15 08:05:00 UTC", or UNKNOWN_TIME."""
    seconds = alert.get("time")
    if seconds is None or alert.get("timeline") is not None:
        return UNKNOWN_TIME
    return clock.format_utc(seconds)


def _notes(report):
    """Return text lines about set-aside and dropped alerts for the next email."""
    if report is None:
        return []
    _, entries, dropped = report
    lines = []
    if entries:
        lines.append("")
        lines.append("%d earlier alert(s) could not be sent and were set aside:" % len(entries))
        for entry in entries:
            alert = entry["alert"]
            correct_times(alert)
            lines.append(
                "- %s, %s: server replied: %s" % (_time(alert), _what(alert)[0], entry.get("reply", "unknown"))
            )
    if dropped:
        lines.append("")
        lines.append("%d older alert(s) were dropped because the outbox was full." % dropped)
    return lines


def build_message(entry, config, report=None):
    """Return a microsmtp Message for an outbox entry; report adds set-aside and drop notes."""
    from microsmtp.message import Attachment, Message

    alert = entry["alert"]
    correct_times(alert)
    device = config["device"]
    subject, what = _what(alert)
    unit = alert.get("unit") or ""
    time_text = _time(alert)
    lines = [
        "What happened: " + what,
        "Device: " + device,
        "Time: " + time_text,
    ]
    if alert.get("rule"):
        lines.append("Rule: " + alert["rule"])
    if alert.get("value") is not None:
        lines.append("Value: " + _value(alert["value"], unit))
    if alert.get("threshold") is not None:
        condition = alert.get("condition")
        lines.append(
            "Threshold: %s%s" % ("" if condition == "state" else condition + " ", _value(alert["threshold"], unit))
        )
    if alert.get("skipped"):
        lines.append("Held back by min_interval_s since the last email of this rule: %d" % alert["skipped"])
    for item in alert.get("items") or ():
        lines.append("- " + item)
    if alert.get("kind") == "digest" and alert.get("count", 0) > len(alert.get("items") or ()):
        lines.append("- and %d more" % (alert["count"] - len(alert["items"])))
    for name, value, value_unit in alert.get("values") or ():
        lines.append("%s: %s" % (name, _value(value, value_unit)))
    lines.extend(_notes(report))
    if entry.get("attempts"):
        lines.append("")
        lines.append("Sent after %d failed attempt(s)." % entry["attempts"])
    attachments = ()
    readings = alert.get("readings")
    if readings:
        from .history import to_csv

        attachments = [Attachment("readings.csv", to_csv(readings, unit), "text/csv")]
    smtp = config["smtp"]
    return Message(
        smtp["from"],
        smtp["to"],
        subject="[%s] %s" % (device, subject),
        text="\n".join(lines) + "\n",
        attachments=attachments,
        # An alert whose time is unknown is dated when it is sent.
        date=clock.gmtime(clock.now() if time_text == UNKNOWN_TIME else alert["time"]),
        message_id=entry["id"],
        headers=[("X-Alert-Kind", alert["kind"])],
    )
