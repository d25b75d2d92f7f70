"""`microsmtp bench --quick`: the output has every figure, each a plausible number.

Only counts and sizes are checked, never durations.
"""

import re

import pytest

from microsmtp_tools import cli

CLIENTS = ("microsmtp (CPython)", "microsmtp (MicroPython, .mpy)", "smtplib (CPython)", "aiosmtplib (CPython)")


@pytest.fixture(scope="module")
def output(micropython):
    import contextlib
    import io

    stream = io.StringIO()
    with contextlib.redirect_stdout(stream):
        status = cli.main(["bench", "--quick", "--rtt", "10"])
    text = stream.getvalue()
    assert status == 0, text
    return text


def section(text, title):
    start = text.index(title)
    lines = text[start:].splitlines()[1:]
    rows = {}
    for line in lines:
        match = re.match(r"  (.+?)\s+(\d+) round trips", line)
        if not match:
            break
        rows[match.group(1)] = int(match.group(2))
    return rows


def test_round_trips_per_alert(output):
    rows = section(output, "round trips, one alert")

    assert set(rows) == set(CLIENTS)
    # At least: connection, EHLO, STARTTLS, TLS handshake, AUTH, MAIL..DATA, content.
    for name, trips in rows.items():
        assert 6 <= trips <= 20, (name, trips)


def test_round_trips_for_flush(output):
    single = section(output, "round trips, one alert")
    flush = section(output, "round trips, flush of 5 queued messages")

    assert set(flush) == set(CLIENTS)
    for name, trips in flush.items():
        # One session: the setup is paid once, each further message adds 1 to 4 trips.
        assert single[name] + 4 <= trips <= single[name] + 4 * 4, (name, single[name], trips)


def test_heap_figure(output):
    match = re.search(
        r"heap for one verified alert \(unix port, \.mpy, STARTTLS \+ AUTH\): (\d+)K \(steps of 16K\)", output
    )

    assert match, output
    assert 16 <= int(match.group(1)) <= 512


def test_mpy_sizes(output):
    sizes = dict(re.findall(r"^  (xtensawin|armv6m|source)\s+(\d+) bytes$", output, re.MULTILINE))

    assert set(sizes) == {"xtensawin", "armv6m", "source"}
    for arch in ("xtensawin", "armv6m"):
        assert 5000 < int(sizes[arch]) < int(sizes["source"]), sizes
