"""`microsmtp sim` end to end: the firmware on the virtual board delivers its alerts.

The scenarios run faster than in `make sim` (--speed), which changes only how much
real time a simulated second takes.
"""

import email
import email.policy
import os
import subprocess
import sys

import pytest

import unix_port

SCENARIOS = unix_port.REPO_DIR / "tools" / "microsmtp_tools" / "scenarios"


def run_sim(tmp_path, *arguments, env=None):
    command = [sys.executable, "-m", "microsmtp_tools.cli", "sim", "--output", str(tmp_path / "eml"), *arguments]
    process = subprocess.run(
        command, capture_output=True, text=True, timeout=240, env=env or os.environ.copy(), cwd=unix_port.REPO_DIR
    )
    return process


def read_eml(path):
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def test_default_scenario_delivers_alert_and_normal(micropython, tmp_path):
    process = run_sim(tmp_path, "--speed", "240")
    output = unix_port.format_output(process)
    assert process.returncode == 0, output
    assert "OK: every expected email arrived" in process.stdout, output
    files = sorted((tmp_path / "eml").glob("default-*.eml"))
    assert len(files) == 2, output
    alert = read_eml(files[0])
    normal = read_eml(files[1])
    assert "ALERT greenhouse-hot" in alert["Subject"]
    assert "back to normal greenhouse-hot" in normal["Subject"]
    body = alert.get_body(("plain",)).get_content()
    assert "Device: sim-board" in body
    assert "Threshold: above 35 C" in body
    assert "Value: 37.5 C" in body
    assert " UTC" in body
    attachments = list(alert.iter_attachments())
    assert [part.get_filename() for part in attachments] == ["readings.csv"]
    csv = attachments[0].get_content()
    csv = csv.decode() if isinstance(csv, bytes) else csv
    assert csv.splitlines()[0] == "time_utc,value_C"
    assert csv.splitlines()[-1].endswith(",37.5")
    # The transcript is printed with AUTH redacted and the password nowhere.
    assert "--> AUTH PLAIN <redacted>" in process.stdout, output
    assert "--> STARTTLS" in process.stdout


def test_server_down_scenario_queues_then_delivers(micropython, tmp_path):
    process = run_sim(tmp_path, "--scenario", str(SCENARIOS / "server_down.json"), "--speed", "200")
    output = unix_port.format_output(process)
    assert process.returncode == 0, output
    assert "SMTP server down" in process.stdout
    assert "ECONNREFUSED" in process.stdout, output
    files = sorted((tmp_path / "eml").glob("server_down-*.eml"))
    subjects = [read_eml(path)["Subject"] for path in files]
    assert len(subjects) == 4, output
    assert "ALERT freezer-warm" in subjects[0]
    assert "ALERT door-open" in subjects[1]
    assert "back to normal door-open" in subjects[2]
    assert "back to normal freezer-warm" in subjects[3]


def test_missing_expected_email_fails(micropython, tmp_path):
    scenario = tmp_path / "never.json"
    scenario.write_text(
        '{"speed": 600, "duration_s": 300, "sensors": [{"name": "t", "type": "simulated", "interval_s": 30,'
        ' "values": [[0, 20]]}], "rules": [{"name": "hot", "sensor": "t", "above": 30}],'
        ' "expect": [{"kind": "alert"}]}'
    )
    process = run_sim(tmp_path, "--scenario", str(scenario))
    output = unix_port.format_output(process)
    assert process.returncode == 1, output
    assert 'FAILED: expected email did not arrive: {"kind": "alert"}' in process.stdout, output


def test_real_server_path_with_local_server(micropython, tmp_path, smtp_server, certs):
    # A local aiosmtpd with its own CA acts as the "real" server: the sim starts none.
    server = smtp_server("starttls")
    env = os.environ.copy()
    env["SMTP_PASSWORD"] = "secret"
    process = run_sim(
        tmp_path,
        "--speed",
        "240",
        "--server",
        "127.0.0.1:%d" % server.port,
        "--server-name",
        "localhost",
        "--user",
        "alice",
        "--ca",
        str(certs.ca_pem_path),
        "--from",
        "board@example.com",
        "--to",
        "ops@example.org",
        env=env,
    )
    output = unix_port.format_output(process)
    assert process.returncode == 0, output
    assert "secret" not in process.stdout
    messages = server.wait_for_messages(2)
    assert len(messages) == 2
    assert all(message.tls and message.user == "alice" for message in messages)
    assert b"ALERT greenhouse-hot" in messages[0].content
    assert b"back to normal greenhouse-hot" in messages[1].content.replace(b"\r\n ", b" ")


def test_real_server_needs_ca(tmp_path):
    env = os.environ.copy()
    env["SMTP_PASSWORD"] = "secret"
    process = run_sim(
        tmp_path,
        "--server",
        "127.0.0.1:1",
        "--user",
        "alice",
        "--from",
        "a@example.com",
        "--to",
        "b@example.com",
        env=env,
    )
    assert process.returncode == 78, unix_port.format_output(process)
    assert "--ca FILE is required" in process.stderr


@pytest.mark.parametrize("heap", ["64K"])
def test_small_heap_reports_memory_error(micropython, tmp_path, heap):
    process = run_sim(tmp_path, "--speed", "600", "--heap", heap)
    output = unix_port.format_output(process)
    assert process.returncode == 1, output
    assert "ran out of memory" in process.stdout or "exit status" in process.stdout, output
