"""Test helpers that work on CPython and on MicroPython alike."""

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
