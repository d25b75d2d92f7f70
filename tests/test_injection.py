"""Header and command injection, SMTP smuggling and credential leaks, on both runtimes.

* CR, LF and NUL in any header, display name, address, EHLO name, username, password
  or attachment name raise InvalidInputError before a single byte reaches the server.
* End-of-data look-alikes inside a body (SMTP smuggling) reach the wire only as CRLF
  text without a bare "." line: the fault server records the exact wire bytes, and
  Postfix delivers exactly one message that contains the smuggled commands as text.
* No password, token or base64 AUTH payload appears in a transcript, an error
  message or the scenario's output, whether AUTH succeeds or fails.
"""

import base64
import itertools
import json

import pytest
from fault_server import Fault, FaultServer
from test_postfix import RUNTIMES, run_batch

DATE = [2026, 12, 4, 20, 10, 26, 4, 338]
PAYLOADS = {"CR": "\r", "LF": "\n", "NUL": "\0"}
INJECTED = "RCPT TO:<evil@example.net>"

_numbers = itertools.count(1)


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    return request.param


def base_spec():
    return {
        "sender": "Board <board@example.com>",
        "to": ["ops@example.com"],
        "subject": "Injection check",
        "text": "body\n",
        "date": DATE,
        "message_id": "<injection-%d@example.com>" % next(_numbers),
        "attachments": [{"filename": "data.csv", "data": base64.b64encode(b"a,b\n").decode()}],
    }


def injected(value, char):
    return value + char + INJECTED


def message_variants(char):
    """Return {field: message spec} with ``char`` injected into one field each."""
    variants = {}

    def variant(field, **changes):
        spec = base_spec()
        spec.update(changes)
        variants[field] = spec

    variant("subject", subject=injected("Alarm", char))
    variant("sender_display_name", sender=injected("Board", char) + " <board@example.com>")
    variant("sender_address", sender="Board <board%s@example.com>" % (char + INJECTED))
    variant("to_address", to=[injected("ops@example.com", char)])
    variant("to_display_name", to=[[injected("Ops", char), "ops@example.com"]])
    variant("cc_address", cc=[injected("team@example.com", char)])
    variant("bcc_address", bcc=[injected("team@example.com", char)])
    variant("reply_to", reply_to=injected("ops@example.com", char))
    variant("header_name", headers=[[injected("X-Sensor", char), "1"]])
    variant("header_value", headers=[["X-Sensor", injected("1", char)]])
    variant("message_id", message_id="<" + injected("id", char) + "@example.com>")
    variant("attachment_name", attachments=[{"filename": injected("data.csv", char), "data": "YQ=="}])
    variant(
        "attachment_type",
        attachments=[{"filename": "data.csv", "data": "YQ==", "content_type": injected("text/csv", char)}],
    )
    return variants


def connection_variants(char):
    """Return {field: params changes} with ``char`` injected into a connection option."""
    return {
        "ehlo_name": {"local_hostname": injected("sensor.example", char)},
        "username": {"username": injected("alice", char)},
        "password": {"password": injected("secret", char)},
    }


def params_for(server, certs, spec=None, **overrides):
    params = {
        "host": server.host,
        "port": server.port,
        "security": server.mode,
        "server_hostname": "localhost",
        "ca_roots": [base64.b64encode(certs.ca_der).decode()],
        "username": "alice",
        "password": "secret",
        "local_hostname": "sensor.example",
        "timeout_ms": 5000,
        "messages": [spec or base_spec()],
    }
    params.update(overrides)
    return params


def test_control_characters_rejected_before_sending(runtime, certs):
    cases = []
    for char_name, char in sorted(PAYLOADS.items()):
        for field, spec in sorted(message_variants(char).items()):
            cases.append(("%s in %s" % (char_name, field), spec, {}))
        for field, changes in sorted(connection_variants(char).items()):
            cases.append(("%s in %s" % (char_name, field), None, changes))

    servers = [FaultServer(certs.server_cert, "tls") for _ in cases]
    try:
        batch = [
            {"scenario": "check_input", "params": params_for(server, certs, spec, **changes)}
            for server, (_, spec, changes) in zip(servers, cases, strict=True)
        ]
        results = run_batch(runtime, batch)
        for server in servers:
            server.wait_ended()
        failures = []
        for (name, _, _), result, server in zip(cases, results, servers, strict=True):
            outcome = result.get("outcomes", [{}])[0]
            received = b"".join(record.received for record in server.connections)
            if outcome.get("error") != "InvalidInputError":
                failures.append("%s: expected InvalidInputError, got %r" % (name, result))
            elif received:
                failures.append("%s: the client sent %r before rejecting the input" % (name, received[:200]))
            elif "evil@example.net" in received.decode("latin-1"):
                failures.append("%s: the injected command reached the server" % name)
        assert not failures, "\n".join(failures)
        assert len(cases) == 48
    finally:
        for server in servers:
            server.stop()


SMUGGLING_VECTORS = {
    "LF.LF": b"\n.\n",
    "CR.CR": b"\r.\r",
    "CR.LF": b"\r.\n",
    "LF.CR": b"\n.\r",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "CRLF.CRCRLF": b"\r\n.\r\r\n",
}
NUL_VECTORS = {
    "CRLF.NULCRLF": b"\r\n.\0\r\n",
    "CRLFNUL.CRLF": b"\r\n\0.\r\n",
    "LF.NULLF": b"\n.\0\n",
}


def smuggling_content(name, vector, marker):
    return (
        b"Subject: smuggling "
        + name.encode()
        + b"\r\nMessage-ID: <"
        + marker
        + b">\r\n\r\nfirst line"
        + vector
        + b"MAIL FROM:<attacker@example.net>\r\nRCPT TO:<ops@example.com>\r\nDATA\r\nSubject: smuggled "
        + marker
        + b"\r\n\r\nsmuggled body"
        + vector
        + b"last line\r\n"
    )


def raw_params(server_host, port, security, certs, content, **extra):
    params = {
        "host": server_host,
        "port": port,
        "security": security,
        "server_hostname": "localhost",
        "ca_roots": [base64.b64encode(certs.ca_der).decode()],
        "local_hostname": "sensor.example",
        "timeout_ms": 10000,
        "sender": "board@example.com",
        "recipients": ["ops@example.com"],
        "content": base64.b64encode(content).decode(),
        # Small chunks, so that a vector can also be split between two chunks.
        "chunk_size": 7,
    }
    params.update(extra)
    return params


def wire_problems(wire):
    """Return what is wrong with DATA wire bytes: bare CR or LF, or a line of only "."."""
    problems = []
    for index, byte in enumerate(wire):
        if byte == 13 and wire[index + 1 : index + 2] != b"\n":
            problems.append("bare CR at %d" % index)
        if byte == 10 and wire[index - 1 : index] != b"\r":
            problems.append("bare LF at %d" % index)
    for line in wire.split(b"\r\n"):
        if line == b".":
            problems.append("a line with only '.'")
    return problems


def test_smuggling_vectors_reach_wire_as_crlf_text(runtime, certs):
    names = sorted(SMUGGLING_VECTORS)
    servers = [FaultServer(None, "plain") for _ in names]
    try:
        batch = []
        for name, server in zip(names, servers, strict=True):
            content = smuggling_content(name, SMUGGLING_VECTORS[name], b"wire-%s@example.com" % name.encode())
            batch.append(
                {"scenario": "send_raw", "params": raw_params(server.host, server.port, "none", certs, content)}
            )
        results = run_batch(runtime, batch)
        for server in servers:
            server.wait_ended()
        for name, result, server in zip(names, results, servers, strict=True):
            outcome = result["outcomes"][0]
            assert outcome["ok"], (name, outcome)
            contents = [content for record in server.connections for content in record.contents]
            assert len(contents) == 1, (name, contents)
            assert wire_problems(contents[0]) == [], (name, contents[0])
            mail_commands = [
                c for record in server.connections for c in record.commands if c.upper().startswith(b"MAIL")
            ]
            assert len(mail_commands) == 1, (name, mail_commands)
            assert b"MAIL FROM:<attacker@example.net>\r\n" in contents[0], name
    finally:
        for server in servers:
            server.stop()


def test_smuggling_vectors_delivered_as_one_message_by_postfix(runtime, mta, certs):
    names = sorted(SMUGGLING_VECTORS)
    run_id = "%s-%d" % (runtime, next(_numbers))
    markers = {name: ("pf-%s-%s@example.com" % (run_id, name)).encode() for name in names}
    batch = []
    for name in names:
        content = smuggling_content(name, SMUGGLING_VECTORS[name], markers[name])
        params = raw_params(mta.host, mta.ports["plain"], "none", certs, content)
        batch.append({"scenario": "send_raw", "params": params})
    results = run_batch(runtime, batch)
    for name, result in zip(names, results, strict=True):
        assert result["outcomes"][0]["ok"], (name, result)
    for name in names:
        marker = markers[name]
        delivered = mta.wait_for_message("ops@example.com", "<%s>" % marker.decode())
        matching = [content for content in mta.delivered("ops@example.com") if marker in content]
        assert len(matching) == 1, (name, matching)
        assert b"\nMAIL FROM:<attacker@example.net>\n" in delivered, (name, delivered)
        assert b"\nSubject: smuggled " + marker + b"\n" in delivered, name
        assert b"\nsmuggled body\n" in delivered, name


def test_nul_in_body_never_sent(runtime, certs):
    names = sorted(NUL_VECTORS)
    servers = [FaultServer(None, "plain") for _ in names]
    try:
        batch = []
        for name, server in zip(names, servers, strict=True):
            content = smuggling_content(name, NUL_VECTORS[name], b"nul@example.com")
            batch.append(
                {"scenario": "send_raw", "params": raw_params(server.host, server.port, "none", certs, content)}
            )
        results = run_batch(runtime, batch)
        for server in servers:
            server.wait_ended()
        for name, result, server in zip(names, results, servers, strict=True):
            outcome = result["outcomes"][0]
            assert outcome.get("error") == "InvalidInputError", (name, outcome)
            assert "NUL" in outcome["message"], (name, outcome)
            received = b"".join(record.received for record in server.connections)
            assert b"\0" not in received, name
            assert all(record.contents == [] for record in server.connections), name
            # The content must not have been ended with "." as if it were complete.
            assert b"\r\n.\r\n" not in received, (name, received)
    finally:
        for server in servers:
            server.stop()


SECRET = "S3cret-Pa55!word"
TOKEN = "ya29.secret-oauth-token"


def secret_forms():
    plain = base64.b64encode(b"\0alice\0" + SECRET.encode()).decode()
    login = base64.b64encode(SECRET.encode()).decode()
    xoauth2 = base64.b64encode(b"user=alice\x01auth=Bearer " + TOKEN.encode() + b"\x01\x01").decode()
    return [SECRET, TOKEN, plain, login, xoauth2, base64.b64encode(TOKEN.encode()).decode()]


def test_credentials_never_in_logs_or_errors(runtime, certs, smtp_server):
    users = {"alice": SECRET}
    wrong = {"alice": "something else"}
    shutdown = Fault.reply(b"421 4.3.2 Shutting down\r\n", then="close")
    scenarios = [
        ("plain ok", FaultServer(certs.server_cert, "tls", users=users), {}),
        ("login ok", FaultServer(certs.server_cert, "tls", users=users, ehlo=("AUTH LOGIN",)), {}),
        ("plain rejected", FaultServer(certs.server_cert, "tls", users=wrong), {}),
        ("login rejected", FaultServer(certs.server_cert, "tls", users=wrong, ehlo=("AUTH LOGIN",)), {}),
        ("421 at auth", FaultServer(certs.server_cert, "tls", faults={"auth": shutdown}), {}),
        ("closed at auth", FaultServer(certs.server_cert, "tls", faults={"auth": Fault.close()}), {}),
        ("stall at auth", FaultServer(certs.server_cert, "tls", faults={"auth": Fault.stall()}), {"timeout_ms": 1500}),
        ("starttls plain ok", FaultServer(certs.server_cert, "starttls", users=users), {}),
    ]
    servers = [server for _, server, _ in scenarios]
    xoauth2_ok = smtp_server("tls", oauth2_tokens={"alice": TOKEN})
    xoauth2_bad = smtp_server("tls", oauth2_tokens={"alice": "another token"})
    try:
        batch = []
        for _, server, extra in scenarios:
            params = params_for(server, certs, password=SECRET, **extra)
            batch.append({"scenario": "deliver", "params": params})
        for server in (xoauth2_ok, xoauth2_bad):
            params = params_for(server, certs, security="tls", oauth2_token=TOKEN)
            del params["password"]
            batch.append({"scenario": "deliver", "params": params})
        results = run_batch(runtime, batch)
        names = [name for name, _, _ in scenarios] + ["xoauth2 ok", "xoauth2 rejected"]
        expected_ok = {"plain ok", "login ok", "starttls plain ok", "xoauth2 ok"}
        for name, result in zip(names, results, strict=True):
            outcome = result["outcomes"][0]
            assert outcome["ok"] is (name in expected_ok), (name, outcome)
            text = json.dumps(result)
            for secret in secret_forms():
                assert secret not in text, (name, secret)
            auth_lines = [line for line in result["transcript"] if line.startswith("--> AUTH")]
            assert auth_lines, (name, result["transcript"])
    finally:
        for server in servers:
            server.stop()
