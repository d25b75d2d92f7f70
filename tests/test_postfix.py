"""Interoperability with a real Postfix + Dovecot SASL, from CPython and MicroPython.

The server is the session-wide ``mta`` fixture (tests/mta.py): Postfix on loopback
ports with STARTTLS required before AUTH, implicit TLS, an AUTH LOGIN only listener, a
listener with a small SIZE and a plaintext listener without AUTH. Delivered messages
are read back from Postfix's Maildirs, and Postfix's own log shows which commands a
client sent.

``run_scenario`` and ``run_batch`` run the client scenarios of tests/scenarios.py on
either runtime; the fault matrix and the injection tests use them too.
"""

import base64
import email
import email.policy
import itertools
import json
import os
import re
import time

import mta as mta_module
import pytest
import scenarios

import unix_port

RUNTIMES = ["cpython", "micropython"]
DATE = [2026, 12, 4, 20, 10, 26, 4, 338]
PASSWORD = mta_module.USERS["alice"]
ATTACHMENT_NAME = "Messwerte K\u00fchlraum M\u00e4rz.csv"
ATTACHMENT_DATA = "time,celsius\r\n2026-12-04T20:00:00Z,-4.5 \u00b0C\r\n".encode("utf-8") + bytes(range(256))
SUBJECT = "K\u00fchlraum: Temperatur -4.5 \u00b0C \u2013 Alarm \u2744"

_message_numbers = itertools.count(1)


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    return request.param


def micropython_env():
    env = dict(os.environ)
    env["MICROPYPATH"] = ".frozen:%s:%s" % (unix_port.FIRMWARE_DIR, unix_port.REPO_DIR / "tests")
    return env


def run_scenario(runtime, name, params, timeout=90):
    """Run one scenario of tests/scenarios.py on ``runtime``; return its result dict."""
    if runtime == "cpython":
        return scenarios.run(name, params)
    process = unix_port.run_micropython(
        [str(unix_port.REPO_DIR / "tests" / "scenarios.py"), name],
        env=micropython_env(),
        input=json.dumps(params),
        timeout=timeout,
    )
    assert process.returncode == 0, unix_port.format_output(process)
    return json.loads(process.stdout.strip().splitlines()[-1])


def run_batch(runtime, cases, timeout=300):
    """Run [{"scenario", "params"}, ...] on ``runtime``, in one process under MicroPython."""
    if runtime == "cpython":
        return scenarios.run_batch(cases)
    process = unix_port.run_micropython(
        [str(unix_port.REPO_DIR / "tests" / "scenarios.py"), "batch"],
        env=micropython_env(),
        input="".join(json.dumps(case) + "\n" for case in cases),
        timeout=timeout,
    )
    assert process.returncode == 0, unix_port.format_output(process)
    results = [json.loads(line) for line in process.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(cases), unix_port.format_output(process)
    return results


def unique_id(runtime):
    return "<postfix-%s-%d.%d@example.com>" % (runtime, os.getpid(), next(_message_numbers))


def message_spec(runtime, **overrides):
    spec = {
        "sender": "K\u00fchlraum Sensor <board@example.com>",
        "to": ["ops@example.com"],
        "subject": SUBJECT,
        "text": "Der K\u00fchlraum hat -4.5 \u00b0C erreicht.\n.leading dot line\nFrom the sensor\n",
        "attachments": [
            {
                "filename": ATTACHMENT_NAME,
                "data": base64.b64encode(ATTACHMENT_DATA).decode(),
                "content_type": "text/csv",
            }
        ],
        "date": DATE,
        "message_id": unique_id(runtime),
    }
    spec.update(overrides)
    return spec


def params_for(mta, certs, runtime, listener="submission", **overrides):
    params = {
        "host": mta.host,
        "port": mta.ports[listener],
        "security": "tls" if listener == "smtps" else "starttls",
        "server_hostname": "localhost",
        "ca_roots": [base64.b64encode(certs.ca_der).decode()],
        "username": "alice",
        "password": PASSWORD,
        "local_hostname": "sensor.example",
        "timeout_ms": 20000,
        "messages": [message_spec(runtime)],
    }
    params.update(overrides)
    return params


def only_outcome(result):
    assert len(result["outcomes"]) == 1, result
    return result["outcomes"][0]


def check_delivered(mta, outcome, address="ops@example.com"):
    """Assert that Postfix delivered exactly the bytes the client built; return them."""
    delivered = mta.wait_for_message(address, outcome["message_id"])
    sent = base64.b64decode(outcome["content"])
    assert mta_module.strip_trace_headers(delivered) == sent
    return delivered


def settled_log_offset(mta, timeout=10):
    """Return the log length once every earlier smtpd connection has logged its disconnect.

    smtpd writes a connection's "disconnect from" line after the client has gone, so a
    previous test's line could otherwise land in this test's part of the log.
    """
    deadline = time.monotonic() + timeout
    while True:
        log = mta.log_text()
        if log.count(": connect from ") <= log.count(": disconnect from ") or time.monotonic() > deadline:
            return len(log)
        time.sleep(0.05)


def wait_for_sessions(mta, listener, start, timeout=10):
    """Return this test's "disconnect from" lines of one listener, waiting for the first."""
    deadline = time.monotonic() + timeout
    while True:
        sessions = smtpd_sessions(mta.log_text()[start:], listener)
        if sessions or time.monotonic() > deadline:
            return sessions
        time.sleep(0.05)


def smtpd_sessions(log, listener):
    """Return the "disconnect from" lines of one listener's smtpd in a Postfix log."""
    pattern = re.compile(r"postfix/%s/smtpd\[\d+\]: disconnect from .*" % re.escape(listener))
    return pattern.findall(log)


def test_starttls_auth_plain_delivers_byte_for_byte(runtime, mta, certs):
    start = settled_log_offset(mta)
    result = run_scenario(runtime, "deliver", params_for(mta, certs, runtime))
    outcome = only_outcome(result)
    assert outcome["ok"], outcome
    assert outcome["accepted"] == ["ops@example.com"]
    check_delivered(mta, outcome)

    transcript = "\n".join(result["transcript"])
    assert "--> STARTTLS" in transcript
    assert "--> AUTH PLAIN <redacted>" in transcript
    mta.wait_for_log("sasl_method=PLAIN, sasl_username=alice", start)
    # smtpd writes the per-connection counters when it sees the disconnect, which can
    # come after the client has already returned.
    sessions = wait_for_sessions(mta, "submission", start)
    assert len(sessions) == 1, sessions
    assert "starttls=1 auth=1 mail=1 rcpt=1 " in sessions[0]


def test_utf8_subject_and_attachment_intact(runtime, mta, certs):
    outcome = only_outcome(run_scenario(runtime, "deliver", params_for(mta, certs, runtime)))
    assert outcome["ok"], outcome
    delivered = check_delivered(mta, outcome)

    parsed = email.message_from_bytes(delivered, policy=email.policy.default)
    assert parsed["Subject"] == SUBJECT
    assert parsed["From"].addresses[0].display_name == "K\u00fchlraum Sensor"
    attachments = list(parsed.iter_attachments())
    assert len(attachments) == 1
    assert attachments[0].get_filename() == ATTACHMENT_NAME
    assert attachments[0].get_payload(decode=True) == ATTACHMENT_DATA
    body = parsed.get_body(("plain",)).get_content()
    assert body == "Der K\u00fchlraum hat -4.5 \u00b0C erreicht.\n.leading dot line\nFrom the sensor\n"


def test_auth_login_when_only_login_offered(runtime, mta, certs):
    start = settled_log_offset(mta)
    result = run_scenario(runtime, "deliver", params_for(mta, certs, runtime, "submission_login"))
    outcome = only_outcome(result)
    assert outcome["ok"], outcome
    check_delivered(mta, outcome)
    transcript = "\n".join(result["transcript"])
    assert "--> AUTH LOGIN" in transcript
    assert "AUTH PLAIN" not in transcript
    mta.wait_for_log("sasl_method=LOGIN, sasl_username=alice", start)


def test_implicit_tls_delivers(runtime, mta, certs):
    start = settled_log_offset(mta)
    result = run_scenario(runtime, "deliver", params_for(mta, certs, runtime, "smtps"))
    outcome = only_outcome(result)
    assert outcome["ok"], outcome
    check_delivered(mta, outcome)
    assert "--> STARTTLS" not in "\n".join(result["transcript"])
    assert wait_for_sessions(mta, "smtps", start)


def test_several_messages_one_session(runtime, mta, certs):
    start = settled_log_offset(mta)
    specs = [
        message_spec(runtime, subject="Alarm %d" % number, to=["ops@example.com", "team@example.com"])
        for number in range(3)
    ]
    result = run_scenario(runtime, "deliver", params_for(mta, certs, runtime, messages=specs))
    assert [outcome["ok"] for outcome in result["outcomes"]] == [True, True, True], result
    for outcome in result["outcomes"]:
        check_delivered(mta, outcome, "ops@example.com")
        check_delivered(mta, outcome, "team@example.com")
    sessions = wait_for_sessions(mta, "submission", start)
    assert len(sessions) == 1, sessions
    assert "auth=1 mail=3 rcpt=6 " in sessions[0]
    assert " quit=1 " in sessions[0]


def test_wrong_password_is_permanent_535(runtime, mta, certs):
    start = settled_log_offset(mta)
    result = run_scenario(runtime, "deliver", params_for(mta, certs, runtime, password="wrong-password"))
    outcome = only_outcome(result)
    assert outcome["error"] == "AuthError", outcome
    assert outcome["code"] == 535
    assert outcome["stage"] == "auth"
    assert not outcome["transient"]
    assert "wrong-password" not in json.dumps(result)
    session = wait_for_sessions(mta, "submission", start)
    assert len(session) == 1
    assert "auth=0/1" in session[0]
    # Postfix accepts MAIL without AUTH (a MAIL pipelined behind AUTH, as RFC 4954
    # section 4 allows), but it must refuse every recipient.
    assert " rcpt=0/1 " in session[0]


def test_auth_before_tls_never_sent(runtime, mta, certs):
    start = settled_log_offset(mta)
    result = run_scenario(runtime, "deliver", params_for(mta, certs, runtime, security="none"))
    outcome = only_outcome(result)
    assert outcome["error"] == "SecurityError", outcome
    assert outcome["stage"] == "auth"
    assert not outcome["transient"]
    assert not any(line.startswith("--> AUTH") for line in result["transcript"])

    sessions = wait_for_sessions(mta, "submission", start)
    assert len(sessions) == 1, sessions
    # Postfix counts each command in the disconnect line: "ehlo=1 commands=1" or similar.
    assert "auth=" not in sessions[0]
    assert "ehlo=1" in sessions[0]


def test_relay_denied_reported_per_recipient(runtime, mta, certs):
    spec = message_spec(runtime, to=["ops@example.com", "someone@elsewhere.example"])
    outcome = only_outcome(run_scenario(runtime, "deliver", params_for(mta, certs, runtime, messages=[spec])))
    assert outcome["ok"], outcome
    assert outcome["accepted"] == ["ops@example.com"]
    assert outcome["refused"] == {"someone@elsewhere.example": 554}
    check_delivered(mta, outcome)


def test_only_foreign_recipients_refused(runtime, mta, certs):
    spec = message_spec(runtime, to=["someone@elsewhere.example"])
    outcome = only_outcome(run_scenario(runtime, "deliver", params_for(mta, certs, runtime, messages=[spec])))
    assert outcome["error"] == "RecipientsRefused", outcome
    assert outcome["code"] == 554
    assert outcome["enhanced"] == "5.7.1"
    assert not outcome["transient"]
    assert "someone@elsewhere.example" in outcome["message"]


def big_spec(runtime):
    # Twice the listener's SIZE, so the message cannot fit whatever the headers add.
    data = base64.b64encode(bytes(2 * mta_module.SMALL_SIZE_LIMIT)).decode()
    return message_spec(
        runtime, attachments=[{"filename": "big.bin", "data": data, "content_type": "application/octet-stream"}]
    )


def test_message_over_size_refused_before_data(runtime, mta, certs):
    start = settled_log_offset(mta)
    params = params_for(mta, certs, runtime, "submission_small", messages=[big_spec(runtime)])
    result = run_scenario(runtime, "deliver", params)
    outcome = only_outcome(result)
    assert outcome["error"] == "InvalidInputError", outcome
    assert outcome["stage"] == "mail"
    assert not outcome["transient"]
    assert "SIZE" in outcome["message"]
    assert not any(line.startswith(("--> DATA", "--> BDAT")) for line in result["transcript"])
    session = wait_for_sessions(mta, "submission_small", start)
    assert len(session) == 1
    assert "data=" not in session[0] and "bdat=" not in session[0]


def test_server_refuses_oversized_content_permanently(runtime, mta, certs):
    # Without a size announced, Postfix itself refuses the content after the final dot.
    content = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * (2 * mta_module.SMALL_SIZE_LIMIT // 72)
    params = params_for(mta, certs, runtime, "submission_small")
    del params["messages"]
    params.update(
        sender="board@example.com", recipients=["ops@example.com"], content=base64.b64encode(content).decode()
    )
    outcome = only_outcome(run_scenario(runtime, "send_raw", params))
    assert outcome["error"] == "ReplyError", outcome
    assert outcome["code"] == 552
    assert outcome["enhanced"] == "5.3.4"
    assert not outcome["transient"]


def test_send_raw_with_size_refused_before_mail(runtime, mta, certs):
    content = b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n"
    content *= 2 * mta_module.SMALL_SIZE_LIMIT // len(content)
    params = params_for(mta, certs, runtime, "submission_small")
    del params["messages"]
    params.update(
        sender="board@example.com",
        recipients=["ops@example.com"],
        content=base64.b64encode(content).decode(),
        size=len(content),
    )
    result = run_scenario(runtime, "send_raw", params)
    outcome = only_outcome(result)
    assert outcome["error"] == "InvalidInputError", outcome
    assert outcome["stage"] == "mail"
    assert "SIZE" in outcome["message"]
    assert not any(line.startswith("--> MAIL") for line in result["transcript"])


def test_plain_listener_delivers_without_auth(runtime, mta, certs):
    params = params_for(mta, certs, runtime, "plain", security="none")
    del params["username"], params["password"]
    outcome = only_outcome(run_scenario(runtime, "deliver", params))
    assert outcome["ok"], outcome
    check_delivered(mta, outcome)
