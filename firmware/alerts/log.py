"""One-line event log on the console: "<UTC time> <level> <message>"."""

from . import clock


def _write(level, message):
    try:
        print("%s %s %s" % (clock.format_utc(clock.now())[:19], level, message))
    except MemoryError:
        # A full heap must not turn a logged failure into a reset: collect, then print
        # the parts without joining them, or drop the line.
        import gc

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
