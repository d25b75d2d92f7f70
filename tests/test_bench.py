"""`microsmtp bench --quick`: the output has every figure, each a plausible number.

Only counts and sizes are checked, never durations.
"""

import contextlib
import io
import logging
import re

import pytest

from microsmtp_tools import bench, cli

CLIENTS = ("microsmtp (CPython)", "microsmtp (MicroPython, .mpy)", "smtplib (CPython)", "aiosmtplib (CPython)")


class RecordList(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def run():
    """Run the bench once; return (stdout, records logged on aiosmtpd's "mail.log" logger)."""
    stream = io.StringIO()
    # A handler on the logger itself receives only the records that pass its filters.
    handler = RecordList()
    logger = logging.getLogger("mail.log")
    logger.addHandler(handler)
    try:
        with contextlib.redirect_stdout(stream):
            status = cli.main(["bench", "--quick", "--rtt", "10"])
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert status == 0, text
    return text, handler.records


@pytest.fixture(scope="module")
def output(run, micropython):
    return run[0]


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
    rows = section(output, "round trips, one alert, STARTTLS")

    assert set(rows) == set(CLIENTS)
    # At least: connection, EHLO, STARTTLS, TLS handshake, AUTH, MAIL..DATA, content.
    for name, trips in rows.items():
        assert 6 <= trips <= 20, (name, trips)


def test_round_trips_for_flush(output):
    single = section(output, "round trips, one alert, STARTTLS")
    flush = section(output, "round trips, flush of 5 queued messages, one session, STARTTLS")

    assert set(flush) == set(CLIENTS)
    for name, trips in flush.items():
        # One session: the setup is paid once, each further message adds 1 to 4 trips.
        assert single[name] + 4 <= trips <= single[name] + 4 * 4, (name, single[name], trips)


def test_round_trips_implicit_tls(output):
    implicit = section(output, "round trips, one alert, implicit TLS")
    starttls = section(output, "round trips, one alert, STARTTLS")

    assert set(implicit) == set(CLIENTS)
    for name, trips in implicit.items():
        # No plaintext EHLO and no STARTTLS, but the greeting waits for the end of the
        # TLS handshake: at least one wait fewer than STARTTLS.
        assert 4 <= trips < starttls[name], (name, trips, starttls[name])


def test_headroom_figure(output, heap_k):
    match = re.search(r"heap one alert needs on top of the loaded library: (\d+) bytes \(steps of 4096\)", output)

    assert match, output
    # A TLS session and one message need some KB; loading the library is not part of it.
    assert 4096 <= int(match.group(1)) < heap_k * 1024, output


@pytest.fixture(scope="module")
def heap_k(output):
    match = re.search(r"heap for one verified alert \(unix port, \.mpy, STARTTLS \+ AUTH\): (\d+)K", output)
    assert match, output
    return int(match.group(1))


def test_heap_figure(output):
    match = re.search(
        r"heap for one verified alert \(unix port, \.mpy, STARTTLS \+ AUTH\): (\d+)K \(steps of 16K\)", output
    )

    assert match, output
    assert 16 <= int(match.group(1)) <= 512


def test_bare_exchange_figure(output, heap_k):
    match = re.search(
        r"heap for a bare hand-written asyncio STARTTLS exchange: (\d+)K, (\d+) bytes on top of asyncio and ssl", output
    )

    assert match, output
    # The bare exchange loads no library: it fits where the library's alert fits.
    assert 16 <= int(match.group(1)) <= heap_k, output
    assert 4096 <= int(match.group(2)) < int(match.group(1)) * 1024, output


def test_mpy_sizes(output):
    whole = output[output.index(".mpy size of the library") : output.index(".mpy size of the modules one alert loads")]
    sizes = dict(re.findall(r"^  (xtensawin|armv6m|source)\s+(\d+) bytes$", whole, re.MULTILINE))

    assert set(sizes) == {"xtensawin", "armv6m", "source"}
    for arch in ("xtensawin", "armv6m"):
        assert 5000 < int(sizes[arch]) < int(sizes["source"]), sizes


def test_mpy_size_of_alert_path(output):
    match = re.search(r"^\.mpy size of the modules one alert loads \((.+)\):$", output, re.MULTILINE)
    assert match, output
    modules = match.group(1).split(", ")
    whole = dict(re.findall(r"^  (xtensawin|armv6m)\s+(\d+) bytes$", output[: match.start()], re.MULTILINE))
    alert = dict(re.findall(r"^  (xtensawin|armv6m)\s+(\d+) bytes$", output[match.end() :], re.MULTILINE))

    assert "microsmtp.session" in modules
    assert "microsmtp.client" in modules
    # The rare paths and MIME parts stay unloaded for a plain-text alert.
    assert "microsmtp.session_rare" not in modules
    assert "microsmtp.mime" not in modules
    for arch in ("xtensawin", "armv6m"):
        assert 0 < int(alert[arch]) < int(whole[arch]), (alert, whole)


def test_versions_labelled(output, micropython):
    lines = output.splitlines()

    runtime = [line for line in lines if line.startswith("MicroPython unix port (%s): " % micropython)]
    compiler = [line for line in lines if line.startswith("mpy-cross (compiles the .mpy files): ")]
    assert len(runtime) == 1, output
    assert len(compiler) == 1, output
    assert runtime[0].endswith(bench.micropython_version(micropython))
    assert re.search(r": MicroPython \d+\.\d+\.\d+(-\w+)?; ", runtime[0]), runtime[0]
    assert "mpy-cross emitting mpy v6" in compiler[0]


def test_micropython_version_from_runtime(micropython):
    import subprocess

    version = bench.micropython_version(micropython)
    banner = subprocess.run(
        [micropython, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, timeout=30
    ).stdout.strip()

    assert version.startswith("MicroPython "), version
    # The build line of sys.version ("MicroPython HASH on DATE") is part of the text.
    assert banner.split("; ", 1)[1] in version, (banner, version)


def test_login_data_log_hidden(run):
    messages = [record.getMessage() for record in run[1]]

    assert not [message for message in messages if "login_data is deprecated" in message], messages


def test_login_data_filter_only_that_message():
    login_data_filter = bench.LoginDataFilter()

    def record(message):
        return logging.LogRecord("mail.log", logging.WARNING, __file__, 1, message, None, None)

    assert not login_data_filter.filter(record("Session.login_data is deprecated and will be removed in version 2.0"))
    assert login_data_filter.filter(record("auth_required == True but auth_require_tls == False"))
    assert login_data_filter.filter(record("%s:%d EOF received"))


def test_library_labelled_as_mpy(output):
    assert "library on MicroPython: .mpy files" in output.splitlines(), output


def test_frozen_packages_only_from_the_image(micropython, monkeypatch):
    from microsmtp_tools import common

    # The PyPI unix port has asyncio frozen in. The library is only on MICROPYPATH,
    # which does not count.
    monkeypatch.setenv("MICROPYPATH", str(common.FIRMWARE_DIR))

    assert common.frozen_packages(micropython, ["asyncio", "microsmtp"]) == ["asyncio"]


def test_bench_needs_a_micropython(tmp_path, capsys):
    status = cli.main(["bench", "--quick", "--micropython", str(tmp_path / "none")])

    assert status == 78
    assert "is not an executable file" in capsys.readouterr().err


def test_given_micropython_relative_name_is_in_current_folder(micropython, tmp_path, monkeypatch):
    from microsmtp_tools import common

    (tmp_path / "mp").symlink_to(micropython)
    monkeypatch.chdir(tmp_path)

    assert common.given_micropython("mp", "checking") == str(tmp_path / "mp")


def test_given_micropython_rejects_other_programs(tmp_path):
    from microsmtp_tools import common

    binary_output = tmp_path / "binary-output"
    binary_output.write_text("#!/bin/sh\nprintf '\\377\\376'\n")
    binary_output.chmod(0o755)

    with pytest.raises(common.ToolError) as raised:
        common.given_micropython(str(binary_output), "checking")
    assert "is not a MicroPython unix port (exit status 0" in raised.value.message


def test_run_briefly_kills_what_the_command_started(tmp_path):
    import os
    import subprocess

    from microsmtp_tools import common

    started = tmp_path / "started"
    # The shell starts a child that outlives it unless the whole group is killed.
    command = ["sh", "-c", "sleep 60 & echo $! > %s; wait" % started]

    with pytest.raises(subprocess.TimeoutExpired):
        common.run_briefly(command, timeout=1)

    child = int(started.read_text())
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        # A killed child is gone once init has reaped it.
        subprocess.run(["sleep", "0.05"])
    else:
        pytest.fail("the command's child %d still runs" % child)
