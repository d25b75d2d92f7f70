"""`microsmtp testserver`: the local server that `microsmtp send` and a board can try sends against."""

import base64
import email
import email.policy
import logging
import os
import signal
import socket
import subprocess
import sys

import pytest

import unix_port

PASSWORD = "test-Pa55word"
TIMEOUT_S = 120


def start_server(tmp_path, *arguments, password=PASSWORD, address="127.0.0.1"):
    env = os.environ.copy()
    env.pop("SMTP_PASSWORD", None)
    if password is not None:
        env["SMTP_PASSWORD"] = password
    command = [sys.executable, "-m", "microsmtp_tools.cli", "testserver", "--port", "0", "--dir", str(tmp_path / "ts")]
    process = subprocess.Popen(
        [*command, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("  try: "):
            break
    assert lines and lines[0].startswith("microsmtp testserver: listening on %s:" % address), lines
    port = int(lines[0].split(address + ":")[1].split()[0])
    return process, port, lines


def stop_server(process):
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=TIMEOUT_S)
    return process.returncode, out, err


def send(port, runtime, *extra, password=PASSWORD, ca, host="127.0.0.1"):
    env = os.environ.copy()
    env["SMTP_PASSWORD"] = password
    command = [
        sys.executable,
        "-m",
        "microsmtp_tools.cli",
        "send",
        "--host",
        host,
        "--port",
        str(port),
        "--ca",
        str(ca),
        "--user",
        "test@example.com",
        "--from",
        "Freezer <test@example.com>",
        "--to",
        "you@example.com",
        "--subject",
        "Freezer at -5 C",
        "--body",
        "hello from %s" % runtime,
        "--runtime",
        runtime,
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)


@pytest.mark.parametrize("tls", [False, True], ids=["starttls", "implicit-tls"])
def test_sends_from_both_runtimes_saved(tmp_path, tls):
    process, port, lines = start_server(tmp_path, *(["--tls"] if tls else []))
    try:
        assert "  password: from SMTP_PASSWORD" in lines
        assert PASSWORD not in "\n".join(lines)
        ca = tmp_path / "ts" / "ca.pem"
        assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
        security = ["--security", "tls"] if tls else []
        for runtime in ("cpython", "micropython"):
            result = send(port, runtime, *security, ca=ca)
            assert result.returncode == 0, result.stderr
        wrong = send(port, "cpython", *security, password="wrong", ca=ca)
        assert wrong.returncode == 69, wrong.stderr
        assert "authentication failed: 535" in wrong.stderr
    finally:
        status, out, err = stop_server(process)
    assert status == 0, err
    received = [line for line in out.splitlines() if line.startswith("received ")]
    assert len(received) == 2, out
    assert received[0].endswith("001.eml: from test@example.com to you@example.com (user test@example.com)"), out
    assert out.splitlines()[-1] == "microsmtp testserver: stopped after 2 message(s)"
    bodies = []
    for name in ("001.eml", "002.eml"):
        message = email.message_from_bytes((tmp_path / "ts" / "mail" / name).read_bytes(), policy=email.policy.default)
        assert message["Subject"] == "Freezer at -5 C"
        bodies.append(message.get_content().strip())
    assert bodies == ["hello from cpython", "hello from micropython"]


def test_password_made_when_unset(tmp_path):
    process, port, lines = start_server(tmp_path, password=None)
    try:
        password_lines = [line for line in lines if line.startswith("  password: ")]
        assert len(password_lines) == 1
        assert password_lines[0].endswith("(made for this run; export SMTP_PASSWORD to choose one)")
        password = password_lines[0].split()[1]
        assert len(password) >= 16
        result = send(port, "cpython", password=password, ca=tmp_path / "ts" / "ca.pem")
        assert result.returncode == 0, result.stderr
    finally:
        status, out, err = stop_server(process)
    assert status == 0, err
    # A second run in the same folder keeps the first run's message.
    process, port, lines = start_server(tmp_path)
    try:
        result = send(port, "cpython", ca=tmp_path / "ts" / "ca.pem")
        assert result.returncode == 0, result.stderr
    finally:
        stop_server(process)
    assert sorted(path.name for path in (tmp_path / "ts" / "mail").iterdir()) == ["001.eml", "002.eml"]


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("0.0.0.0", "--listen must be one address, not 0.0.0.0: give this PC's address on the LAN"),
        ("example.com", "--listen must be an IP address such as 127.0.0.1, not 'example.com'"),
    ],
)
def test_listen_needs_one_ip_address(tmp_path, listen, problem):
    command = [sys.executable, "-m", "microsmtp_tools.cli", "testserver", "--listen", listen, "--dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=unix_port.REPO_DIR)
    assert result.returncode == 78, result.stderr
    assert result.stderr.strip() == "microsmtp testserver: error: " + problem


def test_second_message_gets_its_own_number(tmp_path):
    process, port, lines = start_server(tmp_path)
    try:
        ca = tmp_path / "ts" / "ca.pem"
        first = send(port, "cpython", "--transcript", ca=ca)
        second = send(port, "cpython", "--transcript", ca=ca)
    finally:
        stop_server(process)
    assert "queued as 1" in first.stderr, first.stderr
    assert "queued as 2" in second.stderr, second.stderr


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_listens_on_ipv6_loopback(tmp_path):
    process, port, lines = start_server(tmp_path, "--listen", "::1", address="::1")
    try:
        assert "  certificate names: localhost, ::1 (give one as --server-name or smtp.server_name)" in lines
        result = send(port, "cpython", ca=tmp_path / "ts" / "ca.pem", host="::1")
        assert result.returncode == 0, result.stderr
    finally:
        status, out, err = stop_server(process)
    assert status == 0, err


def test_unknown_command_line_is_not_logged():
    from microsmtp_tools.common import hide_unknown_commands

    credential = base64.b64encode(b"S3cretPW-xyz").decode().upper()
    record = logging.LogRecord(
        "mail.log", logging.WARNING, "", 0, "%r unrecognised: %s", (("::1", 5), credential), None
    )
    assert hide_unknown_commands(record)
    assert credential not in record.getMessage()
    assert record.getMessage() == "('::1', 5) unrecognised: (a line that is no command, not shown)"
    verb = logging.LogRecord("mail.log", logging.WARNING, "", 0, "%r unrecognised: %s", (("::1", 5), "XYZZY"), None)
    assert hide_unknown_commands(verb)
    assert verb.getMessage() == "('::1', 5) unrecognised: XYZZY"
    warning = "Requiring AUTH while not requiring TLS can lead to security vulnerabilities!"
    assert not hide_unknown_commands(logging.LogRecord("mail.log", logging.WARNING, "", 0, warning, (), None))
