"""Checks of the test servers and certificates in servers.py.

CPython's smtplib and a plain-socket MicroPython script act as clients, so a
failure here points at the fixtures, not at microsmtp.
"""

import base64
import smtplib
import socket
import ssl

import pytest

import unix_port

RAW_MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Bob <bob@example.test>\r\n"
    b"Subject: raw bytes\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b".leading dot\r\n"
    b"Gr\xc3\xbc\xc3\x9fe \xe2\x80\x94 8-bit UTF-8\r\n"
    b"trailing spaces   \r\n"
)


def plain_auth_argument(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()


def test_starttls_auth_delivers_raw_bytes(smtp_server, certs):
    server = smtp_server()
    with smtplib.SMTP(server.host, server.port, local_hostname="client.test", timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth")
        smtp.starttls(context=certs.client_context())
        smtp.ehlo()
        assert "PLAIN" in smtp.esmtp_features["auth"]
        smtp.login("alice", "secret")
        refused = smtp.sendmail(
            "alice@example.test", ["bob@example.test"], RAW_MESSAGE, mail_options=["BODY=8BITMIME"]
        )
    assert refused == {}

    assert len(server.messages) == 1
    message = server.messages[0]
    assert message.content == RAW_MESSAGE
    assert message.mail_from == "alice@example.test"
    assert message.rcpt_tos == ["bob@example.test"]
    assert "BODY=8BITMIME" in message.mail_options
    assert message.user == "alice"
    assert message.tls is True
    assert message.helo_name == "client.test"


def test_transcript_shows_dot_stuffing(smtp_server, certs):
    server = smtp_server()
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.starttls(context=certs.client_context())
        smtp.login("alice", "secret")
        smtp.sendmail("alice@example.test", ["bob@example.test"], RAW_MESSAGE)

    assert len(server.connections) == 1
    received = server.connections[0].received
    assert b"\r\n..leading dot\r\n" in received
    assert received.endswith(b"QUIT\r\n")
    assert server.connections[0].replies.startswith(b"220 localhost ")


def test_auth_login_mechanism(smtp_server, certs):
    server = smtp_server(auth_mechanisms=("LOGIN",))
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.starttls(context=certs.client_context())
        smtp.ehlo()
        assert smtp.esmtp_features["auth"].split() == ["LOGIN"]
        smtp.login("alice", "secret")
        smtp.sendmail("alice@example.test", ["bob@example.test"], RAW_MESSAGE)
    assert server.messages[0].user == "alice"


def test_implicit_tls_delivers(smtp_server, certs):
    server = smtp_server("tls")
    with smtplib.SMTP_SSL(
        server.host, server.port, context=certs.client_context(), timeout=10
    ) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("starttls")
        smtp.login("alice", "secret")
        smtp.sendmail("alice@example.test", ["bob@example.test"], RAW_MESSAGE)

    assert len(server.messages) == 1
    assert server.messages[0].content == RAW_MESSAGE
    assert server.messages[0].user == "alice"
    assert server.messages[0].tls is True


def test_implicit_tls_requires_auth(smtp_server, certs):
    server = smtp_server("tls")
    with smtplib.SMTP_SSL(
        server.host, server.port, context=certs.client_context(), timeout=10
    ) as smtp:
        smtp.ehlo()
        code, _ = smtp.mail("alice@example.test")
    assert code == 530
    assert server.messages == []


def test_auth_before_starttls_rejected(smtp_server):
    server = smtp_server()
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.ehlo()
        code, text = smtp.docmd("AUTH", "PLAIN " + plain_auth_argument("alice", "secret"))
        assert code == 530, text
        code, text = smtp.mail("alice@example.test")
        assert code == 530, text
    assert server.messages == []


def test_auth_without_tls_gives_538(smtp_server):
    server = smtp_server(require_starttls=False)
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.ehlo()
        code, text = smtp.docmd("AUTH", "PLAIN " + plain_auth_argument("alice", "secret"))
    assert code == 538, text


def test_wrong_password_gives_535(smtp_server, certs):
    server = smtp_server()
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.starttls(context=certs.client_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as error:
            smtp.login("alice", "wrong")
    assert error.value.smtp_code == 535
    assert server.messages == []


def test_unknown_user_gives_535(smtp_server, certs):
    server = smtp_server()
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.starttls(context=certs.client_context())
        smtp.ehlo()
        code, text = smtp.docmd("AUTH", "PLAIN " + plain_auth_argument("mallory", "secret"))
    assert code == 535, text


def xoauth2_argument(user, token):
    response = "user=%s\x01auth=Bearer %s\x01\x01" % (user, token)
    return base64.b64encode(response.encode()).decode()


def test_xoauth2_accepts_token(smtp_server, certs):
    server = smtp_server(oauth2_tokens={"alice": "token-1"})
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.starttls(context=certs.client_context())
        smtp.ehlo()
        assert "XOAUTH2" in smtp.esmtp_features["auth"].split()
        code, text = smtp.docmd("AUTH", "XOAUTH2 " + xoauth2_argument("alice", "token-1"))
        assert code == 235, text
        smtp.sendmail("alice@example.test", ["bob@example.test"], RAW_MESSAGE)
    assert server.messages[0].user == "alice"


def test_xoauth2_rejects_wrong_token(smtp_server, certs):
    server = smtp_server(oauth2_tokens={"alice": "token-1"})
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.starttls(context=certs.client_context())
        smtp.ehlo()
        code, text = smtp.docmd("AUTH", "XOAUTH2 " + xoauth2_argument("alice", "stale"))
        assert code == 334, text
        assert b'"status": "401"' in base64.b64decode(text)
        code, text = smtp.docmd("")
        assert code == 535, text


def test_xoauth2_not_offered_without_tokens(smtp_server, certs):
    server = smtp_server()
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.starttls(context=certs.client_context())
        smtp.ehlo()
        assert "XOAUTH2" not in smtp.esmtp_features["auth"].split()


def test_plain_mode_delivers_without_tls(smtp_server):
    server = smtp_server("plain")
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("starttls")
        assert not smtp.has_extn("auth")
        smtp.sendmail("alice@example.test", ["bob@example.test"], RAW_MESSAGE)
    assert server.messages[0].content == RAW_MESSAGE
    assert server.messages[0].tls is False
    assert server.messages[0].user is None


def test_starttls_hidden_accepts_plaintext_mail(smtp_server):
    server = smtp_server(advertise_starttls=False, auth_required=False)
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("starttls")
        smtp.sendmail("alice@example.test", ["bob@example.test"], RAW_MESSAGE)
    assert server.messages[0].tls is False


def test_ehlo_extra_keywords(smtp_server, certs):
    server = smtp_server(ehlo_extra=("PIPELINING", "ENHANCEDSTATUSCODES"))
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("pipelining")
        assert smtp.has_extn("enhancedstatuscodes")
        assert smtp.has_extn("starttls")


def test_pipelined_commands_replied_in_order(smtp_server):
    server = smtp_server("plain", ehlo_extra=("PIPELINING",))
    with socket.create_connection(server.address, timeout=10) as client:
        stream = client.makefile("rb")
        assert stream.readline().startswith(b"220 ")
        client.sendall(
            b"EHLO client.test\r\n"
            b"MAIL FROM:<alice@example.test>\r\n"
            b"RCPT TO:<bob@example.test>\r\n"
            b"DATA\r\n"
        )
        codes = []
        while len(codes) < 4:
            line = stream.readline()
            if line[3:4] == b" ":
                codes.append(int(line[:3]))
        assert codes == [250, 250, 250, 354]
        client.sendall(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert stream.readline().startswith(b"250 ")
        assert stream.readline().startswith(b"221 ")
    assert server.messages[0].content == b"Subject: pipelined\r\n\r\nbody\r\n"


def test_smtputf8_address_preserved(smtp_server, certs):
    server = smtp_server()
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.starttls(context=certs.client_context())
        smtp.login("alice", "secret")
        smtp.sendmail(
            "jörg@example.test", ["zoë@example.test"], RAW_MESSAGE, mail_options=["SMTPUTF8"]
        )
    message = server.messages[0]
    assert message.mail_from == "jörg@example.test"
    assert message.rcpt_tos == ["zoë@example.test"]
    assert message.smtputf8 is True


def test_reply_overrides(smtp_server, certs):
    server = smtp_server(
        rcpt_replies={"nobody@example.test": "550 5.1.1 No such user"},
        data_reply="451 4.3.0 Try again later",
    )
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.starttls(context=certs.client_context())
        smtp.login("alice", "secret")
        smtp.mail("alice@example.test")
        assert smtp.rcpt("nobody@example.test")[0] == 550
        assert smtp.rcpt("bob@example.test")[0] == 250
        assert smtp.data(RAW_MESSAGE)[0] == 451
    assert server.messages == []


def test_mail_reply_override(smtp_server, certs):
    server = smtp_server(mail_reply="421 4.3.2 Shutting down")
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.starttls(context=certs.client_context())
        smtp.login("alice", "secret")
        assert smtp.mail("alice@example.test")[0] == 421


@pytest.mark.parametrize(
    "cert_name", ["wrong_host_cert", "expired_cert", "not_yet_valid_cert", "wrong_ca_cert"]
)
def test_bad_certificates_fail_verification(smtp_server, certs, cert_name):
    server = smtp_server(cert=getattr(certs, cert_name))
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        with pytest.raises(ssl.SSLCertVerificationError):
            smtp.starttls(context=certs.client_context())


def test_certificate_files_match_ca(certs):
    assert certs.ca_der_path.read_bytes() == certs.ca_der
    assert certs.ca_pem_path.read_bytes() == certs.ca_pem
    assert ssl.DER_cert_to_PEM_cert(certs.ca_der).encode() == certs.ca_pem
    assert certs.other_ca_der != certs.ca_der


def test_stop_closes_listener(smtp_server):
    server = smtp_server("plain")
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.noop()
    server.stop()
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=2).close()


def test_stop_with_open_connection(smtp_server):
    server = smtp_server("plain")
    client = socket.create_connection(server.address, timeout=10)
    try:
        assert client.recv(100).startswith(b"220 ")
        server.stop()
        assert client.recv(100) == b""
    finally:
        client.close()


# A blocking-socket SMTP client for the MicroPython unix port. It checks that
# mbedTLS accepts the test certificates and that both TLS modes deliver.
MICROPYTHON_CLIENT = """
import binascii
import socket
import ssl
import sys

mode, host, port, ca_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def reply(stream):
    while True:
        line = stream.readline()
        if not line:
            raise OSError("connection closed")
        if line[3:4] != b"-":
            return int(line[:3])

def command(stream, line, expected):
    stream.write(line + b"\\r\\n")
    code = reply(stream)
    if code != expected:
        raise AssertionError("%s -> %d, expected %d" % (line, code, expected))

def wrap(sock):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_mode = ssl.CERT_REQUIRED
    with open(ca_path, "rb") as f:
        context.load_verify_locations(cadata=f.read())
    return context.wrap_socket(sock, server_hostname="localhost")

sock = socket.socket()
sock.connect(socket.getaddrinfo(host, port)[0][-1])
if mode == "tls":
    sock = wrap(sock)
if reply(sock) != 220:
    raise AssertionError("expected a 220 greeting")
command(sock, b"EHLO board.test", 250)
if mode == "starttls":
    command(sock, b"STARTTLS", 220)
    sock = wrap(sock)
    command(sock, b"EHLO board.test", 250)
token = binascii.b2a_base64(b"\\x00alice\\x00secret").strip()
command(sock, b"AUTH PLAIN " + token, 235)
command(sock, b"MAIL FROM:<board@example.test>", 250)
command(sock, b"RCPT TO:<bob@example.test>", 250)
command(sock, b"DATA", 354)
command(sock, b"Subject: from the unix port\\r\\n\\r\\nhello\\r\\n.", 250)
command(sock, b"QUIT", 221)
sock.close()
print("delivered")
"""


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_micropython_client_delivers(smtp_server, certs, micropython, tmp_path, mode):
    server = smtp_server(mode)
    script = tmp_path / "client.py"
    script.write_text(MICROPYTHON_CLIENT)
    process = unix_port.run_micropython(
        [str(script), mode, server.host, str(server.port), str(certs.ca_der_path)],
        executable=micropython,
        timeout=60,
    )
    output = unix_port.format_output(process)
    assert process.returncode == 0, output
    assert "delivered" in process.stdout, output
    assert server.messages[0].content == b"Subject: from the unix port\r\n\r\nhello\r\n"
    assert server.messages[0].user == "alice"
    assert server.messages[0].tls is True
