"""One-line event log on the console: "<UTC time> <level> <message>"."""

import gc

from . import clock


def free_bytes():
    """Return the free GC heap in bytes for a log line, or -1 where the runtime cannot tell (CPython)."""
    return gc.mem_free() if hasattr(gc, "mem_free") else -1


def _write(level, message):
    try:
        print("%s %s %s" % (clock.format_utc(clock.now())[:19], level, message))
    except MemoryError:
        # A full heap must not turn a logged failure into a reset. So collect, then
        # print the parts without joining them, or drop the line.
        gc.collect()
        try:
            print(level, message)
        except MemoryError:
            pass


def info(message):
    _write("INFO", message)


def warning(message):
    _write("WARN", message)


def error(message):
    _write("ERROR", message)
