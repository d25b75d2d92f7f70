"""Test helpers that work on CPython and on MicroPython alike."""

import os
import random


def raises(exc_type, func, *args, **kwargs):
    """Call func and return the exc_type it raised; fail if it raised nothing."""
    try:
        func(*args, **kwargs)
    except exc_type as exc:
        return exc
    raise AssertionError("expected %s from %s" % (exc_type.__name__, func))


def splits(data, seed=1, rounds=5):
    """Yield lists of chunks that join to data: whole, byte by byte, then random splits."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(seed) if hasattr(random, "Random") else None
    if rng is None:
        random.seed(seed)
        rng = random
    for _ in range(rounds):
        chunks = []
        start = 0
        while start < len(data):
            size = rng.randint(1, 17)
            chunks.append(data[start : start + size])
            start += size
        yield chunks


def listdir(path):
    """Return the names in a directory, on both runtimes."""
    if hasattr(os, "ilistdir"):
        return [entry[0] for entry in os.ilistdir(path)]
    return os.listdir(path)


def remove_tree(path):
    """Remove a directory and everything in it; a missing directory is not an error."""
    try:
        names = listdir(path)
    except OSError:
        return
    for name in names:
        child = path + "/" + name
        try:
            os.remove(child)
        except OSError:
            remove_tree(child)
    os.rmdir(path)


_created = [0]


class FixedClock:
    """A context manager that replaces alerts.clock.now() with a settable time."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        from alerts import clock

        self.saved = clock.now
        clock.now = lambda: self.seconds
        return self

    def __exit__(self, *args):
        from alerts import clock

        clock.now = self.saved


def fresh_directory(prefix):
    """Return a new empty directory /tmp/PREFIX-PID-N (both runtimes have /tmp on the test hosts).

    The MicroPython unix port has no getpid(), so its runs reuse the same names: what an
    earlier run left there is removed first.
    """
    _created[0] += 1
    path = "/tmp/%s-%d-%d" % (prefix, os.getpid() if hasattr(os, "getpid") else 0, _created[0])
    remove_tree(path)
    os.mkdir(path)
    return path
