"""Fault matrix: the client against a server that fails at every stage, on both runtimes.

Each case starts a FaultServer (tests/fault_server.py) with one fault, sends a message
with a 2 s deadline and checks the outcome: the typed error (class, stage, transient
flag) or success, what the client sent after the fault, and that the connection was
closed. All cases of one runtime run first, in one process under MicroPython, then
each test checks its case.
"""

import base64

import pytest
from fault_server import DEFAULT_EHLO, Fault, FaultServer
from test_postfix import RUNTIMES, run_batch

TIMEOUT_MS = 2000


class Case:
    """One fault and its expected outcome.

    ``expect`` is the error class name, or "ok"; ``stage`` and ``transient`` are the
    error's. ``server`` contains FaultServer options, ``params`` client scenario options.
    ``checks`` names extra checks (see check_extra). ``xfail`` maps a runtime to the
    reason a known library failure is expected there.
    """

    def __init__(
        self,
        name,
        expect,
        stage=None,
        transient=None,
        server=None,
        params=None,
        checks=(),
        xfail=None,
        scenario="deliver",
    ):
        self.name = name
        self.expect = expect
        self.stage = stage
        self.transient = transient
        self.server = dict(server or {})
        self.params = dict(params or {})
        self.checks = tuple(checks)
        self.xfail = dict(xfail or {})
        self.scenario = scenario


def reply(data, then="stall"):
    return Fault.reply(data, then=then)


def message_spec(number=1, **overrides):
    spec = {
        "sender": "board@example.com",
        "to": ["ops@example.com"],
        "subject": "Fault matrix %d" % number,
        "text": "Freezer at -4.5 C.\n",
        "date": [2026, 12, 4, 20, 10, 26, 4, 338],
        "message_id": "<fault-%d@example.com>" % number,
    }
    spec.update(overrides)
    return spec


def build_cases():
    cases = []

    def add(*args, **kwargs):
        cases.append(Case(*args, **kwargs))

    # -- STARTTLS downgrade and response injection ------------------------------------------
    no_secrets = ("no_auth", "no_mail")
    add(
        "starttls_not_advertised",
        "SecurityError",
        "ehlo",
        False,
        {"advertise_starttls": False},
        checks=no_secrets + ("no_starttls",),
    )
    for code, transient in ((454, True), (501, False), (502, False), (354, False)):
        add(
            "starttls_reply_%d" % code,
            "SecurityError",
            "starttls",
            transient,
            {"faults": {"starttls": reply(b"%d 4.7.0 no TLS for you\r\n" % code)}},
            checks=no_secrets + ("nothing_after_fault",),
        )
    add(
        "starttls_plaintext_after_220",
        "ProtocolError",
        "starttls",
        True,
        {"faults": {"starttls": reply(b"220 2.0.0 Go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n")}},
        checks=no_secrets,
        params={"accept": ["ProtocolError", "SecurityError"]},
    )
    add(
        "starttls_fragment_after_220",
        "ProtocolError",
        "starttls",
        True,
        {"faults": {"starttls": reply(b"220 2.0.0 Go ahead\r\n250-frag")}},
        checks=no_secrets,
        params={"accept": ["ProtocolError", "SecurityError"]},
    )
    add(
        "starttls_454_then_fake_success",
        "SecurityError",
        "starttls",
        True,
        {
            "faults": {
                "starttls": reply(
                    b"454 4.7.0 TLS not available\r\n220 2.0.0 Go ahead\r\n250 2.0.0 fake\r\n235 2.7.0 fake auth\r\n"
                )
            }
        },
        checks=no_secrets + ("nothing_after_fault",),
    )
    add(
        "non_esmtp_server_tls_required",
        "SecurityError",
        "ehlo",
        False,
        {"faults": {"ehlo": reply(b"500 5.5.1 Command unrecognized\r\n", then="continue")}},
        checks=no_secrets + ("no_helo",),
    )
    add(
        "many_auth_before_tls_plain_after",
        "ok",
        server={
            "ehlo": ("AUTH CRAM-MD5 DIGEST-MD5 GSSAPI NTLM LOGIN PLAIN XOAUTH2", "SIZE 1000000"),
            "ehlo_tls": ("AUTH PLAIN", "SIZE 1000000"),
        },
        checks=("auth_plain", "delivered"),
    )
    add(
        "auth_list_reread_after_tls",
        "ok",
        server={"ehlo": ("AUTH PLAIN LOGIN",), "ehlo_tls": ("AUTH LOGIN",)},
        checks=("auth_login", "delivered"),
    )

    # -- Malformed and oversized replies -------------------------------------------------------
    add("greeting_bad_code", "ProtocolError", "greeting", True, {"faults": {"greeting": reply(b"2x0 hello\r\n")}})
    add(
        "greeting_code_without_separator",
        "ProtocolError",
        "greeting",
        True,
        {"faults": {"greeting": reply(b"220hello\r\n")}},
    )
    add(
        "ehlo_code_changes_in_reply",
        "ProtocolError",
        "ehlo",
        True,
        {"faults": {"ehlo": reply(b"250-fault.example\r\n251-SIZE 100\r\n250 STARTTLS\r\n")}},
    )
    add("mail_reply_1xx", "ProtocolError", "mail", True, {"mode": "tls", "faults": {"mail": reply(b"150 what\r\n")}})
    add("rcpt_reply_6xx", "ProtocolError", "rcpt", True, {"mode": "tls", "faults": {"rcpt": reply(b"650 what\r\n")}})
    add(
        "greeting_cr_without_lf",
        "ProtocolError",
        "greeting",
        True,
        {"faults": {"greeting": reply(b"220 hello\rworld\r\n")}},
    )
    add(
        "ehlo_line_over_bound",
        "ProtocolError",
        "ehlo",
        True,
        {"faults": {"ehlo": reply(b"250-" + b"x" * 2000 + b"\r\n250 STARTTLS\r\n")}},
    )
    add(
        "ehlo_reply_over_bound",
        "ProtocolError",
        "ehlo",
        True,
        {"faults": {"ehlo": reply((b"250-" + b"y" * 90 + b"\r\n") * 120 + b"250 STARTTLS\r\n")}},
    )
    add(
        "ehlo_endless_continuation",
        "ProtocolError",
        "ehlo",
        True,
        {"faults": {"ehlo": Fault.repeat(b"250-" + b"z" * 60 + b"\r\n")}},
    )
    add(
        "greeting_endless_line",
        "ProtocolError",
        "greeting",
        True,
        {"faults": {"greeting": Fault.repeat(b"220 " + b"w" * 100)}},
    )
    add(
        "greeting_dripped_slowly_but_in_time",
        "ok",
        server={"faults": {"greeting": Fault.drip(b"220 fault.example ESMTP\r\n", 0.02)}},
        checks=("delivered",),
    )
    # Without PIPELINING the client sends one command per reply, so a second reply is
    # unsolicited: the dialogue is out of step and must end in a transient ProtocolError.
    add(
        "extra_reply_after_mail_reply",
        "ProtocolError",
        "mail",
        True,
        {"mode": "tls", "faults": {"mail": reply(b"250 2.1.0 Ok\r\n250 2.1.0 Ok again\r\n", then="continue")}},
        checks=("not_delivered",),
    )
    add(
        "extra_line_after_greeting",
        "ProtocolError",
        "greeting",
        True,
        {"mode": "tls", "faults": {"greeting": reply(b"220 fault.example\r\n250 unsolicited\r\n", then="continue")}},
        checks=("not_delivered",),
    )
    add(
        "unsolicited_421_between_messages",
        "ok",
        None,
        None,
        {"mode": "tls", "faults": {"message": reply(b"250 2.0.0 Ok\r\n421 4.3.2 Shutting down\r\n")}},
        params={"messages": [message_spec(1), message_spec(2)], "second": ["ReplyError", True, 421]},
        checks=("nothing_after_fault",),
    )

    # -- 421 at each stage: no RSET or QUIT afterwards ---------------------------------------
    # 421 means the server is closing the connection, whatever the command was, so
    # every stage reports the same ReplyError rather than a STARTTLS or AUTH failure.
    shutdown = b"421 4.3.2 Service shutting down\r\n"
    for stage, mode in (
        ("greeting", "starttls"),
        ("ehlo", "starttls"),
        ("starttls", "starttls"),
        ("auth", "tls"),
        ("mail", "tls"),
        ("rcpt", "tls"),
        ("data", "tls"),
        ("message", "tls"),
    ):
        add(
            "421_at_%s" % stage,
            "ReplyError",
            stage,
            True,
            {"mode": mode, "faults": {stage: reply(shutdown)}},
            checks=("nothing_after_fault", "code_421"),
        )
    add(
        "421_at_quit_after_delivery",
        "ok",
        server={"mode": "tls", "faults": {"quit": reply(shutdown)}},
        checks=("delivered",),
    )

    # -- Transient and permanent replies to MAIL, RCPT, DATA and the final dot --------------
    for stage, codes in (
        ("mail", (451, 452, 550, 553)),
        ("rcpt", (450, 451, 452, 550, 554)),
        ("data", (451, 503, 554)),
        ("message", (451, 452, 552, 554)),
    ):
        for code in codes:
            error = "RecipientsRefused" if stage == "rcpt" else "ReplyError"
            text = b"%d %d.0.0 fault injected\r\n" % (code, code // 100)
            add(
                "%s_%d" % (stage, code),
                error,
                stage,
                code < 500,
                {"mode": "tls", "faults": {stage: reply(text, "continue")}},
                checks=("not_delivered", "quit_or_nothing"),
            )

    # -- Lost connections, resets and stalls -------------------------------------------------
    for stage, mode in (
        ("greeting", "starttls"),
        ("ehlo", "starttls"),
        ("auth", "tls"),
        ("mail", "tls"),
        ("rcpt", "tls"),
        ("data", "tls"),
        ("message", "tls"),
    ):
        add("close_at_%s" % stage, "ConnectionLost", stage, True, {"mode": mode, "faults": {stage: Fault.close()}})
    add("reset_at_mail_inside_tls", "ConnectionLost", "mail", True, {"mode": "tls", "faults": {"mail": Fault.reset()}})
    # The reset can reach the client before or after it starts the handshake.
    add(
        "reset_before_tls_handshake",
        "ConnectionLost",
        "tls",
        True,
        {"faults": {"tls": Fault.reset()}},
        params={"accept_stage": ["starttls", "tls"]},
    )
    # MicroPython drives the STARTTLS handshake with the first write after it, the EHLO,
    # and a failure there is reported with the EHLO's stage.
    add(
        "reset_mid_tls_handshake",
        "ConnectionLost",
        "tls",
        True,
        {"faults": {"tls": Fault.partial_tls()}},
    )
    add(
        "close_before_tls_handshake",
        "ConnectionLost",
        "tls",
        True,
        {"faults": {"tls": Fault.close()}},
    )
    add(
        "reset_mid_implicit_tls_handshake",
        "ConnectionLost",
        "tls",
        True,
        {"mode": "tls", "faults": {"tls": Fault.partial_tls()}},
        params={"accept_stage": ["tls", "greeting", "connect"]},
    )
    add(
        "garbage_instead_of_tls",
        "SecurityError",
        "tls",
        False,
        {"faults": {"tls": reply(b"HTTP/1.1 400 Bad Request\r\n\r\n", then="continue")}},
    )
    for stage, mode in (("ehlo", "starttls"), ("auth", "tls"), ("rcpt", "tls"), ("message", "tls")):
        add("stall_at_%s" % stage, "Timeout", stage, True, {"mode": mode, "faults": {stage: Fault.stall()}})
    add(
        "stall_at_tls",
        "Timeout",
        "tls",
        True,
        {"faults": {"tls": Fault.stall()}},
    )
    add(
        "drip_too_slow_at_message",
        "Timeout",
        "message",
        True,
        {"mode": "tls", "faults": {"message": Fault.drip(b"250 2.0.0 Ok: queued after a long time\r\n", 0.2)}},
    )
    add(
        "closed_after_final_dot_then_retry",
        "ConnectionLost",
        "message",
        True,
        {"mode": "tls", "faults": {"message": Fault.close()}, "faulty_connections": 1},
        scenario="retry",
        checks=("retry_same_message",),
    )
    # RFC 5321 section 4.5.3.1.10: after 452 "too many recipients" the client sends the
    # rest in a later transaction on the same connection.
    for mode, ehlo in (("tls", None), ("tls", DEFAULT_EHLO + ("PIPELINING",))):
        server = {"mode": mode, "faults": {"rcpt:2": reply(b"452 4.5.3 Too many recipients\r\n", then="continue")}}
        if ehlo:
            server["ehlo"] = ehlo
        add(
            "rcpt_452_splits_rest%s" % ("_pipelined" if ehlo else ""),
            "ok",
            None,
            None,
            server,
            params={"messages": [message_spec(to=["ops@example.com", "team@example.com"])]},
            checks=("split_452",),
        )
    return cases


CASES = build_cases()
CASES_BY_NAME = {case.name: case for case in CASES}
assert len(CASES_BY_NAME) == len(CASES), "duplicate case names"


def client_params(case, server, certs):
    params = {
        "host": server.host,
        "port": server.port,
        "security": server.mode,
        "server_hostname": "localhost",
        "ca_roots": [base64.b64encode(certs.ca_der).decode()],
        "username": "alice",
        "password": "secret",
        "local_hostname": "sensor.example",
        "timeout_ms": TIMEOUT_MS,
        "messages": [message_spec()],
    }
    for key, value in case.params.items():
        if key not in ("accept", "second", "accept_stage"):
            params[key] = value
    return params


@pytest.fixture(scope="module", params=RUNTIMES)
def matrix(request, certs):
    """Run every case on one runtime; return {name: (result, server)}."""
    runtime = request.param
    servers = []
    batch = []
    try:
        for case in CASES:
            options = dict(case.server)
            mode = options.pop("mode", "starttls")
            server = FaultServer(certs.server_cert, mode, **options)
            servers.append(server)
            batch.append({"scenario": case.scenario, "params": client_params(case, server, certs)})
        results = run_batch(runtime, batch)
        for server in servers:
            server.wait_ended()
        yield (
            runtime,
            dict((case.name, (result, server)) for case, result, server in zip(CASES, results, servers, strict=True)),
        )
    finally:
        for server in servers:
            server.stop()


def check_error(case, outcome):
    accepted = case.params.get("accept", [case.expect])
    assert outcome.get("error") in accepted, outcome
    stages = case.params.get("accept_stage", [case.stage])
    assert outcome["stage"] in stages, outcome
    assert outcome["transient"] is case.transient, outcome


def client_commands(server):
    commands = []
    for record in server.connections:
        commands.extend(line.strip().upper() for line in record.commands)
    return commands


def check_extra(case, result, server):
    commands = client_commands(server)
    records = server.connections
    outcome = result["outcomes"][0]
    for check in case.checks:
        if check == "no_auth":
            assert not any(c.startswith(b"AUTH") for c in commands), commands
        elif check == "no_mail":
            assert not any(c.startswith(b"MAIL") for c in commands), commands
        elif check == "no_starttls":
            assert b"STARTTLS" not in commands, commands
        elif check == "no_helo":
            assert not any(c.startswith(b"HELO") for c in commands), commands
        elif check == "nothing_after_fault":
            assert records[0].fault_stage is not None, records
            assert records[0].after_fault == b"", records[0]
        elif check == "quit_or_nothing":
            # After a refused transaction only RSET or QUIT may follow; never DATA content.
            for line in records[0].after_fault.split(b"\r\n"):
                assert line.upper() in (b"", b"RSET", b"QUIT"), records[0]
        elif check == "code_421":
            assert outcome["code"] == 421, outcome
        elif check == "auth_plain":
            assert any(c.startswith(b"AUTH PLAIN ") for c in commands), commands
        elif check == "auth_login":
            assert b"AUTH LOGIN" in commands, commands
        elif check == "delivered":
            assert sum(len(record.contents) for record in records) == len(result["outcomes"]), records
        elif check == "not_delivered":
            assert all(record.contents == [] or record.fault_stage == "message" for record in records), records
        elif check == "split_452":
            assert sorted(outcome["accepted"]) == ["ops@example.com", "team@example.com"], outcome
            rcpts = [c for c in commands if c.startswith(b"RCPT")]
            assert rcpts == [b"RCPT TO:<OPS@EXAMPLE.COM>", b"RCPT TO:<TEAM@EXAMPLE.COM>", b"RCPT TO:<TEAM@EXAMPLE.COM>"]
            assert len(records) == 1, records
            assert len(records[0].contents) == 2, records[0]
            assert records[0].contents[0] == records[0].contents[1]
        elif check == "retry_same_message":
            first, second = result["outcomes"]
            assert second["ok"], second
            assert second["message_id"] == first["message_id"] == "<fault-1@example.com>"
            assert len(records) == 2, records
            assert records[0].contents == records[1].contents, records
            assert b"Message-ID: <fault-1@example.com>\r\n" in records[1].contents[0]
        else:
            raise AssertionError("unknown check %s" % check)


@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_fault(matrix, name, request):
    runtime, results = matrix
    case = CASES_BY_NAME[name]
    if runtime in case.xfail:
        request.applymarker(pytest.mark.xfail(strict=True, reason=case.xfail[runtime]))
    result, server = results[name]
    assert "crash" not in result, result
    outcome = result["outcomes"][0]
    if case.expect == "ok":
        assert outcome["ok"], outcome
    else:
        check_error(case, outcome)
    if "second" in case.params:
        error, transient, code = case.params["second"]
        second = result["outcomes"][1]
        assert second.get("error") == error, second
        assert second["transient"] is transient, second
        assert second["code"] == code, second
    check_extra(case, result, server)
    # Every connection ended: closed by the client, or by the server's fault or QUIT.
    for record in server.connections:
        assert record.ended in ("client", "server"), record
