"""Tests of the `microsmtp send` command against loopback aiosmtpd servers.

Most tests run the installed console script (.venv/bin/microsmtp) in a subprocess,
on both runtimes: in-process CPython and the MicroPython unix port child. Checks of
the child process's failure handling call main() in-process with a stand-in
`micropython` executable.
"""

import base64
import email
import email.policy
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest

import servers
from microsmtp_tools import cli, send_micropython
from microsmtp_tools import send as send_command

PASSWORD = "s3cr3t-Pa55word"
TOKEN = "ya29.token-For-alice"
USER = "alice"
SENDER = "Board <board@example.test>"
RECIPIENT = "bob@example.test"
RUNTIMES = ["cpython", "micropython"]
CLI_TIMEOUT_S = 120

# Forms of the credentials that must never appear in any output.
SECRET_FORMS = [
    PASSWORD,
    TOKEN,
    base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode(),
    base64.b64encode(PASSWORD.encode()).decode(),
    base64.b64encode(("user=alice\x01auth=Bearer %s\x01\x01" % TOKEN).encode()).decode(),
]


def microsmtp_executable():
    path = Path(sys.executable).parent / "microsmtp"
    if not path.is_file():
        pytest.fail("%s not found; run `make setup` to install the command" % path, pytrace=False)
    return str(path)


def run_cli(arguments, env=None, input=b"", password=PASSWORD):
    """Run `microsmtp ARGUMENTS...`; SMTP_PASSWORD is set to password unless it is None."""
    environment = {
        name: value for name, value in os.environ.items() if name not in ("SMTP_PASSWORD", "SMTP_OAUTH2_TOKEN")
    }
    if password is not None:
        environment["SMTP_PASSWORD"] = password
    environment.update(env or {})
    process = subprocess.run(
        [microsmtp_executable(), *arguments],
        input=input,
        capture_output=True,
        env=environment,
        timeout=CLI_TIMEOUT_S,
    )
    process.out = process.stdout.decode("utf-8", "replace")
    process.err = process.stderr.decode("utf-8", "replace")
    return process


def describe(process):
    return "exit status %s\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        process.returncode,
        process.out,
        process.err,
    )


def assert_no_secret(process):
    for secret in SECRET_FORMS:
        assert secret not in process.out, describe(process)
        assert secret not in process.err, describe(process)


def send_arguments(server, ca_path, runtime="cpython", security="starttls", user=USER, extra=()):
    arguments = [
        "send",
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--security",
        security,
        "--from",
        SENDER,
        "--to",
        RECIPIENT,
        "--subject",
        "Temperature alert",
        "--body",
        "Greenhouse at 41.5 C",
        "--timeout",
        "20000",
        "--runtime",
        runtime,
    ]
    if ca_path is not None:
        arguments += ["--ca", str(ca_path)]
    if user is not None:
        arguments += ["--user", user]
    return arguments + list(extra)


def start_server(smtp_server, mode, **options):
    """Start a test server whose only user is USER with PASSWORD, unless options set other users."""
    options.setdefault("users", {USER: PASSWORD})
    return smtp_server(mode, **options)


def parse_message(content):
    return email.message_from_bytes(content, policy=email.policy.default)


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    """Each runtime name; the micropython case fails when the unix port is missing."""
    if request.param == "micropython":
        request.getfixturevalue("micropython")
    return request.param


@pytest.fixture
def closed_port():
    """A loopback port that is bound but not listening, so connecting is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((servers.HOST, 0))
    yield sock.getsockname()[1]
    sock.close()


# -- delivery ----------------------------------------------------------------------------


@pytest.mark.parametrize("ca_format", ["pem", "der"])
def test_send_starttls_auth_delivers(smtp_server, certs, runtime, ca_format, tmp_path):
    server = start_server(smtp_server, "starttls")
    ca_path = certs.ca_pem_path if ca_format == "pem" else certs.ca_der_path
    attachment = tmp_path / "readings.csv"
    attachment_data = b"time,temperature\n12:00,41.5\n" + bytes(range(256))
    attachment.write_bytes(attachment_data)

    process = run_cli(send_arguments(server, ca_path, runtime, extra=["--attach", str(attachment)]))

    assert process.returncode == 0, describe(process)
    assert process.out.startswith("delivered <"), describe(process)
    assert "to %s; refused: none" % RECIPIENT in process.out, describe(process)
    assert len(server.messages) == 1
    delivered = server.messages[0]
    assert delivered.user == USER
    assert delivered.tls is True
    assert delivered.rcpt_tos == [RECIPIENT]
    message = parse_message(delivered.content)
    assert message["Subject"] == "Temperature alert"
    assert message["Message-ID"] in process.out
    body = message.get_body(preferencelist=("plain",))
    assert body.get_content().strip() == "Greenhouse at 41.5 C"
    attachments = list(message.iter_attachments())
    assert len(attachments) == 1
    assert attachments[0].get_filename() == "readings.csv"
    assert attachments[0].get_content_type() == "text/csv"
    assert attachments[0].get_payload(decode=True) == attachment_data
    assert_no_secret(process)


def test_send_implicit_tls_delivers(smtp_server, certs, runtime):
    server = start_server(smtp_server, "tls")

    process = run_cli(send_arguments(server, certs.ca_pem_path, runtime, security="tls"))

    assert process.returncode == 0, describe(process)
    assert server.messages[0].tls is True
    assert server.messages[0].user == USER


def test_send_ca_bundle_and_local_name(smtp_server, certs, runtime, tmp_path):
    server = start_server(smtp_server, "starttls")
    bundle = tmp_path / "bundle.pem"
    # The trusted CA comes second, so every certificate of the file must be loaded.
    bundle.write_bytes(certs.other_ca.cert_pem.bytes() + certs.ca_pem)

    process = run_cli(send_arguments(server, bundle, runtime, extra=["--local-name", "board-7.example.test"]))

    assert process.returncode == 0, describe(process)
    assert server.messages[0].helo_name == "board-7.example.test"


def test_send_micropython_with_heap(smtp_server, certs, micropython):
    server = start_server(smtp_server, "starttls")

    process = run_cli(send_arguments(server, certs.ca_der_path, "micropython", extra=["--heap", "256K"]))

    assert process.returncode == 0, describe(process)
    assert len(server.messages) == 1


def test_send_micropython_heap_too_small(smtp_server, certs, micropython):
    server = start_server(smtp_server, "starttls")

    process = run_cli(send_arguments(server, certs.ca_der_path, "micropython", extra=["--heap", "64K"]))

    assert process.returncode == 78, describe(process)
    assert "ran out of memory" in process.err, describe(process)
    assert "--heap" in process.err, describe(process)
    assert server.messages == []


def test_send_body_from_stdin(smtp_server, certs, runtime):
    server = start_server(smtp_server, "starttls")
    arguments = send_arguments(server, certs.ca_pem_path, runtime)
    body_index = arguments.index("--body")
    del arguments[body_index : body_index + 2]

    process = run_cli(arguments, input="first line\nzweite Zeile: Grüße\n".encode())

    assert process.returncode == 0, describe(process)
    message = parse_message(server.messages[0].content)
    assert message.get_content().replace("\r\n", "\n") == "first line\nzweite Zeile: Grüße\n"


def test_send_password_file_strips_newline(smtp_server, certs, tmp_path):
    server = start_server(smtp_server, "starttls")
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    arguments = send_arguments(server, certs.ca_pem_path, extra=["--password-file", str(password_file)])

    process = run_cli(arguments, password=None)

    assert process.returncode == 0, describe(process)
    assert server.messages[0].user == USER


def test_send_oauth2_token(smtp_server, certs, runtime):
    server = start_server(smtp_server, "starttls", oauth2_tokens={USER: TOKEN})
    arguments = send_arguments(server, certs.ca_pem_path, runtime, extra=["--transcript"])

    process = run_cli(arguments, env={"SMTP_OAUTH2_TOKEN": TOKEN}, password=None)

    assert process.returncode == 0, describe(process)
    assert server.messages[0].user == USER
    assert "--> AUTH XOAUTH2 <redacted>" in process.err, describe(process)
    assert_no_secret(process)


def test_send_reports_refused_recipient(smtp_server, certs, runtime):
    server = start_server(smtp_server, "starttls", rcpt_replies={"nobody@example.test": "550 5.1.1 No such user"})
    arguments = send_arguments(server, certs.ca_pem_path, runtime, extra=["--cc", "nobody@example.test"])

    process = run_cli(arguments)

    assert process.returncode == 0, describe(process)
    assert "to %s;" % RECIPIENT in process.out, describe(process)
    assert "refused: nobody@example.test (550" in process.out, describe(process)
    assert server.messages[0].rcpt_tos == [RECIPIENT]


# -- transcript ----------------------------------------------------------------------------


def test_transcript_redacts_auth(smtp_server, certs, runtime):
    server = start_server(smtp_server, "starttls")

    process = run_cli(send_arguments(server, certs.ca_pem_path, runtime, extra=["--transcript"]))

    assert process.returncode == 0, describe(process)
    assert "--> EHLO " in process.err, describe(process)
    assert "--> STARTTLS" in process.err, describe(process)
    assert "--> AUTH PLAIN <redacted>" in process.err, describe(process)
    assert "<-- 235 " in process.err, describe(process)
    assert_no_secret(process)


def test_transcript_absent_by_default(smtp_server, certs):
    server = start_server(smtp_server, "starttls")

    process = run_cli(send_arguments(server, certs.ca_pem_path))

    assert process.returncode == 0, describe(process)
    assert "-->" not in process.err, describe(process)


# -- permanent and transient failures ------------------------------------------------------


def test_wrong_password_is_permanent(smtp_server, certs, runtime):
    server = start_server(smtp_server, "starttls", users={USER: "another-password"})

    process = run_cli(send_arguments(server, certs.ca_pem_path, runtime, extra=["--transcript"]))

    assert process.returncode == 69, describe(process)
    assert process.err.count("microsmtp: error: ") == 1, describe(process)
    assert "(auth, permanent)" in process.err, describe(process)
    assert "535" in process.err, describe(process)
    assert server.messages == []
    assert_no_secret(process)


@pytest.mark.parametrize("case", ["wrong_ca", "wrong_server_name", "expired"])
def test_certificate_failure_is_permanent(smtp_server, certs, runtime, case):
    cert = {"wrong_ca": certs.wrong_ca_cert, "expired": certs.expired_cert}.get(case)
    server = start_server(smtp_server, "starttls", cert=cert)
    extra = ["--server-name", servers.WRONG_HOSTNAME] if case == "wrong_server_name" else []

    process = run_cli(send_arguments(server, certs.ca_pem_path, runtime, extra=extra))

    assert process.returncode == 69, describe(process)
    assert "certificate verification failed" in process.err, describe(process)
    assert "(tls, permanent)" in process.err, describe(process)
    assert server.messages == []
    # Verification failed before AUTH, so the server never saw the credentials.
    for connection in server.connections:
        assert b"AUTH" not in connection.received


def test_implicit_tls_expired_certificate(smtp_server, certs, runtime):
    server = start_server(smtp_server, "tls", cert=certs.expired_cert)

    process = run_cli(send_arguments(server, certs.ca_der_path, runtime, security="tls"))

    assert process.returncode == 69, describe(process)
    assert "certificate verification failed" in process.err, describe(process)


def test_starttls_not_offered_is_permanent(smtp_server, certs, runtime):
    server = start_server(smtp_server, "starttls", advertise_starttls=False)

    process = run_cli(send_arguments(server, certs.ca_pem_path, runtime))

    assert process.returncode == 69, describe(process)
    assert "does not offer STARTTLS" in process.err, describe(process)
    assert server.messages == []
    assert_no_secret(process)


def test_server_not_listening_is_transient(closed_port, certs, runtime):
    server = types.SimpleNamespace(host=servers.HOST, port=closed_port)

    process = run_cli(send_arguments(server, certs.ca_pem_path, runtime, extra=["--timeout", "5000"]))

    assert process.returncode == 75, describe(process)
    assert ", transient)" in process.err, describe(process)
    assert "refused" in process.err.lower() or "ECONNREFUSED" in process.err, describe(process)


def test_temporary_mail_reply_is_transient(smtp_server, certs, runtime):
    server = start_server(smtp_server, "starttls", mail_reply="451 4.3.0 Try again later")

    process = run_cli(send_arguments(server, certs.ca_pem_path, runtime))

    assert process.returncode == 75, describe(process)
    assert "(mail, transient)" in process.err, describe(process)
    assert "451" in process.err, describe(process)


def test_every_recipient_refused_is_permanent(smtp_server, certs, runtime):
    server = start_server(smtp_server, "starttls", rcpt_replies={RECIPIENT: "550 5.1.1 No such user"})

    process = run_cli(send_arguments(server, certs.ca_pem_path, runtime))

    assert process.returncode == 69, describe(process)
    assert "(rcpt, permanent)" in process.err, describe(process)


# -- configuration and usage errors ----------------------------------------------------------


def test_missing_ca_file_is_config_error(smtp_server, tmp_path, runtime):
    server = start_server(smtp_server, "starttls")

    process = run_cli(send_arguments(server, tmp_path / "missing.pem", runtime))

    assert process.returncode == 78, describe(process)
    assert "CA file not found" in process.err, describe(process)
    assert server.connections == []


def test_ca_file_without_certificate(smtp_server, tmp_path):
    server = start_server(smtp_server, "starttls")
    not_a_certificate = tmp_path / "key.pem"
    not_a_certificate.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")

    process = run_cli(send_arguments(server, not_a_certificate))

    assert process.returncode == 78, describe(process)
    assert "neither a PEM nor a DER certificate" in process.err, describe(process)


def test_micropython_requires_ca(smtp_server):
    server = start_server(smtp_server, "starttls")

    process = run_cli(send_arguments(server, None, "micropython"))

    assert process.returncode == 78, describe(process)
    assert "needs --ca" in process.err, describe(process)
    assert server.connections == []


@pytest.mark.parametrize(
    "arguments",
    [
        ["--password", PASSWORD],
        ["--password=" + PASSWORD],
        ["--pass", PASSWORD],
        ["--oauth2-token", TOKEN],
    ],
)
def test_secret_on_argv_is_usage_error(arguments):
    process = run_cli(
        ["send", "--host", servers.HOST, "--from", SENDER, "--to", RECIPIENT, *arguments],
        password=None,
    )

    assert process.returncode == 2, describe(process)
    assert "is not an option" in process.err, describe(process)
    assert_no_secret(process)


def test_unknown_option_is_usage_error():
    process = run_cli(["send", "--host", servers.HOST, "--from", SENDER, "--to", RECIPIENT, "--bogus"])

    assert process.returncode == 2, describe(process)


def test_heap_with_cpython_is_config_error(smtp_server, certs):
    server = start_server(smtp_server, "starttls")

    process = run_cli(send_arguments(server, certs.ca_pem_path, extra=["--heap", "256K"]))

    assert process.returncode == 78, describe(process)
    assert "--runtime micropython" in process.err, describe(process)
    assert server.connections == []


def test_unreadable_password_file_is_config_error(smtp_server, certs, tmp_path):
    server = start_server(smtp_server, "starttls")
    missing = tmp_path / "no-such-password-file"
    arguments = send_arguments(server, certs.ca_pem_path, extra=["--password-file", str(missing)])

    process = run_cli(arguments)

    assert process.returncode == 78, describe(process)
    assert str(missing) in process.err, describe(process)
    assert server.connections == []


def test_header_injection_is_config_error(smtp_server, certs, runtime):
    server = start_server(smtp_server, "starttls")
    arguments = send_arguments(server, certs.ca_pem_path, runtime)
    arguments[arguments.index("--subject") + 1] = "alert\r\nBcc: eve@example.test"

    process = run_cli(arguments)

    assert process.returncode == 78, describe(process)
    assert "invalid input" in process.err, describe(process)
    assert server.messages == []


# -- in-process checks of the options -----------------------------------------------------


def base_argv(*extra):
    return ["send", "--host", servers.HOST, "--port", "1", "--from", SENDER, "--to", RECIPIENT, "--body", "x", *extra]


def test_user_without_secret_is_config_error(capsys, monkeypatch):
    monkeypatch.delenv("SMTP_PASSWORD", raising=False)
    monkeypatch.delenv("SMTP_OAUTH2_TOKEN", raising=False)

    status = cli.main(base_argv("--user", USER))

    assert status == 78
    assert "--user is given without a secret" in capsys.readouterr().err


def test_password_without_user_is_config_error(capsys, monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)

    status = cli.main(base_argv())

    captured = capsys.readouterr()
    assert status == 78
    assert "--user is missing" in captured.err
    assert PASSWORD not in captured.err


def test_password_and_token_is_config_error(capsys, monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    monkeypatch.setenv("SMTP_OAUTH2_TOKEN", TOKEN)

    status = cli.main(base_argv("--user", USER))

    assert status == 78
    assert "both a password and an OAuth2 token" in capsys.readouterr().err


def test_credentials_over_plaintext_is_config_error(capsys, monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)

    status = cli.main(base_argv("--user", USER, "--security", "none"))

    assert status == 78
    assert "plaintext" in capsys.readouterr().err


@pytest.mark.parametrize("heap", ["0", "64KB", "-1", "abc"])
def test_invalid_heap_is_usage_error(heap, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(base_argv("--runtime", "micropython", "--heap", heap))

    assert exit_info.value.code == 2
    assert "invalid heap size" in capsys.readouterr().err


def test_redactor_replaces_every_form():
    redactor = send_command.Redactor()
    redactor.add(PASSWORD, USER)

    text = redactor("pw %s plain %s" % (PASSWORD, SECRET_FORMS[2]))

    assert PASSWORD not in text
    assert SECRET_FORMS[2] not in text
    assert text.count("<redacted>") == 2


# -- failures of the MicroPython child process --------------------------------------------


def fake_micropython(tmp_path, monkeypatch, script):
    """Make `microsmtp send` run a shell script in place of the unix port."""
    path = tmp_path / "micropython"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    monkeypatch.setattr(send_micropython, "find_micropython", lambda: str(path))


def micropython_argv(certs, *extra):
    return base_argv("--runtime", "micropython", "--ca", str(certs.ca_pem_path), *extra)


def test_micropython_missing_is_config_error(certs, capsys, monkeypatch):
    monkeypatch.setattr(send_micropython, "find_micropython", lambda: None)

    status = cli.main(micropython_argv(certs))

    assert status == 78
    assert "micropython executable was not found" in capsys.readouterr().err


def test_micropython_hang_is_stopped(certs, capsys, monkeypatch, tmp_path):
    fake_micropython(tmp_path, monkeypatch, "exec sleep 60\n")
    monkeypatch.setattr(send_micropython, "CHILD_MARGIN_S", 0.5)

    status = cli.main(micropython_argv(certs, "--timeout", "200"))

    assert status == 75
    assert "did not finish" in capsys.readouterr().err


def test_micropython_crash_is_transient(certs, capsys, monkeypatch, tmp_path):
    fake_micropython(
        tmp_path,
        monkeypatch,
        "cat > /dev/null\necho 'Traceback (most recent call last):' >&2\necho 'OSError: [Errno 5] EIO' >&2\nexit 1\n",
    )

    status = cli.main(micropython_argv(certs))

    err = capsys.readouterr().err
    assert status == 75
    assert "exit status 1" in err
    assert "OSError: [Errno 5] EIO" in err


def test_micropython_memory_error_on_stderr(certs, capsys, monkeypatch, tmp_path):
    fake_micropython(
        tmp_path,
        monkeypatch,
        "cat > /dev/null\necho 'MemoryError: memory allocation failed, allocating 4096 bytes' >&2\nexit 1\n",
    )

    status = cli.main(micropython_argv(certs, "--heap", "32K"))

    err = capsys.readouterr().err
    assert status == 78
    assert "ran out of memory with --heap 32K" in err


def test_child_secret_only_on_stdin(certs, capsys, monkeypatch, tmp_path):
    fake_micropython(
        tmp_path,
        monkeypatch,
        'echo "$@" > %s/argv\nenv > %s/env\ncat > %s/stdin\nexit 1\n' % ((tmp_path,) * 3),
    )
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)

    cli.main(micropython_argv(certs, "--user", USER))

    assert PASSWORD not in (tmp_path / "argv").read_text()
    environment = (tmp_path / "env").read_text()
    assert PASSWORD not in environment
    assert "MICROPYPATH=.frozen:" in environment
    assert PASSWORD in (tmp_path / "stdin").read_text()
    assert PASSWORD not in capsys.readouterr().err
