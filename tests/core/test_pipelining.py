"""PIPELINING, AUTH in the pipeline, CHUNKING and queue flushes, against a sans-IO server."""

from fake_server import FakeServer, converse

from helpers import raises
from microsmtp.errors import AuthError, RecipientsRefused
from microsmtp.session import Session

PIPELINED = ("PIPELINING", "SIZE 100000", "8BITMIME", "CHUNKING", "AUTH PLAIN LOGIN")
PLAIN_ONLY = ("SIZE 100000", "8BITMIME", "AUTH PLAIN LOGIN")


def starttls_server(tls_extensions, replies=None):
    return FakeServer(extensions=("STARTTLS",) + tuple(tls_extensions), tls_extensions=tls_extensions, replies=replies)


def connect(server, **options):
    options.setdefault("username", "alice")
    options.setdefault("password", "secret")
    session = Session("sensor.example", **options)
    turns = converse(session, server)
    return session, turns


def body(n):
    return ("Subject: alert %d\r\n\r\nvalue %d \u00b0C\r\n.dot line\r\n" % (n, n)).encode("utf-8")


def test_one_alert_pipelined_turns():
    server = starttls_server(PIPELINED)
    session, turns = connect(server)
    transaction = session.mail("a@x.org", ["b@x.org"], body(1))
    session.quit()
    turns += converse(session, server)
    assert transaction.ok
    # EHLO, STARTTLS, EHLO, then AUTH+MAIL+RCPT+DATA, then content+QUIT. TLS 1.2 adds
    # two handshake round trips on a real connection.
    assert turns == 5
    assert server.messages == [body(1)]
    assert b"AUTH PLAIN AGFsaWNlAHNlY3JldA==" in server.commands


def test_one_alert_lock_step_turns():
    server = starttls_server(PLAIN_ONLY)
    session, turns = connect(server)
    transaction = session.mail("a@x.org", ["b@x.org"], body(1))
    session.quit()
    turns += converse(session, server)
    assert transaction.ok
    # EHLO, STARTTLS, EHLO, AUTH, MAIL, RCPT, DATA, content, QUIT: one command a turn.
    assert turns == 9
    assert server.messages == [body(1)]


def test_one_alert_leaves_rare_modules_unloaded():
    # auth.py and session_rare.py stay out of a board's RAM when one alert goes out with
    # AUTH PLAIN and DATA, pipelined or in lock-step.
    import sys

    import microsmtp

    names = ("microsmtp.auth", "microsmtp.session_rare")
    saved = []
    for name in names:
        attribute = name.split(".")[1]
        saved.append((name, sys.modules.pop(name, None), attribute, microsmtp.__dict__.pop(attribute, None)))
    try:
        for extensions in (PIPELINED, PLAIN_ONLY):
            server = starttls_server(extensions)
            session, _ = connect(server)
            transaction = session.mail("a@x.org", ["b@x.org"], body(1))
            session.quit()
            converse(session, server)
            assert transaction.ok
            for name in names:
                assert name not in sys.modules, (extensions, name)
    finally:
        for name, module, attribute, value in saved:
            if module is not None:
                sys.modules[name] = module
            if value is not None:
                setattr(microsmtp, attribute, value)


def test_implicit_tls_pipelined_turns():
    server = FakeServer(extensions=PIPELINED)
    session, turns = connect(server, security="tls")
    session.mail("a@x.org", ["b@x.org"], body(1))
    session.quit()
    turns += converse(session, server)
    assert turns == 3


def test_flush_of_twenty_in_few_turns():
    server = starttls_server(PIPELINED)
    session, turns = connect(server)
    transactions = [session.mail("a@x.org", ["b@x.org"], body(n)) for n in range(20)]
    session.quit()
    turns += converse(session, server)
    assert [t.ok for t in transactions] == [True] * 20
    assert server.messages == [body(n) for n in range(20)]
    # The first message uses DATA because AUTH shares its group; the other 19 travel
    # with BDAT in one group, and QUIT follows once the RCPT replies are in.
    assert turns == 6
    assert sum(1 for c in server.commands if c.startswith(b"BDAT")) == 19


def test_flush_without_chunking_uses_one_turn_per_message():
    server = starttls_server(("PIPELINING", "AUTH PLAIN", "8BITMIME"))
    session, turns = connect(server)
    transactions = [session.mail("a@x.org", ["b@x.org"], body(n)) for n in range(5)]
    session.quit()
    turns += converse(session, server)
    assert [t.ok for t in transactions] == [True] * 5
    assert server.messages == [body(n) for n in range(5)]
    assert turns == 3 + 5 + 1


def test_bdat_counts_exact_octets():
    server = FakeServer(extensions=PIPELINED)
    session, _ = connect(server, security="tls")
    session.mail("a@x.org", ["b@x.org"], b"warm-up\r\n")
    text = "\u00e9\u00e8 \U0001f321 line\rbare cr\nbare lf\r\n.dot\r\n" * 200
    transaction = session.mail("a@x.org", ["b@x.org"], [piece.encode("utf-8") for piece in text.split(" ")])
    converse(session, server)
    assert transaction.ok
    expected = "".join(text.split(" ")).encode("utf-8")
    expected = expected.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    assert server.messages[1] == expected
    bdat = [c for c in server.commands if c.startswith(b"BDAT")]
    assert bdat[-1].endswith(b" LAST")
    assert sum(int(c.split(b" ")[1]) for c in bdat) == len(expected)


class FailingContent:
    """Content that fails after its first piece, with ``error`` (invalid input or a lack of heap)."""

    def __init__(self, error):
        self.error = error

    def chunks(self):
        yield b"Subject: broken\r\n\r\n" + b"x" * 2100 + b"\r\n"
        raise self.error


def test_bdat_content_failure_fails_one_message():
    # A BDAT chunk states its length, so a message whose content fails midway is ended by
    # the RSET before the next message, and the messages around it still go out.
    from microsmtp.errors import InvalidInputError, OutOfMemory

    failures = (
        (InvalidInputError("message content contains a NUL byte"), InvalidInputError),
        (MemoryError("memory allocation failed, allocating 4096 bytes"), OutOfMemory),
    )
    for exc, error_type in failures:
        server = FakeServer(extensions=PIPELINED)
        session, _ = connect(server, security="tls")
        transactions = [
            session.mail("a@x.org", ["b@x.org"], body(0)),
            session.mail("a@x.org", ["b@x.org"], body(1)),
            session.mail("a@x.org", ["b@x.org"], FailingContent(exc)),
            session.mail("a@x.org", ["b@x.org"], body(3)),
        ]
        session.quit()
        converse(session, server)
        assert [t.ok for t in transactions] == [True, True, False, True], exc
        error = transactions[2].error
        assert type(error) is error_type, error
        assert error.stage == "message", error
        assert server.messages == [body(0), body(1), body(3)], exc
        # The first chunk of the failed message was sent, then an RSET ended it.
        chunk = server.commands.index(b"BDAT 2121")
        assert server.commands[chunk + 1] == b"RSET", server.commands
        assert server.closed


def test_failed_auth_in_pipeline_sends_no_content():
    server = starttls_server(PIPELINED, replies={"AUTH": b"535 5.7.8 bad credentials", "DATA": b"354 go"})
    session, _ = connect(server)
    transaction = session.mail("a@x.org", ["b@x.org"], body(1))
    session.quit()
    error = raises(AuthError, converse, session, server)
    assert error.code == 535
    assert transaction.error is error
    assert server.messages == []
    assert server.commands[-1] == b"DATA"
    assert b"QUIT" not in server.commands
    raises(AuthError, session.next_event)


def test_data_accepted_without_recipient_gets_lone_dot():
    server = FakeServer(
        extensions=PIPELINED,
        replies={"RCPT": b"550 5.1.1 no", "DATA": b"354 go", "DOT": b"554 5.5.1 no valid recipients"},
    )
    session, _ = connect(server, security="tls", chunking=False)
    transaction = session.mail("a@x.org", ["b@x.org"], body(1))
    converse(session, server)
    assert isinstance(transaction.error, RecipientsRefused)
    assert server.messages == [b""]


def test_too_many_recipients_split():
    for extensions in (PIPELINED, PLAIN_ONLY):
        replies = {"RCPT": [b"250 ok", b"452 4.5.3 too many recipients", b"452 4.5.3 too many recipients"]}
        server = FakeServer(extensions=extensions, replies=replies)
        session, _ = connect(server, security="tls")
        transaction = session.mail("a@x.org", ["b@x.org", "c@x.org", "d@x.org"], body(1))
        session.quit()
        converse(session, server)
        assert transaction.ok, transaction.error
        assert sorted(transaction.accepted) == ["b@x.org", "c@x.org", "d@x.org"]
        assert server.messages == [body(1), body(1)]
        rcpts = [c for c in server.commands if c.startswith(b"RCPT")]
        assert rcpts == [
            b"RCPT TO:<b@x.org>",
            b"RCPT TO:<c@x.org>",
            b"RCPT TO:<d@x.org>",
            b"RCPT TO:<c@x.org>",
            b"RCPT TO:<d@x.org>",
        ]


def outcome(transaction):
    error = transaction.error
    return (
        transaction.ok,
        sorted(transaction.accepted),
        sorted((addr, reply.code) for addr, reply in transaction.refused.items()),
        type(error).__name__ if error else None,
        error.code if error else None,
        error.stage if error else None,
        error.transient if error else None,
    )


FAULTS = (
    {},
    {"MAIL": [b"451 4.3.0 try later"]},
    {"MAIL": [b"550 5.7.1 sender rejected"]},
    {"RCPT c@x.org": [b"550 5.1.1 no such user"]},
    {"RCPT": [b"550 5.1.1 no", b"550 5.1.1 no"]},
    {"RCPT": [b"452 4.5.3 full", b"452 4.5.3 full"]},
    {"DATA": [b"554 5.5.1 no"]},
    {"DATA": [b"451 4.3.0 later"]},
    {"DOT": [b"552 5.3.4 too big"]},
    {"DOT": [b"451 4.3.0 later"]},
    {"BDAT": [b"552 5.3.4 too big"]},
)


def run_flush(extensions, replies):
    server = FakeServer(extensions=extensions, replies=dict((k, list(v)) for k, v in replies.items()))
    session, _ = connect(server, security="tls")
    first = session.mail("a@x.org", ["b@x.org", "c@x.org"], body(1))
    second = session.mail("a@x.org", ["b@x.org", "c@x.org"], body(2))
    session.quit()
    converse(session, server)
    return [outcome(first), outcome(second)], server.messages


def test_pipelined_and_lock_step_agree():
    for replies in FAULTS:
        pipelined, delivered_pipelined = run_flush(PIPELINED, replies)
        lock_step, delivered_lock_step = run_flush(PLAIN_ONLY, replies)
        if "BDAT" in replies:
            # Lock-step uses DATA, so a BDAT fault does not apply; the fault must still
            # hit the pipelined path only and leave the other message alone.
            assert pipelined[0][0] or pipelined[1][0], replies
            continue
        assert pipelined == lock_step, (replies, pipelined, lock_step)
        assert delivered_pipelined == delivered_lock_step, replies


class HangUpAfterContent(FakeServer):
    """A FakeServer that closes the connection when the content ends, before its final reply."""

    def _reply(self, key, default):
        if key == "DOT":
            self.closed = True
            return b""
        return FakeServer._reply(self, key, default)


# Faults that keep the content from the recipients the server accepted at RCPT: the
# reply table, and the FakeServer class.
CONTENT_FAULTS = (
    ({"DATA": [b"554 5.5.1 no"]}, FakeServer),
    ({"DATA": [b"451 4.3.0 later"]}, FakeServer),
    ({"DOT": [b"552 5.3.4 too big"]}, FakeServer),
    ({"DOT": [b"451 4.3.0 later"]}, FakeServer),
    ({"DOT": [b"421 4.4.2 closing"]}, FakeServer),
    ({"BDAT": [b"552 5.3.4 too big"]}, FakeServer),
    ({}, HangUpAfterContent),
)


def test_failed_content_leaves_accepted_empty():
    # accepted names only recipients that will get the message, and the RCPT replies
    # stay in rcpt_accepted. A second message first, so that BDAT carries the failing one.
    for replies, server_class in CONTENT_FAULTS:
        for extensions in (PIPELINED, PLAIN_ONLY):
            if "BDAT" in replies and extensions is PLAIN_ONLY:
                # Lock-step sends with DATA.
                continue
            server = server_class(extensions=extensions, replies=dict((k, list(v)) for k, v in replies.items()))
            session, _ = connect(server, security="tls")
            first = session.mail("a@x.org", ["b@x.org", "c@x.org"], body(1))
            second = session.mail("a@x.org", ["b@x.org", "c@x.org"], body(2))
            session.quit()
            try:
                converse(session, server)
            except Exception as exc:  # noqa: BLE001 - a 421 or hang-up ends the session
                assert not session.usable, exc
            failed = [t for t in (first, second) if t.error is not None]
            assert failed, (replies, extensions)
            for transaction in failed:
                assert transaction.done, (replies, extensions)
                assert transaction.accepted == {}, (replies, extensions, transaction.accepted)
                assert sorted(transaction.refused) == [], (replies, extensions)
                if transaction.mail_accepted or transaction.rcpt_accepted:
                    assert sorted(transaction.rcpt_accepted) == ["b@x.org", "c@x.org"], (replies, extensions)
                    assert transaction.rcpt_accepted["b@x.org"].code == 250
            for transaction in (first, second):
                if transaction.ok:
                    assert sorted(transaction.accepted) == ["b@x.org", "c@x.org"], (replies, extensions)
                    assert transaction.accepted == transaction.rcpt_accepted


def test_later_batch_refused_keeps_earlier_batch():
    # After a 452 the first batch has the message. The server refuses the content for
    # the second, so its recipients, and the one it deferred, count as refused.
    for extensions in (PIPELINED, PLAIN_ONLY):
        full = b"452 4.5.3 too many recipients"
        replies = {"RCPT c@x.org": [full], "RCPT d@x.org": [full, full], "DOT": [b"250 2.0.0 first", b"554 5.7.1 no"]}
        server = FakeServer(extensions=extensions, replies=replies)
        session, _ = connect(server, security="tls", chunking=False)
        transaction = session.mail("a@x.org", ["b@x.org", "c@x.org", "d@x.org"], body(1))
        session.quit()
        converse(session, server)
        assert transaction.ok, (extensions, transaction.error)
        assert sorted(transaction.accepted) == ["b@x.org"], (extensions, transaction.accepted)
        assert sorted(transaction.rcpt_accepted) == ["b@x.org", "c@x.org"], extensions
        assert sorted((a, r.code) for a, r in transaction.refused.items()) == [("c@x.org", 554), ("d@x.org", 554)]
        assert transaction.deferred == []
        rcpts = [c for c in server.commands if c.startswith(b"RCPT")]
        assert len(rcpts) == 5, rcpts


def later_batch_cases(content):
    """Return (replies, accepted, refused codes) with c and d deferred by a 452 to batch 2.

    content is "DOT" (DATA) or "BDAT": the key of the replies to the content.
    """
    full = b"452 4.5.3 too many recipients"
    no_c = b"550 5.1.1 no c"
    if content == "DOT":
        command = {"DATA": [b"354 go", b"451 4.3.0 later"]}
    else:
        command = {"BDAT": [b"250 2.0.0 first", b"451 4.3.0 later"]}
    cases = (
        ({"MAIL": [b"250 ok", b"550 5.7.1 no"]}, ["b"], {"c": 550, "d": 550}),
        ({"MAIL": [b"250 ok", b"451 4.3.0 later"]}, ["b"], {"c": 451, "d": 451}),
        ({"RCPT c@x.org": [full, no_c], "RCPT d@x.org": [full, b"450 4.2.1 later"]}, ["b"], {"c": 550, "d": 450}),
        ({"RCPT c@x.org": [full, no_c], content: [b"250 2.0.0 first", b"554 5.7.1 no"]}, ["b"], {"c": 550, "d": 554}),
        (command, ["b"], {"c": 451, "d": 451}),
        # d deferred again, to a third batch whose MAIL is refused.
        ({"RCPT d@x.org": [full, full], "MAIL": [b"250 ok", b"250 ok", b"550 5.7.1 no"]}, ["b", "c"], {"d": 550}),
    )
    for replies, accepted, refused in cases:
        replies.setdefault("RCPT c@x.org", [full])
        replies.setdefault("RCPT d@x.org", [full])
        yield replies, [a + "@x.org" for a in accepted], dict((a + "@x.org", code) for a, code in refused.items())


def test_later_batch_refusal_names_every_recipient():
    # After a 452 the first batch (b) has the message, and the server refuses a later
    # batch at MAIL, at each RCPT, at DATA or at its content. Each recipient ends in
    # accepted or in refused, never in both or neither: pipelined and lock-step, with
    # DATA and with BDAT. The session uses BDAT only with PIPELINING and only once AUTH
    # got its reply, so a first message gets AUTH done.
    for extensions in (PIPELINED, PLAIN_ONLY + ("CHUNKING",)):
        for chunking in (True, False):
            content = "BDAT" if chunking and extensions is PIPELINED else "DOT"
            for replies, accepted, refused in later_batch_cases(content):
                server = FakeServer(extensions=extensions)
                session, _ = connect(server, security="tls", chunking=chunking)
                session.mail("a@x.org", ["z@x.org"], body(1))
                converse(session, server)
                server.replies.update(replies)
                transaction = session.mail("a@x.org", ["b@x.org", "c@x.org", "d@x.org"], body(1))
                session.quit()
                converse(session, server)
                where = (extensions, chunking, replies)
                assert (b"BDAT" in b" ".join(server.commands)) == (content == "BDAT"), where
                assert transaction.ok, (where, transaction.error)
                assert sorted(transaction.accepted) == accepted, (where, transaction.accepted)
                assert dict((a, r.code) for a, r in transaction.refused.items()) == refused, (
                    where,
                    transaction.refused,
                )


def test_later_batch_content_failure_sets_error():
    # BDAT content that fails on the client side in the second batch has no reply to
    # put in refused: the transaction gets the error, and accepted still names the
    # first batch, which has the message.
    from microsmtp.errors import InvalidInputError

    class SecondPassFails:
        passes = 0

        def chunks(self):
            self.passes += 1
            yield b"Subject: x\r\n\r\n" + b"y" * 1100 + b"\r\n"
            if self.passes == 2:
                raise InvalidInputError("message content contains a NUL byte")
            yield b"end\r\n"

    server = FakeServer(extensions=PIPELINED, replies={"RCPT c@x.org": [b"452 4.5.3 too many recipients"]})
    session, _ = connect(server, security="tls")
    session.mail("a@x.org", ["z@x.org"], body(0))
    transaction = session.mail("a@x.org", ["b@x.org", "c@x.org"], SecondPassFails())
    session.quit()
    converse(session, server)
    assert isinstance(transaction.error, InvalidInputError), transaction.error
    assert sorted(transaction.accepted) == ["b@x.org"], transaction.accepted
    for reply in transaction.refused.values():
        assert reply is not None
    assert server.closed
