"""Edge cases of the sans-IO session and the reply parser that a hostile server or a
careless caller can reach.

The tests use plain asserts, so they run on MicroPython and CPython.
"""

from fake_server import FakeServer, converse

from helpers import raises
from microsmtp.auth import b64encode
from microsmtp.errors import AuthError, ConnectionLost, InvalidInputError, ProtocolError, ReplyError, SecurityError
from microsmtp.reply import ReplyParser
from microsmtp.session import CLOSED, NEED_DATA, SEND, Session
from microsmtp.transaction import DataEncoder

PASSWORD = "pw-9f3c-s\u00e9cret"


def ready(server, **options):
    if "security" not in options:
        options["security"] = "tls"
    session = Session("c.example", **options)
    converse(session, server)
    return session


def test_error_is_sticky_and_silent():
    server = FakeServer(replies={"MAIL": b"421 4.3.2 shutting down"})
    session = ready(server)
    transaction = session.mail("a@x.org", ["b@x.org"], b"hi\r\n")
    error = raises(ReplyError, converse, session, server)
    assert error.code == 421
    assert error.transient
    assert transaction.error is error
    for _ in range(3):
        assert raises(ReplyError, session.next_event) is error
        assert session.data_to_send() == b""
    assert not session.usable
    raises(ProtocolError, session.mail, "a@x.org", ["b@x.org"], b"hi\r\n")
    # No QUIT may follow a 421, because the server has closed the connection.
    session.quit()
    assert raises(ReplyError, session.next_event) is error
    assert session.data_to_send() == b""


def test_closed_session_stays_closed():
    server = FakeServer()
    session = ready(server)
    session.quit()
    converse(session, server)
    for _ in range(3):
        assert session.next_event() == CLOSED
    session.quit()
    assert session.next_event() == CLOSED
    assert session.data_to_send() == b""
    raises(ProtocolError, session.mail, "a@x.org", ["b@x.org"], b"hi\r\n")


def test_reply_421_to_quit_closes_cleanly():
    session = ready(FakeServer())
    session.quit()
    assert session.next_event() == SEND
    assert session.data_to_send() == b"QUIT\r\n"
    assert session.next_event() == NEED_DATA
    session.receive_data(b"421 4.3.2 going away\r\n")
    assert session.next_event() == CLOSED


def test_tls_started_without_starttls_refused():
    session = Session("c.example")
    raises(ProtocolError, session.tls_started)
    session = ready(FakeServer())
    raises(ProtocolError, session.tls_started)
    assert session.usable


def test_mail_before_ready_refused():
    session = Session("c.example", security="tls")
    raises(ProtocolError, session.mail, "a@x.org", ["b@x.org"], b"hi\r\n")
    assert session.next_event() == NEED_DATA


def test_hang_up_before_greeting():
    session = Session("c.example", security="tls")
    assert session.next_event() == NEED_DATA
    session.receive_data(b"220 partial gree")
    assert session.next_event() == NEED_DATA
    session.receive_data(b"")
    error = raises(ConnectionLost, session.next_event)
    assert error.stage == "greeting"
    assert error.transient
    assert raises(ConnectionLost, session.next_event) is error


def test_auth_never_sent_in_plaintext():
    server = FakeServer(extensions=("PIPELINING", "AUTH PLAIN LOGIN", "STARTTLS"))
    session = Session("c.example", security="none", username="alice", password=PASSWORD)
    error = raises(SecurityError, converse, session, server)
    assert error.stage == "auth"
    assert server.commands == [b"EHLO c.example"]


def test_auth_334_in_pipeline_stops_before_content():
    replies = {"AUTH": b"334 ", "DATA": b"354 go"}
    server = FakeServer(extensions=("PIPELINING", "CHUNKING", "AUTH PLAIN"), replies=replies)
    session = ready(server, username="alice", password=PASSWORD)
    first = session.mail("a@x.org", ["b@x.org"], b"one\r\n")
    second = session.mail("a@x.org", ["b@x.org"], b"two\r\n")
    error = raises(AuthError, converse, session, server)
    assert first.error is error
    assert second.error is error
    assert server.messages == []
    for command in server.commands:
        assert not command.startswith(b"BDAT")


def test_data_answered_250_sends_no_content():
    server = FakeServer(replies={"DATA": [b"250 ok"]})
    session = ready(server)
    first = session.mail("a@x.org", ["b@x.org"], b"first\r\n")
    converse(session, server)
    assert first.done
    assert first.error.code == 250
    assert first.error.stage == "data"
    assert server.messages == []
    assert session.usable
    second = session.mail("a@x.org", ["b@x.org"], b"second\r\n")
    converse(session, server)
    assert second.ok
    assert server.messages == [b"second\r\n"]


class ShortContent:
    """Content whose second piece cannot be encoded: the heap ran out."""

    def chunks(self):
        yield b"Subject: x\r\n\r\n"
        raise MemoryError("memory allocation failed, allocating 4096 bytes")


def test_memory_error_in_content_is_out_of_memory():
    from microsmtp.errors import OutOfMemory

    server = FakeServer()
    session = ready(server)
    transaction = session.mail("a@x.org", ["b@x.org"], ShortContent())
    error = raises(OutOfMemory, converse, session, server)
    assert error.transient
    assert error.stage == "message"
    assert "MemoryError: memory allocation failed, allocating 4096 bytes" in str(error)
    assert transaction.error is error
    assert not session.usable
    # The sticky error is the same OutOfMemory, and the content never ended.
    assert raises(OutOfMemory, session.next_event) is error
    assert server.messages == []


def test_final_reply_354_is_failure():
    server = FakeServer(replies={"DOT": b"354 again"})
    session = ready(server)
    transaction = session.mail("a@x.org", ["b@x.org"], b"hi\r\n")
    converse(session, server)
    assert not transaction.ok
    assert transaction.error.code == 354
    assert transaction.reply is None


def test_empty_content_with_bdat():
    server = FakeServer(extensions=("PIPELINING", "CHUNKING"))
    session = ready(server)
    session.mail("a@x.org", ["b@x.org"], b"warm-up\r\n")
    transaction = session.mail("a@x.org", ["b@x.org"], b"")
    converse(session, server)
    assert transaction.ok
    assert b"BDAT 0 LAST" in server.commands
    assert server.messages[1] == b""


def test_dot_and_line_end_across_chunks():
    cases = (
        ([b"a\r", b"\n.", b"b"], b"a\r\n..b\r\n.\r\n"),
        ([b"a\r", b".b"], b"a\r\n..b\r\n.\r\n"),
        ([b"\r", b"\r", b"\n", b"."], b"\r\n\r\n..\r\n.\r\n"),
        ([b".", b"\n", b".", b"\r"], b"..\r\n..\r\n.\r\n"),
        ([b"", b"", b""], b".\r\n"),
        ([b"x\r\n", b".\r\n"], b"x\r\n..\r\n.\r\n"),
    )
    for chunks, wire in cases:
        encoder = DataEncoder(True)
        out = b"".join(encoder.encode(chunk) for chunk in chunks) + encoder.finish()
        assert out == wire, (chunks, out)


def test_parser_bounds_line_without_lf():
    parser = ReplyParser(max_line=64, max_reply=256)
    error = None
    fed = 0
    while error is None and fed < 10000:
        parser.feed(b"2" * 7)
        fed += 7
        try:
            assert parser.next_reply() is None
        except ProtocolError as exc:
            error = exc
        assert len(parser._buffer) <= 64 + 7
    assert error is not None
    assert fed <= 64 + 7
    assert raises(ProtocolError, parser.next_reply) is error


def test_parser_bounds_endless_continuation():
    parser = ReplyParser(max_line=64, max_reply=256)
    error = None
    lines = 0
    while error is None and lines < 1000:
        parser.feed(b"250-more\r\n")
        lines += 1
        try:
            assert parser.next_reply() is None
        except ProtocolError as exc:
            error = exc
    assert error is not None
    assert lines * 10 <= 256 + 10


def test_parser_rejects_code_change_and_bare_cr():
    for data in (b"250-a\r\n251 b\r\n", b"250 a\rb\r\n", b"25\r\n", b"650 x\r\n", b"250x\r\n", b"\r\n"):
        parser = ReplyParser()
        parser.feed(data)
        raises(ProtocolError, parser.next_reply)


def secrets_of(username, password):
    return (
        password,
        b64encode(password.encode("utf-8")).decode(),
        b64encode(b"\0" + username.encode("utf-8") + b"\0" + password.encode("utf-8")).decode(),
    )


def check_no_secret(texts, username, password):
    for secret in secrets_of(username, password):
        for text in texts:
            assert secret not in text, (secret, text)


def test_credentials_absent_from_transcript_and_errors():
    flows = (
        (("AUTH PLAIN",), {"AUTH": b"535 5.7.8 bad credentials"}),
        (("PIPELINING", "AUTH PLAIN"), {"AUTH": b"535 5.7.8 bad credentials"}),
        (("AUTH LOGIN",), {"AUTH": [b"334 VXNlcm5hbWU6", b"334 UGFzc3dvcmQ6", b"535 5.7.8 bad"]}),
        (("AUTH PLAIN",), {"AUTH": [b"334 ", b"535 5.7.8 bad"]}),
        (("AUTH PLAIN",), {"AUTH": [b"334 bm9uc2Vuc2U=", b"501 5.7.0 cancelled"]}),
    )
    for extensions, replies in flows:
        server = FakeServer(extensions=extensions, replies=replies)
        log = []
        session = Session("c.example", security="tls", username="alice", password=PASSWORD, log=log.append)
        texts = log
        try:
            converse(session, server)
            transaction = session.mail("a@x.org", ["b@x.org"], b"hi\r\n")
            converse(session, server)
            texts = log + [str(transaction.error), repr(transaction)]
        except AuthError as exc:
            texts = log + [str(exc), repr(exc)]
        assert len(texts) > 2
        check_no_secret(texts, "alice", PASSWORD)


def test_idle_extra_reply_stops_session():
    server = FakeServer()
    session = ready(server)
    session.receive_data(b"250 surprise\r\n")
    error = raises(ProtocolError, session.mail, "a@x.org", ["b@x.org"], b"hi\r\n")
    assert error.transient
    assert raises(ProtocolError, session.next_event) is error
    assert session.data_to_send() == b""


def test_thirty_pipelined_transactions():
    server = FakeServer(extensions=("PIPELINING", "CHUNKING", "SIZE 100000"))
    session = ready(server)
    transactions = []
    for n in range(30):
        transactions.append(session.mail("a@x.org", ["b@x.org", "c@x.org"], b"message\r\n" * n))
    session.quit()
    converse(session, server)
    for transaction in transactions:
        assert transaction.ok
    assert len(server.messages) == 30
    assert session.next_event() == CLOSED


def test_invalid_pem_roots_raise_config_error():
    from microsmtp.encoding import pem_to_der
    from microsmtp.errors import ConfigError

    begin, end = b"-----BEGIN CERTIFICATE-----\n", b"-----END CERTIFICATE-----\n"
    good = begin + b"MAMCAQE=\n" + end

    assert pem_to_der(good) == [b"0\x03\x02\x01\x01"]
    error = raises(ConfigError, pem_to_der, good + begin + b"abcde\n" + end)
    assert "certificate 2 " in str(error), str(error)
    assert not error.transient
    error = raises(ConfigError, pem_to_der, begin + b"\xff\xfe\n" + end)
    assert "not ASCII" in str(error), str(error)
    # a2b_base64() skips what is not base64, so these decode to nothing, to a part of
    # the body, or to bytes that are no certificate.
    for body in (b"!!!!", b"MAMC!AQE=", b"MAMCAQE=trailing", b"SGVsbG8=", b"", b"MAMCAQ"):
        error = raises(ConfigError, pem_to_der, good + begin + body + b"\n" + end)
        assert "certificate 2 " in str(error), (body, str(error))
    # What OpenSSL reads too: a byte order mark, CRLF, comments around the block, a
    # header line in it, whitespace in the base64, a final character with spare bits.
    variants = (
        b"\xef\xbb\xbf" + good,
        good.replace(b"\n", b"\r\n"),
        b"# Issuer: CN=Test\n" + good + b"# end\n",
        begin + b"Comment: test root\n\nMAMCAQE=\n" + end,
        begin + b"MAMC AQE=\n" + end,
        begin + b"MAMCAQF=\n" + end,
    )
    for text in variants:
        assert pem_to_der(text) == [b"0\x03\x02\x01\x01"], text


def test_ca_file_roots_formats_and_errors():
    from microsmtp.encoding import ca_file_roots
    from microsmtp.errors import ConfigError

    begin, end = b"-----BEGIN CERTIFICATE-----\n", b"-----END CERTIFICATE-----\n"
    der = b"0\x03\x02\x01\x01"
    assert ca_file_roots(begin + b"MAMCAQE=\n" + end) == [der]
    assert ca_file_roots(bytearray(der)) == [der]
    cases = (
        (b"", "neither a PEM nor a DER certificate"),
        (b"just some text\n", "neither a PEM nor a DER certificate"),
        (b"-----BEGIN PRIVATE KEY-----\nMAMCAQE=\n-----END PRIVATE KEY-----\n", "not a key or a request"),
        (begin + b"MAMCAQE=\n", "no complete certificate block"),
        (begin + b"!!!!\n" + end, "certificate 1 of the PEM text is not valid base64"),
    )
    for data, reason in cases:
        error = raises(ConfigError, ca_file_roots, data)
        assert reason in str(error), (data, str(error))


SEVEN_BIT_SERVER = ("PIPELINING", "SIZE 100000")
EIGHT_BIT = "caf\u00e9 at 41 \u00b0C\r\n".encode("utf-8")


def mail_lines(server):
    return [line for line in server.commands if line.startswith(b"MAIL")]


def test_eight_bit_content_declared_with_body_8bitmime():
    for chunking in (False, True):
        extensions = ("PIPELINING", "8BITMIME", "CHUNKING") if chunking else ("PIPELINING", "8BITMIME")
        server = FakeServer(extensions)
        session = ready(server)
        whole = session.mail("a@x.org", ["b@x.org"], EIGHT_BIT)
        seven = session.mail("a@x.org", ["b@x.org"], b"plain\r\n")
        lazy = session.mail("a@x.org", ["b@x.org"], (piece for piece in (b"caf", "\u00e9\r\n".encode("utf-8"))))
        converse(session, server)

        assert whole.ok, whole.error
        assert seven.ok, seven.error
        assert lazy.ok, lazy.error
        assert mail_lines(server) == [b"MAIL FROM:<a@x.org> BODY=8BITMIME", b"MAIL FROM:<a@x.org>"] + [
            b"MAIL FROM:<a@x.org> BODY=8BITMIME"
        ], chunking
        assert server.messages[0] == EIGHT_BIT


class ChunkedContent:
    """Content with chunks(), as send_raw() accepts besides a Message."""

    def chunks(self):
        yield EIGHT_BIT


def test_message_with_utf8_address_declares_8bitmime():
    from microsmtp.message import Message

    server = FakeServer(("PIPELINING", "8BITMIME", "SMTPUTF8"))
    session = ready(server)
    utf8 = Message("j\u00f6rg@x.org", ["b@x.org"], "hi", "text")
    first = session.mail(utf8.sender_address, utf8.recipients, utf8, None, utf8.needs_smtputf8)
    ascii_only = Message("a@x.org", ["b@x.org"], "hi", "text")
    second = session.mail(ascii_only.sender_address, ascii_only.recipients, ascii_only, None, False)
    chunked = session.mail("a@x.org", ["b@x.org"], ChunkedContent())
    converse(session, server)

    assert first.ok, first.error
    assert second.ok, second.error
    assert chunked.ok, chunked.error
    assert mail_lines(server) == [
        "MAIL FROM:<j\u00f6rg@x.org> BODY=8BITMIME SMTPUTF8".encode("utf-8"),
        b"MAIL FROM:<a@x.org>",
        b"MAIL FROM:<a@x.org> BODY=8BITMIME",
    ]


def test_eight_bit_content_refused_without_8bitmime():
    server = FakeServer(SEVEN_BIT_SERVER)
    session = ready(server)
    error = raises(InvalidInputError, session.mail, "a@x.org", ["b@x.org"], EIGHT_BIT)
    assert "does not offer 8BITMIME" in str(error), str(error)
    assert session.usable

    # Content produced lazily is checked as it is encoded. With DATA the connection
    # must then be dropped, because the server would take a cut-off message.
    transaction = session.mail("a@x.org", ["b@x.org"], iter([b"fine\r\n", EIGHT_BIT]))
    raises(InvalidInputError, converse, session, server)
    assert isinstance(transaction.error, InvalidInputError), transaction.error
    assert server.messages == []


def test_lazy_eight_bit_content_fails_alone_with_bdat():
    server = FakeServer(("PIPELINING", "CHUNKING"))
    session = ready(server)
    bad = session.mail("a@x.org", ["b@x.org"], iter([EIGHT_BIT]))
    good = session.mail("a@x.org", ["b@x.org"], b"plain\r\n")
    converse(session, server)

    assert isinstance(bad.error, InvalidInputError), bad.error
    assert good.ok, good.error
    assert server.messages == [b"plain\r\n"]


def test_utf8_address_sets_smtputf8():
    server = FakeServer(("PIPELINING", "SMTPUTF8", "8BITMIME"))
    session = ready(server)
    transaction = session.mail("a@x.org", ["j\u00fcrgen@x.org"], b"hi\r\n")
    converse(session, server)
    assert transaction.ok, transaction.error
    assert mail_lines(server) == [b"MAIL FROM:<a@x.org> SMTPUTF8"]

    session = ready(FakeServer(SEVEN_BIT_SERVER))
    error = raises(InvalidInputError, session.mail, "a@x.org", ["j\u00fcrgen@x.org"], b"hi\r\n")
    assert "SMTPUTF8" in str(error), str(error)


class EmailMessageLike:
    """What email.message.EmailMessage offers that matters here: as_bytes() and iteration over header names."""

    def as_bytes(self):
        return b"Subject: x\r\n\r\nhi\r\n"

    def __iter__(self):
        return iter(["Subject"])


def test_content_of_wrong_type_is_invalid_input():
    session = ready(FakeServer())
    error = raises(InvalidInputError, session.mail, "a@x.org", ["b@x.org"], EmailMessageLike())
    assert "as_bytes()" in str(error), str(error)
    raises(InvalidInputError, session.mail, "a@x.org", [""], b"hi\r\n")
    assert session.usable

    # A generator of str is found out while it is encoded, as an InvalidInputError.
    server = FakeServer(("PIPELINING", "CHUNKING"))
    session = ready(server)
    transaction = session.mail("a@x.org", ["b@x.org"], iter(["text\r\n"]))
    converse(session, server)
    assert isinstance(transaction.error, InvalidInputError), transaction.error
    assert "must be bytes, not str" in str(transaction.error), str(transaction.error)


def test_invalid_options_are_config_errors():
    from microsmtp.client import SMTP
    from microsmtp.errors import ConfigError

    cases = (
        ({"port": "2525"}, "port must be a number from 1 to 65535"),
        ({"port": 70000}, "port must be a number from 1 to 65535"),
        ({"port": True}, "port must be a number from 1 to 65535"),
        ({"timeout_ms": 0}, "timeout_ms must be a number of milliseconds above 0"),
        ({"timeout_ms": None}, "timeout_ms must be a number of milliseconds above 0"),
        ({"connect_timeout_ms": -1}, "connect_timeout_ms must be a number of milliseconds above 0"),
        ({"reply_timeout_ms": "30000"}, "reply_timeout_ms must be a number"),
        ({"reply_timeout_ms": float("nan")}, "reply_timeout_ms must be a number"),
        ({"reply_timeout_ms": float("inf")}, "reply_timeout_ms must be a number"),
        ({"timeout_ms": 7 * 24 * 3600 * 1000}, "at most 536870912 (6.2 days)"),
        ({"ca_roots": 42}, "ca_roots must be certificates"),
        ({"ssl_context": object()}, "ssl_context must be an SSLContext"),
    )
    for options, reason in cases:
        error = raises(ConfigError, SMTP, "mx.example", **options)
        assert reason in str(error), (options, str(error))
        assert not error.transient
    raises(ConfigError, SMTP, None)
    assert SMTP("[::1]").host == "::1"
    assert SMTP("mx.example", port=2525, timeout_ms=1.5).port == 2525

    class Port(int):
        pass

    assert SMTP("mx.example", port=Port(587), reply_timeout_ms=536870912).port == 587


def test_trailing_dot_left_out_of_tls_name():
    # A fully qualified name ends with a dot. TCP connects to the host as given, and the
    # TLS name (SNI, and the name checked against the certificate) drops that dot.
    from microsmtp.client import SMTP
    from microsmtp.errors import ConfigError

    smtp = SMTP("smtp.example.com.")
    assert (smtp.host, smtp.server_hostname) == ("smtp.example.com.", "smtp.example.com")
    smtp = SMTP("127.0.0.1", server_hostname="localhost.")
    assert (smtp.host, smtp.server_hostname) == ("127.0.0.1", "localhost")
    assert SMTP("smtp.example.com.", server_hostname="mx.example.com").server_hostname == "mx.example.com"
    assert SMTP("mx.example").server_hostname == "mx.example"
    for host, server_hostname in (
        (".", None),
        ("smtp.example.com..", None),
        ("smtp..example.com", None),
        ("127.0.0.1", "."),
        ("127.0.0.1", "localhost.."),
        ("127.0.0.1", ".."),
        (".smtp.example.com", None),
        ("127.0.0.1", b"localhost"),
    ):
        error = raises(ConfigError, SMTP, host, server_hostname=server_hostname)
        assert "host and server_hostname must be names without an empty label" in str(error), str(error)
        assert repr(server_hostname or host) in str(error), str(error)
        assert not error.transient


def test_host_without_a_name_is_config_error():
    # Brackets around nothing leave no name, as does an empty or missing host. An empty
    # server_hostname means the host's name.
    from microsmtp.client import SMTP
    from microsmtp.errors import ConfigError

    for server_hostname in (None, "", "mx.example"):
        for host in ("", "[]", None, 0, b"mx.example"):
            error = raises(ConfigError, SMTP, host, server_hostname=server_hostname)
            if host == "[]":
                assert (
                    "host and server_hostname must be names without an empty label, blanks or control "
                    "characters, not ''" in str(error)
                ), str(error)
            else:
                assert "host must be the SMTP server's name or address, not %r" % (host,) in str(error), str(error)
            assert not error.transient
    assert SMTP("[::1]", server_hostname="").server_hostname == "::1"
    assert SMTP("[mx.example]").host == "mx.example"


def test_host_with_blank_or_control_is_config_error():
    from microsmtp.client import SMTP
    from microsmtp.errors import ConfigError

    for name in (" mx.example", "mx.example ", "mx.example\r\n", "mx\x00.example", "mx\t.example"):
        for host, server_hostname in ((name, None), ("mx.example", name)):
            error = raises(ConfigError, SMTP, host, server_hostname=server_hostname)
            assert "must be names without an empty label, blanks or control characters, not %r" % name in str(error)
    assert SMTP("mx.example", server_hostname="mx.example").server_hostname == "mx.example"
    error = raises(ConfigError, SMTP, "[.]")
    assert "must be names without an empty label, blanks or control characters, not '.'" in str(error), str(error)


def test_mixed_refusals_report_permanent_code():
    from microsmtp.errors import RecipientsRefused
    from microsmtp.reply import Reply

    refused = {"a@x.org": Reply(450, ["busy"], "4.2.1"), "b@x.org": Reply(550, ["no such user"], "5.1.1")}
    error = RecipientsRefused("refused", refused, order=("a@x.org", "b@x.org"))
    assert error.transient is False
    assert error.code == 550
    assert error.enhanced == "5.1.1"

    busy = {"a@x.org": Reply(450, ["busy"], "4.2.1"), "b@x.org": Reply(451, ["later"], "4.3.0")}
    error = RecipientsRefused("refused", busy, order=("b@x.org", "a@x.org"))
    assert error.transient is True
    assert error.code == 451


def test_memory_failures_are_transient_out_of_memory():
    from microsmtp.client import SMTP
    from microsmtp.errors import OutOfMemory

    smtp = SMTP("mx.example", port=587, security="none")
    smtp._handshaking = True
    # MicroPython raises ENOMEM when mbedTLS cannot allocate its buffers. mbedTLS's SSL
    # and X509 modules report the same with negative codes, and RSA with its own code
    # plus the bignum module's (-0x4290). Python code raises MemoryError.
    failures = (
        OSError(12),
        OSError(-0x7F00, "SSL - Memory allocation failed"),
        OSError(-0x2880),
        OSError(-0x4290, "MBEDTLS_ERR_RSA_PUBLIC_FAILED+MBEDTLS_ERR_MPI_ALLOC_FAILED"),
        MemoryError(),
    )
    for exc in failures:
        error = smtp._transport_error(exc, "starttls")
        assert type(error) is OutOfMemory, (exc, error)
        assert isinstance(error, ConnectionLost)
        assert error.transient
        assert error.stage == "tls"
        assert str(error).startswith("out of memory during tls ("), str(error)

    smtp._handshaking = False
    error = smtp._transport_error(MemoryError(), "mail")
    assert type(error) is OutOfMemory, error
    assert error.stage == "mail", error
    # Other transport failures keep their classes: a reset, and lwIP's ERR_ARG (-16),
    # which rp2 raises for an unusable host name.
    assert type(smtp._transport_error(OSError(104), "mail")) is ConnectionLost
    assert type(smtp._transport_error(OSError(-16), "connect")) is ConnectionLost
    smtp._handshaking = True
    assert type(smtp._transport_error(OSError(-0x2700, "X509 - Certificate verification failed"), "tls")) in (
        SecurityError,
        ConnectionLost,
    )


def test_rejected_ca_root_is_config_error():
    from microsmtp.client import make_ssl_context
    from microsmtp.errors import ConfigError

    # DER of an INTEGER, not of a certificate.
    error = raises(ConfigError, make_ssl_context, [b"0\x03\x02\x01\x01"])

    assert str(error).startswith("CA root 1 of 1 was rejected ("), str(error)
    assert error.stage == "connect"
    assert not error.transient
