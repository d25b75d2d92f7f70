"""Sans-IO session: the dialogue, STARTTLS rules, AUTH choices and transaction errors."""

from helpers import raises, splits
from microsmtp import session as smtp_session
from microsmtp.errors import (
    AuthError,
    ConnectionLost,
    InvalidInputError,
    ProtocolError,
    RecipientsRefused,
    ReplyError,
    SecurityError,
)
from microsmtp.session import CLOSED, IDLE, NEED_DATA, SEND, START_TLS, Session
from microsmtp.transaction import DataEncoder

GREETING = b"220 mx.example.com ESMTP\r\n"
EHLO_PLAIN = b"250-mx.example.com\r\n250-SIZE 1000\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
EHLO_TLS = b"250-mx.example.com\r\n250-SIZE 1000\r\n250-AUTH PLAIN LOGIN XOAUTH2\r\n250 8BITMIME\r\n"


def pump(session):
    """Run the session until it needs something other than sending; return (sent, event)."""
    sent = b""
    while True:
        event = session.next_event()
        if event != SEND:
            return sent, event
        sent += session.data_to_send()


def step(session, expected_sent, reply, expected_event=NEED_DATA):
    sent, event = pump(session)
    assert sent == expected_sent, (sent, expected_sent)
    assert event == expected_event, (event, expected_event)
    if reply is not None:
        session.receive_data(reply)


def start_tls_session(**kwargs):
    """Return a session that passed greeting, EHLO, STARTTLS and the second EHLO."""
    session = Session("client.example", **kwargs)
    step(session, b"", GREETING)
    step(session, b"EHLO client.example\r\n", EHLO_PLAIN)
    step(session, b"STARTTLS\r\n", b"220 go ahead\r\n")
    step(session, b"", None, START_TLS)
    session.tls_started()
    step(session, b"EHLO client.example\r\n", EHLO_TLS)
    return session


def test_starttls_dialogue_forgets_plaintext_extensions():
    session = start_tls_session()
    assert pump(session) == (b"", IDLE)
    assert session.tls_active
    assert "STARTTLS" not in session.extensions
    assert "PIPELINING" not in session.extensions
    assert session.auth_mechanisms == ["PLAIN", "LOGIN", "XOAUTH2"]
    assert session.max_size == 1000


def test_greeting_in_every_split():
    for chunks in splits(b"220-first\r\n220 second\r\n"):
        session = Session("c", security="tls")
        pump(session)
        for chunk in chunks:
            session.receive_data(chunk)
        sent, event = pump(session)
        assert sent == b"EHLO c\r\n"
        assert session.greeting.lines == ["first", "second"]


def test_starttls_not_offered_aborts():
    session = Session("c")
    step(session, b"", GREETING)
    step(session, b"EHLO c\r\n", b"250-mx\r\n250 AUTH PLAIN\r\n")
    error = raises(SecurityError, pump, session)
    assert "STARTTLS" in str(error)
    assert not error.transient
    # The error is final: the same error again, and nothing more is sent.
    raises(SecurityError, session.next_event)


def test_starttls_refused_codes():
    for code, transient in ((b"454", True), (b"501", False), (b"502", False), (b"354", False)):
        session = Session("c")
        step(session, b"", GREETING)
        step(session, b"EHLO c\r\n", EHLO_PLAIN)
        step(session, b"STARTTLS\r\n", code + b" no\r\n")
        error = raises(SecurityError, pump, session)
        assert error.code == int(code)
        assert error.transient == transient


def test_data_after_starttls_reply_is_injection():
    session = Session("c")
    step(session, b"", GREETING)
    step(session, b"EHLO c\r\n", EHLO_PLAIN)
    step(session, b"STARTTLS\r\n", b"220 go ahead\r\n250-injected\r\n")
    error = raises(ProtocolError, pump, session)
    assert "injection" in str(error)


def test_fragment_after_starttls_reply_is_injection():
    session = Session("c")
    step(session, b"", GREETING)
    step(session, b"EHLO c\r\n", EHLO_PLAIN)
    step(session, b"STARTTLS\r\n", b"220 go ahead\r\n250 OK")
    raises(ProtocolError, pump, session)


def test_ehlo_rejected_without_plaintext_option():
    session = Session("c")
    step(session, b"", GREETING)
    step(session, b"EHLO c\r\n", b"500 what\r\n")
    error = raises(SecurityError, pump, session)
    assert "EHLO" in str(error)


def test_helo_fallback_only_with_plaintext():
    session = Session("c", security="none")
    step(session, b"", GREETING)
    step(session, b"EHLO c\r\n", b"502 no\r\n")
    step(session, b"HELO c\r\n", b"250 hello\r\n")
    assert pump(session) == (b"", IDLE)
    assert not session.esmtp


def test_auth_over_plaintext_never_sent():
    session = Session("c", security="none", username="alice", password="secret")
    step(session, b"", GREETING)
    step(session, b"EHLO c\r\n", b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n")
    sent = b""
    error = None
    try:
        sent, _ = pump(session)
    except SecurityError as exc:
        error = exc
    assert error is not None
    assert sent == b""
    assert b"AUTH" not in sent


def test_auth_plain_in_one_step():
    lines = []
    session = start_tls_session(username="alice", password="secret", log=lines.append)
    step(session, b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", b"235 2.7.0 ok\r\n")
    assert pump(session) == (b"", IDLE)
    assert session.authenticated
    assert "--> AUTH PLAIN <redacted>" in lines
    for line in lines:
        assert "AGFsaWNl" not in line
        assert "secret" not in line


def test_refused_recipients_error_redacts_auth():
    # A server that quotes the AUTH command in a later reply must not carry the
    # credentials into the error that reports every recipient refused.
    session = start_tls_session(username="alice", password="secret")
    step(session, b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", b"235 2.7.0 ok\r\n")
    assert pump(session) == (b"", IDLE)
    transaction = session.mail("a@x.org", ["b@x.org"], b"hi\r\n")
    step(session, b"MAIL FROM:<a@x.org>\r\n", b"250 ok\r\n")
    step(session, b"RCPT TO:<b@x.org>\r\n", b"550 5.7.1 refused after AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    assert pump(session) == (b"", IDLE)
    error = transaction.error
    assert isinstance(error, RecipientsRefused), error
    assert "AGFsaWNl" not in str(error), str(error)
    assert "AGFsaWNl" not in error.text, error.text
    assert "<redacted>" in str(error), str(error)


def test_every_recipient_refused_in_send_order():
    # The error's code and message follow the order the recipients were sent in, so
    # both runtimes report the same, whatever order their dicts keep.
    session = ready_session()
    recipients = ["zed@x.org", "amy@x.org", "kim@x.org", "bob@x.org", "lee@x.org"]
    transaction = session.mail("a@x.org", recipients, b"hi\r\n")
    step(session, b"MAIL FROM:<a@x.org>\r\n", b"250 ok\r\n")
    codes = ["550 5.1.1 no such user", "450 4.2.1 busy", "551 5.1.6 moved", "452 4.2.2 full", "553 5.1.3 bad"]
    for address, code in zip(recipients, codes):
        step(session, b"RCPT TO:<%s>\r\n" % address.encode(), code.encode() + b"\r\n")
    assert pump(session) == (b"", IDLE)

    error = transaction.error
    assert isinstance(error, RecipientsRefused), error
    assert error.code == 550, error.code
    assert error.enhanced == "5.1.1", error.enhanced
    positions = [str(error).index(address) for address in recipients]
    assert positions == sorted(positions), str(error)
    assert error.transient is False


def test_refused_recipient_reply_redacts_auth():
    # One recipient of two refused: the Reply kept in the result is redacted too.
    session = start_tls_session(username="alice", password="secret")
    step(session, b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", b"235 2.7.0 ok\r\n")
    assert pump(session) == (b"", IDLE)
    transaction = session.mail("a@x.org", ["b@x.org", "c@x.org"], b"hi\r\n")
    step(session, b"MAIL FROM:<a@x.org>\r\n", b"250 ok\r\n")
    step(session, b"RCPT TO:<b@x.org>\r\n", b"550 5.7.1 refused after AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    step(session, b"RCPT TO:<c@x.org>\r\n", b"250 ok\r\n")
    step(session, b"DATA\r\n", b"354 go\r\n")
    step(session, b"hi\r\n.\r\n", b"250 queued\r\n")
    assert pump(session) == (b"", IDLE)

    assert transaction.error is None, transaction.error
    refused = transaction.refused["b@x.org"]
    assert "AGFsaWNl" not in refused.text, refused.text
    assert "AGFsaWNl" not in refused.describe(), refused.describe()
    assert "<redacted>" in refused.text, refused.text


def test_auth_login_two_challenges_redacted():
    lines = []
    session = Session("c", security="tls", username="alice", password="secret", log=lines.append)
    step(session, b"", GREETING)
    step(session, b"EHLO c\r\n", b"250-mx\r\n250 AUTH LOGIN\r\n")
    step(session, b"AUTH LOGIN\r\n", b"334 VXNlcm5hbWU6\r\n")
    step(session, b"YWxpY2U=\r\n", b"334 UGFzc3dvcmQ6\r\n")
    step(session, b"c2VjcmV0\r\n", b"235 ok\r\n")
    assert pump(session) == (b"", IDLE)
    text = "\n".join(lines)
    assert "YWxpY2U=" not in text
    assert "c2VjcmV0" not in text
    assert "VXNlcm5hbWU6" not in text


def test_password_quoted_in_reply_redacted():
    # A server that repeats the password itself, not its base64 form, in a failure reply.
    lines = []
    session = start_tls_session(username="alice", password="hunter2-echo", log=lines.append)
    step(session, b"AUTH PLAIN AGFsaWNlAGh1bnRlcjItZWNobw==\r\n", b"535 5.7.8 bad credentials alice / hunter2-echo\r\n")
    error = raises(AuthError, pump, session)

    assert "hunter2-echo" not in str(error), str(error)
    assert "hunter2-echo" not in error.text, error.text
    assert "alice / <redacted>" in str(error), str(error)
    for line in lines:
        assert "hunter2-echo" not in line, line


def test_password_in_malformed_reply_redacted():
    # The parser quotes a malformed line in its error, as repr() of the bytes; with
    # credentials held, the session leaves that quote out.
    for password, plain in (("hunter2-echo", b"AGFsaWNlAGh1bnRlcjItZWNobw=="), ("p\u00e4ss-word", None)):
        session = start_tls_session(username="alice", password=password)
        sent, _ = pump(session)
        assert sent.startswith(b"AUTH PLAIN "), sent
        if plain is not None:
            assert sent == b"AUTH PLAIN " + plain + b"\r\n", sent
        session.receive_data(b"535_bad password " + password.encode("utf-8") + b"\r\n")
        error = raises(ProtocolError, pump, session)

        assert password not in str(error), str(error)
        assert "\\xc3\\xa4" not in str(error), str(error)
        assert "the line is not quoted" in str(error), str(error)


def test_token_quoted_in_reply_redacted():
    session = Session("c", security="tls", username="alice", oauth2_token=b"ya29.token-value")
    step(session, b"", GREETING)
    step(session, b"EHLO c\r\n", b"250-mx\r\n250 AUTH XOAUTH2\r\n")
    sent, _ = pump(session)
    assert sent.startswith(b"AUTH XOAUTH2 ")
    session.receive_data(b"535 5.7.8 token ya29.token-value expired\r\n")
    error = raises(AuthError, pump, session)

    assert "ya29.token-value" not in str(error), str(error)


def test_auth_plain_preferred_over_login():
    session = start_tls_session(username="u", password="p")
    sent, _ = pump(session)
    assert sent.startswith(b"AUTH PLAIN ")


def test_auth_wrong_password_is_permanent_and_final():
    session = start_tls_session(username="alice", password="wrong")
    step(session, b"AUTH PLAIN AGFsaWNlAHdyb25n\r\n", b"535 5.7.8 Authentication credentials invalid\r\n")
    error = raises(AuthError, pump, session)
    assert error.code == 535
    assert error.enhanced == "5.7.8"
    assert not error.transient
    assert error.stage == "auth"
    # No second mechanism is tried: the same error again, and nothing more is sent.
    again = raises(AuthError, session.next_event)
    assert again is error
    assert session.data_to_send() == b""


def test_auth_503_is_not_success():
    session = start_tls_session(username="alice", password="secret")
    step(session, b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", b"503 5.5.1 already authenticated\r\n")
    error = raises(AuthError, pump, session)
    assert error.code == 503
    assert not session.authenticated


def test_auth_454_is_transient():
    session = start_tls_session(username="alice", password="secret")
    step(session, b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", b"454 4.7.0 try later\r\n")
    error = raises(AuthError, pump, session)
    assert error.transient


def test_xoauth2_error_flow():
    session = start_tls_session(username="alice@example.com", oauth2_token="tok")
    sent, _ = pump(session)
    assert sent.startswith(b"AUTH XOAUTH2 ")
    challenge = b"eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ=="
    session.receive_data(b"334 " + challenge + b"\r\n")
    step(session, b"\r\n", b"535 5.7.8 Username and Password not accepted\r\n")
    error = raises(AuthError, pump, session)
    assert error.code == 535
    assert '"status":"400"' in str(error)
    assert "tok" not in str(error)


def test_oauth2_token_needs_xoauth2_offered():
    session = Session("c", security="tls", username="u", oauth2_token="t")
    step(session, b"", GREETING)
    step(session, b"EHLO c\r\n", b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n")
    error = raises(AuthError, pump, session)
    assert "XOAUTH2" in str(error)


def test_auth_not_offered():
    session = Session("c", security="tls", username="u", password="p")
    step(session, b"", GREETING)
    step(session, b"EHLO c\r\n", b"250-mx\r\n250 SIZE 10\r\n")
    raises(AuthError, pump, session)


def test_old_auth_equals_syntax():
    session = Session("c", security="tls", username="u", password="p")
    step(session, b"", GREETING)
    step(session, b"EHLO c\r\n", b"250-mx\r\n250 AUTH=LOGIN\r\n")
    sent, _ = pump(session)
    assert sent == b"AUTH LOGIN\r\n"


def ready_session(log=None):
    session = Session("c", security="tls", log=log)
    step(session, b"", GREETING)
    step(session, b"EHLO c\r\n", b"250-mx\r\n250-SIZE 100000\r\n250 SMTPUTF8\r\n")
    assert pump(session) == (b"", IDLE)
    return session


def test_transaction_with_partial_refusal():
    session = ready_session()
    transaction = session.mail(
        "a@example.com", ["b@example.com", "c@example.com"], b"Subject: x\r\n\r\nhi\r\n", size=20
    )
    step(session, b"MAIL FROM:<a@example.com> SIZE=20\r\n", b"250 ok\r\n")
    step(session, b"RCPT TO:<b@example.com>\r\n", b"250 ok\r\n")
    step(session, b"RCPT TO:<c@example.com>\r\n", b"550 5.1.1 no such user\r\n")
    step(session, b"DATA\r\n", b"354 go\r\n")
    step(session, b"Subject: x\r\n\r\nhi\r\n.\r\n", b"250 2.0.0 queued as X\r\n")
    assert pump(session) == (b"", IDLE)
    assert transaction.ok
    assert list(transaction.accepted) == ["b@example.com"]
    assert transaction.refused["c@example.com"].enhanced == "5.1.1"
    assert transaction.reply.text == "queued as X"


def test_all_recipients_refused_then_rset():
    session = ready_session()
    first = session.mail("a@x.org", ["b@x.org"], b"hi\r\n")
    step(session, b"MAIL FROM:<a@x.org>\r\n", b"250 ok\r\n")
    step(session, b"RCPT TO:<b@x.org>\r\n", b"554 5.7.1 relay denied\r\n")
    # Lock-step: DATA is never sent once no recipient is left.
    assert pump(session) == (b"", IDLE)
    assert isinstance(first.error, RecipientsRefused)
    assert first.error.refused["b@x.org"].code == 554
    assert not first.error.transient
    assert session.usable
    # The next transaction starts with RSET.
    second = session.mail("a@x.org", ["c@x.org"], b"hi\r\n")
    step(session, b"RSET\r\n", b"250 ok\r\n")
    step(session, b"MAIL FROM:<a@x.org>\r\n", b"250 ok\r\n")
    step(session, b"RCPT TO:<c@x.org>\r\n", b"250 ok\r\n")
    step(session, b"DATA\r\n", b"354 go\r\n")
    step(session, b"hi\r\n.\r\n", b"250 ok\r\n")
    assert pump(session) == (b"", IDLE)
    assert second.ok


def test_no_rset_after_success():
    session = ready_session()
    session.mail("a@x.org", ["b@x.org"], b"hi\r\n")
    step(session, b"MAIL FROM:<a@x.org>\r\n", b"250 ok\r\n")
    step(session, b"RCPT TO:<b@x.org>\r\n", b"250 ok\r\n")
    step(session, b"DATA\r\n", b"354 go\r\n")
    step(session, b"hi\r\n.\r\n", b"250 ok\r\n")
    pump(session)
    session.mail("a@x.org", ["b@x.org"], b"hi\r\n")
    step(session, b"MAIL FROM:<a@x.org>\r\n", b"250 ok\r\n")


def test_mail_refused_transient():
    session = ready_session()
    transaction = session.mail("a@x.org", ["b@x.org"], b"hi\r\n")
    step(session, b"MAIL FROM:<a@x.org>\r\n", b"451 4.3.0 later\r\n")
    assert pump(session) == (b"", IDLE)
    assert isinstance(transaction.error, ReplyError)
    assert transaction.error.transient
    assert transaction.error.stage == "mail"
    assert session.usable


def test_data_refused():
    session = ready_session()
    transaction = session.mail("a@x.org", ["b@x.org"], b"hi\r\n")
    step(session, b"MAIL FROM:<a@x.org>\r\n", b"250 ok\r\n")
    step(session, b"RCPT TO:<b@x.org>\r\n", b"250 ok\r\n")
    step(session, b"DATA\r\n", b"554 no\r\n")
    assert pump(session) == (b"", IDLE)
    assert transaction.error.stage == "data"
    assert not transaction.error.transient


def test_content_pieces_sent_as_bytes():
    # A CRLF-clean piece passes the encoder unchanged and goes out without a copy, but a
    # bytearray piece is still converted, so the driver always writes bytes.
    session = ready_session()
    transaction = session.mail("a@x.org", ["b@x.org"], [b"one\r\n", bytearray(b"two\r\n")])
    step(session, b"MAIL FROM:<a@x.org>\r\n", b"250 ok\r\n")
    step(session, b"RCPT TO:<b@x.org>\r\n", b"250 ok\r\n")
    step(session, b"DATA\r\n", b"354 go\r\n")
    pieces = []
    while session.next_event() == SEND:
        pieces.append(session.data_to_send())
    assert pieces == [b"one\r\n", b"two\r\n", b".\r\n"]
    for piece in pieces:
        assert type(piece) is bytes, piece
    session.receive_data(b"250 ok\r\n")
    assert pump(session) == (b"", IDLE)
    assert transaction.ok


def test_final_reply_refused():
    session = ready_session()
    transaction = session.mail("a@x.org", ["b@x.org"], b"hi\r\n")
    step(session, b"MAIL FROM:<a@x.org>\r\n", b"250 ok\r\n")
    step(session, b"RCPT TO:<b@x.org>\r\n", b"250 ok\r\n")
    step(session, b"DATA\r\n", b"354 go\r\n")
    step(session, b"hi\r\n.\r\n", b"552 5.3.4 too big\r\n")
    assert pump(session) == (b"", IDLE)
    assert transaction.error.stage == "message"
    assert transaction.error.enhanced == "5.3.4"
    assert session.usable


def test_421_closes_without_quit():
    session = ready_session()
    transaction = session.mail("a@x.org", ["b@x.org"], b"hi\r\n")
    step(session, b"MAIL FROM:<a@x.org>\r\n", b"421 4.4.2 closing\r\n")
    error = raises(ReplyError, pump, session)
    assert error.transient
    assert error.code == 421
    assert transaction.error is error
    assert not session.usable
    # Nothing more is sent, not even QUIT.
    session.quit()
    raises(ReplyError, session.next_event)
    assert session.data_to_send() == b""


def test_unsolicited_421_while_idle():
    session = ready_session()
    session.receive_data(b"421 idle timeout\r\n")
    error = raises(ReplyError, session.mail, "a@x.org", ["b@x.org"], b"hi")
    assert error.code == 421
    assert not session.usable


def test_connection_closed_mid_reply():
    session = ready_session()
    transaction = session.mail("a@x.org", ["b@x.org"], b"hi\r\n")
    step(session, b"MAIL FROM:<a@x.org>\r\n", b"250-partial\r\n")
    session.receive_data(b"")
    error = raises(ConnectionLost, pump, session)
    assert error.transient
    assert error.stage == "mail"
    assert transaction.error is error


def test_quit_dialogue():
    session = ready_session()
    session.quit()
    step(session, b"QUIT\r\n", b"221 bye\r\n")
    assert pump(session) == (b"", CLOSED)


def test_mail_after_quit_refused():
    session = ready_session()
    session.quit()
    raises(ProtocolError, session.mail, "a@x.org", ["b@x.org"], b"hi")


def test_transactions_queue_in_order():
    session = ready_session()
    first = session.mail("a@x.org", ["b@x.org"], b"one\r\n")
    second = session.mail("a@x.org", ["c@x.org"], b"two\r\n")
    step(session, b"MAIL FROM:<a@x.org>\r\n", b"250 ok\r\n")
    step(session, b"RCPT TO:<b@x.org>\r\n", b"250 ok\r\n")
    step(session, b"DATA\r\n", b"354 go\r\n")
    step(session, b"one\r\n.\r\n", b"250 ok\r\n")
    step(session, b"MAIL FROM:<a@x.org>\r\n", b"250 ok\r\n")
    step(session, b"RCPT TO:<c@x.org>\r\n", b"250 ok\r\n")
    step(session, b"DATA\r\n", b"354 go\r\n")
    step(session, b"two\r\n.\r\n", b"250 ok\r\n")
    assert pump(session) == (b"", IDLE)
    assert first.ok
    assert second.ok


def test_size_over_server_limit_refused_before_sending():
    session = ready_session()
    error = raises(InvalidInputError, session.mail, "a@x.org", ["b@x.org"], b"hi", 200000)
    assert "100000" in str(error)
    assert pump(session) == (b"", IDLE)


def test_smtputf8_needs_extension():
    session = Session("c", security="tls")
    step(session, b"", GREETING)
    step(session, b"EHLO c\r\n", b"250 mx\r\n")
    pump(session)
    raises(InvalidInputError, session.mail, "a@x.org", ["b@x.org"], b"hi", None, True)


def test_smtputf8_parameter_sent():
    session = ready_session()
    session.mail("\u00e4@x.org", ["b@x.org"], b"hi", smtputf8=True)
    sent, _ = pump(session)
    assert sent == "MAIL FROM:<\u00e4@x.org> SMTPUTF8\r\n".encode("utf-8")


def test_command_arguments_reject_line_breaks():
    bad_values = ("a\r@x.org", "a\n@x.org", "a\x00@x.org", "a@x.org\r\nRCPT TO:<evil@x.org>")
    for bad in bad_values:
        session = ready_session()
        raises(InvalidInputError, session.mail, bad, ["b@x.org"], b"hi")
        raises(InvalidInputError, session.mail, "a@x.org", [bad], b"hi")
        assert pump(session) == (b"", IDLE)
    raises(InvalidInputError, Session, "evil\r\nMAIL FROM:<x>")
    raises(InvalidInputError, Session, "host name")
    raises(InvalidInputError, Session, "c", "tls", "user\r\n", "p")


def test_address_with_brackets_refused():
    session = ready_session()
    raises(InvalidInputError, session.mail, "<a@x.org>", ["b@x.org"], b"hi")
    raises(InvalidInputError, session.mail, "a@x.org", ["b@x.org> NOTIFY=NEVER"], b"hi")


def test_no_recipients_refused():
    session = ready_session()
    raises(InvalidInputError, session.mail, "a@x.org", [], b"hi")


def test_unknown_security_refused():
    raises(InvalidInputError, Session, "c", "ssl")


def test_greeting_554_refused():
    session = Session("c")
    step(session, b"", b"554 no service\r\n")
    error = raises(ReplyError, pump, session)
    assert error.stage == "greeting"
    assert not error.transient


def test_transcript_shows_dialogue():
    lines = []
    ready_session(lines.append)
    assert lines[0] == "<-- 220 mx.example.com ESMTP"
    assert lines[1] == "--> EHLO c"
    assert lines[-1] == "<-- 250 SMTPUTF8"


def encode_all(chunks):
    encoder = DataEncoder()
    out = b"".join(encoder.encode(chunk) for chunk in chunks)
    return out + encoder.finish()


def test_data_encoder_dot_stuffing_and_line_ends():
    cases = (
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b".start\r\n", b"..start\r\n.\r\n"),
        (b"a\r\n.\r\nb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"bare\nlf\rcr", b"bare\r\nlf\r\ncr\r\n.\r\n"),
        (b"", b".\r\n"),
        (b"end\r", b"end\r\n.\r\n"),
    )
    for data, expected in cases:
        for chunks in splits(data):
            assert encode_all(chunks) == expected, (chunks, encode_all(chunks))


SMUGGLING = (
    b"\n.\n",
    b"\r.\r",
    b"\r.\n",
    b"\n.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n.\r\r\n",
)


def test_data_encoder_blocks_smuggling():
    for vector in SMUGGLING:
        data = b"before" + vector + b"MAIL FROM:<evil@x.org>\r\nafter"
        for chunks in splits(data):
            wire = encode_all(chunks)
            body = wire[: -len(b".\r\n")]
            assert b"\r\n.\r\n" not in body, (vector, wire)
            assert b"\r" not in body.replace(b"\r\n", b""), (vector, wire)
            assert b"\n" not in body.replace(b"\r\n", b""), (vector, wire)
            assert wire.endswith(b"\r\n.\r\n")


def test_data_encoder_rejects_nul():
    encoder = DataEncoder()
    raises(InvalidInputError, encoder.encode, b"a\x00b")


def test_event_names_cover_events():
    for event in (SEND, NEED_DATA, START_TLS, IDLE, CLOSED):
        assert event in smtp_session.EVENT_NAMES


# -- a log function that fails ----------------------------------------------------------


class FailingLog:
    """A log function that raises ``error`` at the line that starts with ``at`` (any line when None)."""

    def __init__(self, error, at=None):
        self.error = error
        self.at = at
        self.lines = []
        self.calls = 0

    def __call__(self, line):
        self.calls += 1
        if self.at is None or line.startswith(self.at):
            raise self.error
        self.lines.append(line)


class PrintCapture:
    """Replace the built-in print() while in a with block, and keep what it was given."""

    def __enter__(self):
        import builtins

        self.printed = []
        self._saved = builtins.print
        builtins.print = lambda *args, **kwargs: self.printed.append((args, kwargs.get("file")))
        return self

    def __exit__(self, *exc):
        import builtins

        builtins.print = self._saved


def test_failing_log_does_not_stop_the_send():
    import sys

    from fake_server import FakeServer, converse

    extensions = ("PIPELINING", "SIZE 100000", "8BITMIME", "CHUNKING", "AUTH PLAIN LOGIN")
    # Lines where the log fails: while sending a command, a reply line, the content
    # (DATA), a BDAT chunk (the second message) and the EHLO after STARTTLS.
    for at in (None, "--> MAIL", "<-- 250", "--> (message content", "--> BDAT", "--> EHLO"):
        for offered in (extensions, extensions[1:]):
            log = FailingLog(ValueError("log sink is full"), at)
            server = FakeServer(extensions=("STARTTLS",) + offered, tls_extensions=offered)
            with PrintCapture() as capture:
                session = Session("c", username="alice", password="secret", log=log)
                converse(session, server)
                first = session.mail("a@x.org", ["b@x.org"], b"one\r\n")
                second = session.mail("a@x.org", ["b@x.org"], b"two\r\n" * 300)
                session.quit()
                converse(session, server)
            assert first.ok and second.ok, (at, first.error, second.error)
            assert server.messages == [b"one\r\n", b"two\r\n" * 300], at
            if at == "--> BDAT" and offered is not extensions:
                continue  # lock-step sends no BDAT
            # The log function is not called again after it failed, and one line is printed about it.
            assert log.calls == len(log.lines) + 1, (at, log.calls, log.lines)
            assert len(capture.printed) == 1, (at, capture.printed)
            args, stream = capture.printed[0]
            assert stream is sys.stderr
            assert "ValueError: log sink is full" in args[0], args


def test_failing_log_keeps_interrupts_and_lack_of_heap():
    from fake_server import FakeServer, converse

    from microsmtp.errors import OutOfMemory

    try:
        from asyncio import CancelledError
    except ImportError:
        from uasyncio import CancelledError

    for error in (KeyboardInterrupt(), SystemExit(1), CancelledError()):
        session = Session("c", security="tls", log=FailingLog(error, "--> MAIL"))
        converse(session, FakeServer())
        transaction = session.mail("a@x.org", ["b@x.org"], b"hi\r\n")
        raised = raises(type(error), converse, session, FakeServer())
        assert raised is error
        assert not transaction.ok
    # A MemoryError keeps its meaning: the heap ran out, and the send fails as OutOfMemory.
    session = Session("c", security="tls", log=FailingLog(MemoryError(), "--> MAIL"))
    server = FakeServer()
    converse(session, server)
    transaction = session.mail("a@x.org", ["b@x.org"], b"hi\r\n")
    with PrintCapture() as capture:
        error = raises(OutOfMemory, converse, session, server)
    assert transaction.error is error
    assert capture.printed == []


# -- credentials that the server's wrapping cuts at a line end ------------------------


def wrapped_reply(code, text, cut, continuation=""):
    """Return reply bytes with text cut in two lines at index cut."""
    return b"%d-%s\r\n%d %s%s\r\n" % (code, text[:cut].encode(), code, continuation.encode(), text[cut:].encode())


def assert_no_piece(texts, secret, size=3):
    # No piece of the secret of size characters or more is in any text.
    for start in range(len(secret) - size + 1):
        piece = secret[start : start + size]
        for text in texts:
            assert piece not in text, (piece, text)


def test_credential_cut_at_line_end_is_redacted():
    initial = "AGFsaWNlAGh1bnRlcjItZWNoby05"  # base64 of "\0alice\0hunter2-echo-9"
    password = "hunter2-echo-9"
    for secret in (initial, password):
        text = "5.7.8 bad AUTH PLAIN " + initial if secret is initial else "5.7.8 bad credentials " + password
        start = text.index(secret)
        for cut in range(start + 1, start + len(secret)):
            for continuation in ("", "5.7.8 ", " "):
                lines = []
                session = start_tls_session(username="alice", password=password, log=lines.append)
                sent, _ = pump(session)
                assert sent == b"AUTH PLAIN " + initial.encode() + b"\r\n", sent
                session.receive_data(wrapped_reply(535, text, cut, continuation))
                error = raises(AuthError, pump, session)
                texts = [str(error), error.text] + lines
                assert_no_piece(texts, secret)
                assert "<redacted>" in str(error), str(error)


def test_long_token_over_three_lines_is_redacted():
    token = "ya29." + "a0AfB_byC" * 30
    session = Session("c", security="tls", username="alice", oauth2_token=token)
    step(session, b"", GREETING)
    step(session, b"EHLO c\r\n", b"250-mx\r\n250 AUTH XOAUTH2\r\n")
    pump(session)
    quoted = "bad token " + token + " for alice"
    size = len(quoted) // 3 + 1
    pieces = [quoted[i : i + size] for i in range(0, len(quoted), size)]
    reply = b"".join(b"535-5.7.8 " + piece.encode() + b"\r\n" for piece in pieces[:-1])
    session.receive_data(reply + b"535 5.7.8 " + pieces[-1].encode() + b"\r\n")
    error = raises(AuthError, pump, session)
    assert_no_piece([str(error), error.text], token)
    assert str(error).endswith(" for alice"), str(error)


def test_cut_credential_in_refused_recipient_and_idle_reply():
    # A refused recipient's reply is kept in the result, and an unsolicited reply ends
    # an idle session: both are redacted across the line break.
    initial = "AGFsaWNlAHNlY3JldA=="
    lines = []
    session = start_tls_session(username="alice", password="secret", log=lines.append)
    step(session, b"AUTH PLAIN " + initial.encode() + b"\r\n", b"235 2.7.0 ok\r\n")
    assert pump(session) == (b"", IDLE)
    transaction = session.mail("a@x.org", ["b@x.org", "c@x.org"], b"hi\r\n")
    step(session, b"MAIL FROM:<a@x.org>\r\n", b"250 ok\r\n")
    step(session, b"RCPT TO:<b@x.org>\r\n", wrapped_reply(550, "5.7.1 after AUTH PLAIN " + initial, 30))
    step(session, b"RCPT TO:<c@x.org>\r\n", b"250 ok\r\n")
    step(session, b"DATA\r\n", b"354 go\r\n")
    step(session, b"hi\r\n.\r\n", b"250 queued\r\n")
    assert pump(session) == (b"", IDLE)
    refused = transaction.refused["b@x.org"]
    assert_no_piece([refused.text, refused.describe()], initial)
    session.receive_data(wrapped_reply(421, "4.4.2 closing, last AUTH PLAIN " + initial, 40))
    error = raises(ReplyError, session.mail, "a@x.org", ["b@x.org"], b"hi")
    assert_no_piece([str(error), error.text] + lines, initial)
    assert lines[-1].startswith("<-- 421 4.4.2 "), lines


# -- every credential redacted once, and only where it differs from ordinary text ------


def auth_failure(password, reply, error_class=AuthError):
    """Send AUTH PLAIN for alice with password; return its base64 form, the error and the log.

    Each "INITIAL" in reply is replaced by that base64 form.
    """
    lines = []
    session = start_tls_session(username="alice", password=password, log=lines.append)
    sent, _ = pump(session)
    initial = sent[len(b"AUTH PLAIN ") : -2].decode()
    assert sent == b"AUTH PLAIN " + initial.encode() + b"\r\n", sent
    session.receive_data(reply.replace("INITIAL", initial).encode())
    error = raises(error_class, pump, session)
    return initial, error, lines


def test_password_inside_its_own_base64_line_is_redacted():
    # "AGFs" is the base64 of "\0al", so the password also occurs in the AUTH PLAIN
    # line. Both are found before either is redacted, on one line and over two.
    for reply in (
        "535 5.7.8 bad AUTH PLAIN INITIAL for AGFs\r\n",
        "535-5.7.8 bad AUTH PLAIN INITIAL\r\n535 5.7.8 for AGFs\r\n",
    ):
        initial, error, lines = auth_failure("AGFs", reply)
        assert initial.startswith("AGFs"), initial
        texts = [str(error), error.text] + lines
        assert_no_piece(texts, initial, 4)
        assert (
            str(error)
            == "authentication failed: 535 5.7.8 bad AUTH PLAIN <redacted>"
            + (" / " if "-" in reply[:4] else " ")
            + "for <redacted>"
        ), str(error)


def test_password_wrapped_at_its_own_blanks_is_redacted():
    # The server's wrapping takes the blank of the password at the line break, with or
    # without blanks left on either side, and may cut a word of it as well.
    cases = (
        ("open sesame", "535-5.7.8 bad credentials open\r\n535 5.7.8 sesame for alice\r\n"),
        ("open sesame", "535-5.7.8 bad credentials open \r\n535 5.7.8  sesame for alice\r\n"),
        ("open sesame", "535-bad credentials open\r\n535 sesame for alice\r\n"),
        ("correct horse battery", "535-bad credentials correct\r\n535-horse\r\n535 battery for alice\r\n"),
        ("correct horse battery", "535-bad credentials correct hor\r\n535-se\r\n535 battery for alice\r\n"),
    )
    for password, reply in cases:
        _, error, lines = auth_failure(password, reply)
        texts = [str(error), error.text] + lines
        for word in password.split(" "):
            assert not [text for text in texts if word[:3] in text], (password, reply, texts)
        assert str(error).startswith("authentication failed: 535 "), str(error)
        assert "bad credentials <redacted>" in str(error), str(error)
        assert str(error).endswith("<redacted> for alice"), str(error)
    # A blank of the password is left out only at a line break: inside a line, text
    # without it is not the password.
    _, error, _ = auth_failure("open sesame", "535 5.7.8 opensesame is no password\r\n")
    assert str(error) == "authentication failed: 535 5.7.8 opensesame is no password", str(error)


def test_malformed_line_after_credential_start_is_not_quoted():
    # The reply's first line contains the start of the AUTH PLAIN line, and the malformed
    # second line its tail ("\0secret"). The parser drops the first line and would quote
    # the second, so with credentials held the quote is left out of the error.
    lines = []
    session = start_tls_session(username="alice", password="secret", log=lines.append)
    pump(session)
    session.receive_data(b"535-5.7.8 bad AUTH PLAIN AGFsaWNl\r\nAHNlY3JldA==\r\n")
    error = raises(ProtocolError, pump, session)
    for text in [str(error)] + lines:
        assert "AHNlY3Jld" not in text, text
        assert "AGFsaWNl" not in text, text
    assert str(error) == (
        "malformed server reply (expected a 3-digit code 200-559) "
        "(the line is not quoted, because it could hold a piece of a credential)"
    ), str(error)
    raises(ProtocolError, session.next_event)
    # An error that quotes nothing keeps its text, and without credentials the line is quoted.
    session = start_tls_session(username="alice", password="secret")
    pump(session)
    session.receive_data(b"535-5.7.8 bad\r\n550 5.7.8 no\r\n")
    error = raises(ProtocolError, pump, session)
    assert str(error) == "server reply code changed from 535 to 550 inside one reply", str(error)
    session = Session("client.example", security="tls")
    session.receive_data(b"220-mx.example.com\r\nsecret\r\n")
    error = raises(ProtocolError, pump, session)
    assert str(error).endswith(": b'secret'"), str(error)


def test_short_password_not_redacted():
    # A password of 1 to 3 characters is not redacted where it occurs alone, because it
    # occurs in almost any text. Its base64 form is redacted.
    for password in ("e", "red", "<r"):
        reply = "535 5.7.8 the username or password is not accepted; AUTH PLAIN INITIAL\r\n"
        initial, error, lines = auth_failure(password, reply)
        expected = "535 5.7.8 the username or password is not accepted; AUTH PLAIN <redacted>"
        assert str(error) == "authentication failed: " + expected, (password, str(error))
        assert error.text == expected[10:], (password, error.text)
        assert lines[-1] == "<-- " + expected, (password, lines[-1])


def test_redaction_marker_not_redacted_again():
    # No text is redacted twice, so a password that occurs in "<redacted>" leaves the
    # marker whole. Blanks around a password are not part of what is redacted.
    for password in ("dact", "  dact "):
        reply = "535 5.7.8 bad AUTH PLAIN INITIAL, password dact\r\n"
        initial, error, lines = auth_failure(password, reply)
        expected = "535 5.7.8 bad AUTH PLAIN <redacted>, password <redacted>"
        assert str(error) == "authentication failed: " + expected, (password, str(error))
        assert error.text == expected[10:], (password, error.text)
        assert lines[-1] == "<-- " + expected, (password, lines[-1])
