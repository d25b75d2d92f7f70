"""One-line event log on the console: "<UTC time> <level> <message>"."""

from . import clock


def _write(level, message):
    print("%s %s %s" % (clock.format_utc(clock.now())[:19], level, message))


def info(message):
    _write("INFO", message)


def warning(message):
    _write("WARN", message)


def error(message):
    _write("ERROR", message)
