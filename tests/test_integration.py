"""End-to-end sending against real aiosmtpd servers over real TLS, from both runtimes.

Every test runs once on CPython and once under the MicroPython unix port, through the
same scenario code in tests/scenarios.py.
"""

import base64
import datetime
import email
import email.policy
import json
import os

import pytest
import scenarios
from raw_server import RawServer

import servers
import unix_port

PASSWORD = "secret"
DATE = [2026, 12, 4, 20, 10, 26, 4, 338]

RUNTIMES = ["cpython", "micropython"]


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    return request.param


def run_client(runtime, params, heap=unix_port.DEFAULT_HEAP, scenario="deliver"):
    """Run a scenario ("deliver" by default) on the given runtime and return its result dict."""
    if runtime == "cpython":
        return scenarios.run(scenario, params)
    env = dict(os.environ)
    env["MICROPYPATH"] = ".frozen:%s:%s" % (unix_port.FIRMWARE_DIR, unix_port.REPO_DIR / "tests")
    process = unix_port.run_micropython(
        [str(unix_port.REPO_DIR / "tests" / "scenarios.py"), scenario],
        heap=heap,
        env=env,
        input=json.dumps(params),
        timeout=60,
    )
    assert process.returncode == 0, unix_port.format_output(process)
    return json.loads(process.stdout.strip().splitlines()[-1])


def params_for(server, certs, **overrides):
    params = {
        "host": server.host,
        "port": server.port,
        "security": server.mode,
        "server_hostname": "localhost",
        "ca_roots": [base64.b64encode(certs.ca_der).decode()],
        "username": "alice",
        "password": PASSWORD,
        "local_hostname": "sensor.example",
        "messages": [message_spec()],
    }
    params.update(overrides)
    return params


def message_spec(**overrides):
    spec = {
        "sender": "Freezer Monitor <board@example.com>",
        "to": ["ops@example.com"],
        "subject": "Temperature alert: freezer at -4.5 \u00b0C",
        "text": "The freezer reached -4.5 \u00b0C (threshold -10 \u00b0C).\n.leading dot line\n",
        "attachments": [
            {
                "filename": "readings.csv",
                "data": base64.b64encode(b"time,value\r\n2026-12-04T20:00:00Z,-12.1\r\n").decode(),
                "content_type": "text/csv",
            }
        ],
        "date": DATE,
        "message_id": "<alert-1@example.com>",
    }
    spec.update(overrides)
    return spec


def client_lines(server):
    """All bytes the client sent, over every connection, as one bytes string."""
    sent = b""
    for connection in server.connections:
        for side, data in connection.transcript:
            if side == "C":
                sent += data
    return sent


def only_outcome(result):
    assert len(result["outcomes"]) == 1, result
    return result["outcomes"][0]


# aiosmtpd reads commands one by one from its stream, so it serves pipelined clients
# correctly once it advertises the extension.
SERVER_EXTENSIONS = {"lock-step": (), "pipelining": ("PIPELINING",)}


@pytest.fixture(params=sorted(SERVER_EXTENSIONS))
def extensions(request):
    return SERVER_EXTENSIONS[request.param]


def test_starttls_delivery_byte_for_byte(runtime, smtp_server, certs, extensions):
    server = smtp_server("starttls", ehlo_extra=extensions)
    result = run_client(runtime, params_for(server, certs))
    outcome = only_outcome(result)
    assert outcome["ok"], outcome
    assert outcome["accepted"] == ["ops@example.com"]
    assert outcome["message_id"] == "<alert-1@example.com>"
    delivered = server.wait_for_messages(1)[0]
    assert delivered.content == base64.b64decode(outcome["content"])
    assert delivered.mail_from == "board@example.com"
    assert delivered.rcpt_tos == ["ops@example.com"]
    assert delivered.user == "alice"
    assert delivered.tls
    assert delivered.helo_name == "sensor.example"
    assert b"\r\n..leading dot line" not in delivered.content


def test_implicit_tls_delivery(runtime, smtp_server, certs):
    server = smtp_server("tls")
    outcome = only_outcome(run_client(runtime, params_for(server, certs)))
    assert outcome["ok"], outcome
    delivered = server.wait_for_messages(1)[0]
    assert delivered.content == base64.b64decode(outcome["content"])
    assert delivered.tls


def test_several_messages_one_connection(runtime, smtp_server, certs, extensions):
    server = smtp_server("starttls", ehlo_extra=extensions)
    specs = [message_spec(message_id="<m%d@example.com>" % i, subject="alert %d" % i) for i in range(3)]
    result = run_client(runtime, params_for(server, certs, messages=specs))
    assert [o["ok"] for o in result["outcomes"]] == [True, True, True], result
    delivered = server.wait_for_messages(3)
    assert len(server.connections) == 1
    for outcome, message in zip(result["outcomes"], delivered, strict=True):
        assert message.content == base64.b64decode(outcome["content"])


BAD_CERTIFICATES = {
    "wrong_ca": ("wrong_ca_cert", "localhost"),
    "wrong_host": ("server_cert", "mail.other.example"),
    "expired": ("expired_cert", "localhost"),
}


@pytest.mark.parametrize("mode", ["starttls", "tls"])
@pytest.mark.parametrize("case", sorted(BAD_CERTIFICATES))
def test_bad_certificate_aborts_before_auth(runtime, smtp_server, certs, case, mode):
    cert_name, hostname = BAD_CERTIFICATES[case]
    server = smtp_server(mode, getattr(certs, cert_name))
    outcome = only_outcome(run_client(runtime, params_for(server, certs, server_hostname=hostname)))
    assert not outcome["ok"]
    assert outcome["error"] == "SecurityError", outcome
    assert outcome["stage"] == "tls"
    assert not outcome["transient"]
    assert "certificate verification failed" in outcome["message"]
    assert b"AUTH" not in client_lines(server)
    assert server.messages == []


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_server_hostname_with_trailing_dot(runtime, smtp_server, certs, mode):
    # "localhost." is the fully qualified form of the name in the certificate; the TLS
    # name drops the dot. The host "localhost." itself does not resolve here (only
    # "localhost" is in /etc/hosts), so the connection goes to the address.
    server = smtp_server(mode, certs.issue_cert("localhost"))
    outcome = only_outcome(run_client(runtime, params_for(server, certs, server_hostname="localhost.")))
    assert outcome["ok"], outcome
    assert server.wait_for_messages(1)[0].tls


# mbedTLS reports a failed allocation during the signature check as an untrusted
# certificate. Where its buffers come from the GC heap and little is left after them,
# the client takes such a failure for a shortage of memory, which is retried.
@pytest.mark.parametrize(
    "case, left, error",
    [
        ("wrong_ca", 12288, "OutOfMemory"),
        ("wrong_ca", 65536, "SecurityError"),
        ("wrong_host", 12288, "SecurityError"),
        ("expired", 12288, "SecurityError"),
    ],
)
@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_certificate_check_low_heap(smtp_server, certs, case, left, error, mode):
    cert_name, hostname = BAD_CERTIFICATES[case]
    server = smtp_server(mode, getattr(certs, cert_name))
    params = params_for(server, certs, server_hostname=hostname, heap_left_after_wrap=left)
    outcome = only_outcome(run_client("micropython", params))
    assert outcome["error"] == error, outcome
    assert outcome["stage"] == "tls"
    assert outcome["transient"] == (error == "OutOfMemory")
    if error == "OutOfMemory":
        assert "were left for the certificate check" in outcome["message"]
    assert b"AUTH" not in client_lines(server)
    assert server.messages == []


def combined_fault_cert(certs, fault):
    """Return a certificate from the untrusted CA that also has a wrong name or an expired date."""
    if fault == "wrong_host":
        return certs.issue_cert(servers.WRONG_HOSTNAME, ca=certs.other_ca)
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    return certs.issue_cert(
        *servers.SERVER_IDENTITIES, ca=certs.other_ca, not_before=now - 30 * day, not_after=now - day
    )


# mbedTLS gives one line per failed check. A wrong name or an expired date beside the
# untrusted signature does not depend on the heap, so the error stays permanent.
@pytest.mark.parametrize("fault", ["wrong_host", "expired"])
@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_untrusted_and_other_fault_low_heap(smtp_server, certs, fault, mode):
    server = smtp_server(mode, combined_fault_cert(certs, fault))
    params = params_for(server, certs, heap_left_after_wrap=12288)
    outcome = only_outcome(run_client("micropython", params))
    assert outcome["error"] == "SecurityError", outcome
    assert not outcome["transient"]
    assert b"AUTH" not in client_lines(server)


def test_wrong_password_is_permanent(runtime, smtp_server, certs, extensions):
    server = smtp_server("starttls", ehlo_extra=extensions)
    result = run_client(runtime, params_for(server, certs, password="wrong-password"))
    outcome = only_outcome(result)
    assert outcome["error"] == "AuthError", outcome
    assert outcome["code"] == 535
    assert not outcome["transient"]
    assert outcome["stage"] == "auth"
    sent = client_lines(server)
    if extensions:
        # AUTH PLAIN shares its group with MAIL, RCPT and DATA, but the content waits
        # for the 354, which never comes: nothing that completes a transaction.
        assert sent.endswith(b"DATA\r\n"), sent
    else:
        assert b"MAIL FROM" not in sent
    assert server.messages == []
    assert "wrong-password" not in json.dumps(result)


def test_starttls_not_offered_aborts(runtime, smtp_server, certs):
    server = smtp_server("starttls", advertise_starttls=False)
    outcome = only_outcome(run_client(runtime, params_for(server, certs)))
    assert outcome["error"] == "SecurityError", outcome
    assert "STARTTLS" in outcome["message"]
    assert b"AUTH" not in client_lines(server)
    assert b"MAIL" not in client_lines(server)


def test_plaintext_refuses_auth(runtime, smtp_server, certs):
    server = smtp_server("plain")
    outcome = only_outcome(run_client(runtime, params_for(server, certs, security="none")))
    assert outcome["error"] == "SecurityError", outcome
    assert b"AUTH" not in client_lines(server)


def test_plaintext_without_auth_delivers(runtime, smtp_server, certs):
    server = smtp_server("plain")
    params = params_for(server, certs, security="none")
    del params["username"], params["password"]
    outcome = only_outcome(run_client(runtime, params))
    assert outcome["ok"], outcome
    assert server.wait_for_messages(1)[0].content == base64.b64decode(outcome["content"])


def test_large_message_to_paused_server(smtp_server, certs):
    # After its 354 the server reads nothing for a second, so the transport keeps unsent
    # data, from CPython 3.12 without a copy. 4 MB exceeds the loopback send buffer (about
    # 2.6 MB here). CPython only, because MicroPython's stream copies what it keeps.
    server = smtp_server("plain", pause_reading_s=1.0)
    data = bytes(range(256)) * 16384
    attachment = {
        "filename": "log.bin",
        "data": base64.b64encode(data).decode(),
        "content_type": "application/octet-stream",
    }
    params = params_for(server, certs, security="none", messages=[message_spec(attachments=[attachment])])
    del params["username"], params["password"]

    outcome = only_outcome(run_client("cpython", params))

    assert outcome["ok"], outcome
    delivered = server.wait_for_messages(1)[0].content
    assert delivered == base64.b64decode(outcome["content"])
    parts = list(email.message_from_bytes(delivered, policy=email.policy.default).iter_attachments())
    assert parts[0].get_content() == data


def recorded_plain_send(runtime, server, certs, **message):
    """Send one short message without TLS or AUTH; return (the client's writes, its content)."""
    spec = message_spec(text="Door open.\n", attachments=[], **message)
    params = params_for(server, certs, security="none", messages=[spec])
    del params["username"], params["password"]
    result = run_client(runtime, params, scenario="recorded_writes")
    outcome = only_outcome(result)
    assert outcome["ok"], outcome
    return result["writes"], base64.b64decode(outcome["content"]).decode()


def test_pipelined_group_in_one_write(runtime, smtp_server, certs):
    server = smtp_server("plain", ehlo_extra=("PIPELINING",))

    writes, content = recorded_plain_send(runtime, server, certs, to=["ops@example.com", "lab@example.com"])

    assert writes == [
        "EHLO sensor.example\r\n",
        "MAIL FROM:<board@example.com> SIZE=%d\r\nRCPT TO:<ops@example.com>\r\nRCPT TO:<lab@example.com>\r\n"
        "DATA\r\n" % len(content),
        content + ".\r\nQUIT\r\n",
    ]


def test_lock_step_one_command_per_write(runtime, smtp_server, certs):
    server = smtp_server("plain")

    writes, content = recorded_plain_send(runtime, server, certs)

    assert writes == [
        "EHLO sensor.example\r\n",
        "MAIL FROM:<board@example.com> SIZE=%d\r\n" % len(content),
        "RCPT TO:<ops@example.com>\r\n",
        "DATA\r\n",
        content + ".\r\n",
        "QUIT\r\n",
    ]


def test_partly_refused_recipients(runtime, smtp_server, certs, extensions):
    server = smtp_server(
        "starttls", rcpt_replies={"nobody@example.com": "550 5.1.1 no such user"}, ehlo_extra=extensions
    )
    spec = message_spec(to=["ops@example.com", "nobody@example.com"])
    outcome = only_outcome(run_client(runtime, params_for(server, certs, messages=[spec])))
    assert outcome["ok"], outcome
    assert outcome["accepted"] == ["ops@example.com"]
    assert outcome["refused"] == {"nobody@example.com": 550}
    assert server.wait_for_messages(1)[0].rcpt_tos == ["ops@example.com"]


def test_every_recipient_refused(runtime, smtp_server, certs, extensions):
    refusal = "554 5.7.1 Relay access denied"
    server = smtp_server(
        "starttls",
        rcpt_replies={"a@elsewhere.example": refusal, "b@elsewhere.example": refusal},
        ehlo_extra=extensions,
    )
    spec = message_spec(to=["a@elsewhere.example", "b@elsewhere.example"])
    outcome = only_outcome(run_client(runtime, params_for(server, certs, messages=[spec])))
    assert outcome["error"] == "RecipientsRefused", outcome
    assert outcome["code"] == 554
    assert outcome["enhanced"] == "5.7.1"
    assert not outcome["transient"]
    assert server.messages == []


@pytest.mark.parametrize("api", ["send", "send_message", "send_messages"])
def test_refused_content_reaches_no_recipient(runtime, smtp_server, certs, extensions, api):
    # The server accepted both recipients at RCPT, then rejected the content: accepted is
    # empty, and rcpt_accepted keeps the RCPT replies.
    server = smtp_server("starttls", data_reply="554 5.6.0 content refused", ehlo_extra=extensions)
    specs = [message_spec(to=["ops@example.com", "lab@example.com"], attachments=[])]
    outcome = only_outcome(run_client(runtime, params_for(server, certs, messages=specs, api=api), scenario="outcomes"))
    assert not outcome["ok"], outcome
    assert outcome["error"] == "ReplyError", outcome
    assert (outcome["code"], outcome["stage"]) == (554, "message"), outcome
    if api == "send_messages":
        # send() and send_message() raise the error instead of returning the Transaction.
        assert outcome["accepted"] == [], outcome
        assert outcome["rcpt_accepted"] == ["lab@example.com", "ops@example.com"], outcome
        assert outcome["refused"] == {}, outcome
    assert server.messages == []


@pytest.mark.parametrize("api", ["send", "send_message", "send_messages"])
def test_later_batch_refused_after_too_many_recipients(runtime, smtp_server, certs, extensions, api):
    # A 452 sends lab@ in a second transaction, whose content the server refuses: the
    # message is sent, to ops@ only.
    server = smtp_server(
        "starttls",
        rcpt_replies={"lab@example.com": ["452 4.5.3 Too many recipients"]},
        data_reply=[None, "554 5.6.0 content refused"],
        ehlo_extra=extensions,
    )
    specs = [message_spec(to=["ops@example.com", "lab@example.com"], attachments=[])]
    outcome = only_outcome(run_client(runtime, params_for(server, certs, messages=specs, api=api), scenario="outcomes"))
    assert outcome["ok"], outcome
    assert outcome["accepted"] == ["ops@example.com"], outcome
    assert outcome["rcpt_accepted"] == ["lab@example.com", "ops@example.com"], outcome
    assert outcome["refused"] == {"lab@example.com": 554}, outcome
    assert [message.rcpt_tos for message in server.messages] == [["ops@example.com"]]


def test_failing_log_does_not_stop_the_send(runtime, smtp_server, certs, extensions, capsys):
    server = smtp_server("starttls", ehlo_extra=extensions)
    result = run_client(runtime, params_for(server, certs, log_fails_at="--> MAIL"))
    assert only_outcome(result)["ok"], result
    assert server.wait_for_messages(1)[0].rcpt_tos == ["ops@example.com"]
    # The transcript stops where the log function failed.
    assert result["transcript"][-1].startswith("--> AUTH PLAIN") or "<-- 235" in result["transcript"][-1]
    assert not [line for line in result["transcript"] if line.startswith(("--> MAIL", "--> DATA", "<-- 221"))]
    if runtime == "cpython":
        assert "microsmtp: the log function raised ValueError: log sink failed" in capsys.readouterr().err


def test_message_over_size_refused_before_mail(runtime, smtp_server, certs):
    server = smtp_server("starttls", data_size_limit=2000)
    spec = message_spec(text="x" * 3000 + "\n")
    outcome = only_outcome(run_client(runtime, params_for(server, certs, messages=[spec])))
    assert outcome["error"] == "InvalidInputError", outcome
    assert "2000" in outcome["message"]
    assert b"MAIL FROM" not in client_lines(server)
    assert server.messages == []


@pytest.mark.parametrize("api", ["send", "send_messages"])
@pytest.mark.parametrize("failing_pass", [1, 2], ids=["measuring", "sending"])
def test_memory_error_becomes_out_of_memory(runtime, smtp_server, certs, extensions, api, failing_pass):
    # A MemoryError while the client measures or sends a message gives a transient
    # OutOfMemory to it and to the messages not yet accepted. No other exception reaches
    # the caller, and the message that ran short is never delivered.
    server = smtp_server("starttls", ehlo_extra=extensions)
    specs = [message_spec(message_id="<m%d@example.com>" % i, attachments=[]) for i in range(3)]
    params = params_for(server, certs, messages=specs, short=[1, failing_pass], api=api)
    result = run_client(runtime, params, scenario="memory_short")
    assert result["escaped"] is None, result
    outcomes = result["outcomes"]
    assert len(outcomes) == 3, result
    short = outcomes[1]
    assert short["error"] == "OutOfMemory", short
    assert short["transient"]
    assert "MemoryError" in short["message"]
    assert "4096" in short["message"]
    for outcome in outcomes:
        assert outcome["ok"] or outcome["transient"], outcome
    if api == "send":
        # Each message has its own connection, so the others are delivered.
        assert [outcome["ok"] for outcome in outcomes] == [True, False, True]
    delivered = server.wait_for_messages(sum(1 for outcome in outcomes if outcome["ok"]))
    assert b"<m1@example.com>" not in b"".join(message.content for message in delivered)
    assert all(message.content.endswith(b"\r\n") for message in delivered)


def test_auth_login_when_plain_not_offered(runtime, smtp_server, certs):
    server = smtp_server("starttls", auth_mechanisms=("LOGIN",))
    result = run_client(runtime, params_for(server, certs))
    outcome = only_outcome(result)
    assert outcome["ok"], outcome
    assert b"AUTH LOGIN\r\n" in client_lines(server)
    assert server.wait_for_messages(1)[0].user == "alice"
    transcript = "\n".join(result["transcript"])
    assert base64.b64encode(PASSWORD.encode()).decode() not in transcript


def test_transcript_redacts_credentials(runtime, smtp_server, certs):
    server = smtp_server("starttls")
    result = run_client(runtime, params_for(server, certs))
    transcript = "\n".join(result["transcript"])
    assert "--> AUTH PLAIN <redacted>" in transcript
    secret_forms = [PASSWORD, base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode()]
    for secret in secret_forms:
        assert secret not in transcript
    assert "--> STARTTLS" in transcript
    assert "<-- 221" in transcript


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_connection_refused_is_transient(runtime, certs, security):
    import socket

    # Bind a port and keep it closed to connections: nothing listens there.
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))
    port = reserved.getsockname()[1]
    try:
        params = {
            "host": "127.0.0.1",
            "port": port,
            "server_hostname": "localhost",
            "ca_roots": [base64.b64encode(certs.ca_der).decode()],
            "messages": [message_spec()],
            "security": security,
        }
        outcome = only_outcome(run_client(runtime, params))
    finally:
        reserved.close()
    assert outcome["error"] == "ConnectionLost", outcome
    assert outcome["transient"]
    assert outcome["stage"] == "connect"


FD_SCRIPT = r"""
import binascii
import gc
import json
import os
import sys

import asyncio

import microsmtp

params = json.loads(sys.stdin.read())
roots = [binascii.a2b_base64(params["ca"])]


def open_descriptors():
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


async def main():
    before = open_descriptors()
    errors = []
    for _ in range(3):
        message = microsmtp.Message("board@example.com", "ops@example.com", "alert", "text")
        try:
            await microsmtp.send(
                message, params["host"], port=params["port"], security=params["security"], ca_roots=roots,
                server_hostname="localhost", timeout_ms=10000,
            )
        except microsmtp.SMTPError as exc:
            errors.append(type(exc).__name__)
    token_errors = []
    if params.get("token_port"):
        from alerts import oauth2

        for _ in range(2):
            try:
                await oauth2.exchange("127.0.0.1", params["token_port"], b"POST / HTTP/1.0\r\n\r\n", roots, 0.5)
            except oauth2.TokenError as exc:
                token_errors.append(str(exc)[:60])
    print(json.dumps({"before": before, "after": open_descriptors(), "errors": errors, "token": token_errors}))


asyncio.run(main())
"""


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_failed_handshakes_leave_no_socket_open(smtp_server, certs, mode):
    # The server's certificate comes from a CA the client does not trust, so each
    # handshake fails. MicroPython's TLS socket then drops its reference to the plain
    # socket below it.
    server = smtp_server(mode, certs.wrong_ca_cert)
    stalled = RawServer(lambda conn: stall_tls(conn, certs))
    try:
        env = dict(os.environ)
        env["MICROPYPATH"] = ".frozen:%s" % unix_port.FIRMWARE_DIR
        params = {
            "host": server.host,
            "port": server.port,
            "security": mode,
            "ca": base64.b64encode(certs.ca_der).decode(),
            "token_port": stalled.port,
        }
        process = unix_port.run_micropython(["-c", FD_SCRIPT], env=env, input=json.dumps(params), timeout=60)
    finally:
        stalled.stop()
    assert process.returncode == 0, unix_port.format_output(process)
    outcome = json.loads(process.stdout.strip().splitlines()[-1])
    assert outcome["errors"] == ["SecurityError"] * 3, outcome
    # The token endpoint accepts TLS and never replies, so each request times out.
    assert len(outcome["token"]) == 2, outcome
    assert outcome["after"] == outcome["before"], outcome


def stall_tls(conn, certs):
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certs.server_cert.configure_cert(context)
    conn.start_tls(context)
    conn.stall(10)
