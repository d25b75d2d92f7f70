"""A lack of heap anywhere in the asyncio driver's dialogue, on CPython.

Every MemoryError must reach the caller as a transient OutOfMemory, close or keep the
connection in a known state, and never deliver part of a message. The server is
tests/core/fake_server.FakeServer behind a loopback asyncio listener, so that
PIPELINING, SIZE and CHUNKING can be offered. Plaintext only: no TLS is needed to reach
the code under test. tests/test_integration.py runs the main cases on both runtimes
over TLS.
"""

import asyncio

import pytest
from fake_server import FakeServer
from scenarios import ShortOfMemory

import microsmtp.errors
from microsmtp import session as session_module
from microsmtp.client import SMTP, send
from microsmtp.errors import OutOfMemory, SMTPError
from microsmtp.message import Message

EXTENSIONS = ("PIPELINING", "SIZE 100000", "8BITMIME")
CHUNKING = ("PIPELINING", "SIZE 100000", "8BITMIME", "CHUNKING")


class Loopback:
    """FakeServer instances behind an asyncio listener on 127.0.0.1, one per connection."""

    def __init__(self, extensions=EXTENSIONS):
        self.extensions = extensions
        self.servers = []
        self.closed_by_client = []
        self.listener = None
        self.port = None

    async def start(self):
        self.listener = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.listener.sockets[0].getsockname()[1]

    async def stop(self):
        self.listener.close()
        await self.listener.wait_closed()

    async def _serve(self, reader, writer):
        server = FakeServer(extensions=self.extensions)
        self.servers.append(server)
        writer.write(server.output())
        await writer.drain()
        while not server.closed:
            data = await reader.read(65536)
            if not data:
                self.closed_by_client.append(server)
                break
            server.receive(data)
            out = server.output()
            if out:
                writer.write(out)
                await writer.drain()
        writer.close()

    @property
    def messages(self):
        return [content for server in self.servers for content in server.messages]


def message(n, body="body\r\n" * 200):
    return Message(
        sender="a@example.com",
        to=["b@example.com"],
        subject="message %d" % n,
        text=body,
        message_id="<m%d@example.com>" % n,
    )


def run(scenario, extensions=EXTENSIONS):
    async def main():
        loopback = Loopback(extensions)
        await loopback.start()
        try:
            return await scenario(loopback)
        finally:
            await loopback.stop()

    return asyncio.run(main())


def smtp_for(loopback):
    return SMTP("127.0.0.1", port=loopback.port, security="none", local_hostname="c.example")


# -- send_messages(): messages after the one that ran short --------------------------------


def test_later_messages_get_out_of_memory():
    # send_messages() gives the OutOfMemory to each message not yet accepted.
    async def scenario(loopback):
        smtp = smtp_for(loopback)
        await smtp.connect()
        short = ShortOfMemory(message(1), failing_pass=1)
        later = message(2)
        transactions = await smtp.send_messages([message(0), short, later])
        await smtp.quit()
        return transactions, loopback.messages

    transactions, delivered = run(scenario)
    assert delivered == []
    errors = [type(transaction.error).__name__ for transaction in transactions]
    assert errors == ["OutOfMemory", "OutOfMemory", "OutOfMemory"], [str(t.error) for t in transactions]


def test_send_messages_stops_encoding_after_failure():
    # After the MemoryError no further message is encoded (measured for SIZE), because
    # the heap is short and the connection is already closed.
    async def scenario(loopback):
        smtp = smtp_for(loopback)
        await smtp.connect()
        first = ShortOfMemory(message(1), failing_pass=1)
        # failing_pass=0 never fails, so this one only counts the passes.
        later = ShortOfMemory(message(2), failing_pass=0)
        await smtp.send_messages([first, later])
        return later.passes

    assert run(scenario) == 0


# -- the OutOfMemory itself cannot be built ------------------------------------------------


def short_content():
    """Raw content whose first piece (over _WRITE_SIZE, so written at once) fits and whose second does not."""
    yield b"Subject: short\r\nX-Short: yes\r\n\r\n" + b"first part " * 60 + b"\r\n"
    raise MemoryError("memory allocation failed, allocating 4096 bytes")


@pytest.mark.parametrize("failures", [1, 2])
def test_session_ends_when_error_not_built(monkeypatch, failures):
    # On a board the heap can stay exhausted while the error message is formatted. The
    # session must still end, the connection must be closed, and the message that ran
    # short must never be delivered, even partly.
    left = [failures]
    real_free_heap = microsmtp.errors.free_heap

    def exhausted():
        if left[0]:
            left[0] -= 1
            raise MemoryError()
        return real_free_heap()

    async def scenario(loopback):
        smtp = smtp_for(loopback)
        await smtp.connect()
        monkeypatch.setattr(microsmtp.errors, "free_heap", exhausted)
        try:
            await smtp.send_raw("a@example.com", ["b@example.com"], short_content())
            outcome = "no error"
        except SMTPError as exc:
            outcome = type(exc).__name__
        except MemoryError:
            outcome = "MemoryError"
        connected = smtp._writer is not None
        usable = smtp.session.usable
        # A caller that catches MemoryError and goes on with the same object.
        second = None
        try:
            await smtp.send_message(message(2))
            second = "sent"
        except SMTPError as exc:
            second = type(exc).__name__
        await smtp.quit()
        return outcome, connected, usable, second, loopback.messages

    outcome, connected, usable, second, delivered = run(scenario)
    partial = [content for content in delivered if b"X-Short" in content]
    assert partial == [], "the message that ran short was delivered: %r" % partial[0]
    assert not connected, "the connection stayed open"
    assert not usable
    assert outcome == "OutOfMemory"


# -- quit() and send() after the content ---------------------------------------------------


def test_quit_memory_error_closes_connection(monkeypatch):
    # quit() ignores errors while quitting and always closes the connection.
    async def scenario(loopback):
        smtp = smtp_for(loopback)
        await smtp.connect()
        await smtp.send_message(message(0))

        def no_memory(self):
            raise MemoryError()

        monkeypatch.setattr(session_module.Session, "quit", no_memory)
        try:
            await smtp.quit()
            raised = None
        except BaseException as exc:  # noqa: BLE001 - reported
            raised = type(exc).__name__
        return raised, smtp._writer is None

    raised, closed = run(scenario)
    assert closed, "quit() left the connection open"
    assert raised is None


def test_send_quit_memory_error_out_of_memory(monkeypatch):
    # send() raises OutOfMemory, not MemoryError, for a lack of heap after connecting.
    def no_memory(self):
        raise MemoryError()

    async def scenario(loopback):
        monkeypatch.setattr(session_module.Session, "quit", no_memory)
        try:
            await send(message(0), "127.0.0.1", port=loopback.port, security="none", local_hostname="c.example")
            return "sent"
        except SMTPError as exc:
            return type(exc).__name__
        except MemoryError:
            return "MemoryError"

    assert run(scenario) == "OutOfMemory"


# -- BDAT: only the message that ran short fails -------------------------------------------


class TwoPieces:
    """A message-like object in two pieces: BDAT 2000, then BDAT 702 LAST, each written at once."""

    sender_address = "a@example.com"
    recipients = ["b@example.com"]
    message_id = "<m0@example.com>"
    needs_smtputf8 = False

    def chunks(self):
        yield b"Message-ID: <m0@example.com>\r\n\r\n" + b"y" * 1968
        yield b"z" * 700


def test_bdat_short_message_fails_alone():
    # With CHUNKING, the first message goes out whole (BDAT ... LAST) in the same flight
    # as the second one's envelope. When the second one runs short, only it fails: the
    # first one's 250 is still read, so an outbox does not send it again.
    async def scenario(loopback):
        smtp = smtp_for(loopback)
        await smtp.connect()
        short = ShortOfMemory(message(1), failing_pass=2, after=1)
        transactions = await smtp.send_messages([TwoPieces(), short, message(2)])
        usable = smtp.session.usable
        await smtp.quit()
        return transactions, usable, loopback.messages

    transactions, usable, delivered = run(scenario, CHUNKING)
    assert transactions[0].error is None
    assert transactions[0].reply.code == 250
    assert type(transactions[1].error) is OutOfMemory
    assert transactions[1].error.stage == "message"
    assert transactions[2].error is None
    assert usable
    assert len(delivered) == 2
    assert b"<m0@example.com>" in delivered[0]
    assert b"<m2@example.com>" in delivered[1]


# -- stage named by the OutOfMemory --------------------------------------------------------


def test_measuring_failure_names_dialogue_stage():
    async def scenario(loopback):
        smtp = smtp_for(loopback)
        await smtp.connect()
        try:
            await smtp.send_message(ShortOfMemory(message(1), failing_pass=1))
        except OutOfMemory as exc:
            return exc.stage, str(exc)

    stage, text = run(scenario)
    assert stage == "mail", text


# -- second use after the failure ----------------------------------------------------------


@pytest.mark.parametrize("failing_pass", [1, 2])
def test_reconnect_after_out_of_memory_sends(failing_pass):
    async def scenario(loopback):
        smtp = smtp_for(loopback)
        await smtp.connect()
        with pytest.raises(OutOfMemory):
            await smtp.send_message(ShortOfMemory(message(1), failing_pass=failing_pass))
        await smtp.connect()
        transaction = await smtp.send_message(message(2))
        await smtp.quit()
        return transaction, loopback.messages

    transaction, delivered = run(scenario)
    assert transaction.ok
    assert len(delivered) == 1
    assert b"<m2@example.com>" in delivered[0]


@pytest.mark.parametrize("extensions", [EXTENSIONS, CHUNKING], ids=["data", "bdat"])
@pytest.mark.parametrize("after", [0, 1, 2, 3, 50])
def test_send_raw_short_never_delivered(extensions, after):
    def content():
        for index in range(60):
            if index == after:
                raise MemoryError("memory allocation failed")
            yield b"line %d " % index + b"z" * 100 + b"\r\n"

    async def scenario(loopback):
        smtp = smtp_for(loopback)
        await smtp.connect()
        with pytest.raises(OutOfMemory) as raised:
            await smtp.send_raw("a@example.com", ["b@example.com"], content())
        closed = smtp._writer is None
        if not closed:
            # BDAT: the session went on, so the same connection sends the next message.
            await smtp.send_message(message(2))
            await smtp.quit()
        await asyncio.sleep(0.1)
        return raised.value, closed, loopback.messages

    error, closed, delivered = run(scenario, extensions)
    assert error.transient
    # DATA cannot be ended without sending the message, so the connection is dropped.
    assert closed == (extensions is EXTENSIONS)
    assert not any(b"line 0 " in content for content in delivered)
    assert len(delivered) == (0 if closed else 1)


def test_cancel_still_propagates():
    async def scenario(loopback):
        smtp = smtp_for(loopback)
        await smtp.connect()

        def endless():
            while True:
                yield b"x" * 100 + b"\r\n"

        task = asyncio.ensure_future(smtp.send_raw("a@example.com", ["b@example.com"], endless()))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return smtp._writer is None, smtp.session.usable

    closed, usable = run(scenario)
    assert closed
    assert not usable


# -- other places of the dialogue ----------------------------------------------------------


def fail_on_call(monkeypatch, owner, name, when):
    """Make owner.name raise MemoryError on the calls for which when(count, args) is True."""
    real = getattr(owner, name)
    count = [0]

    def wrapper(self, *args):
        count[0] += 1
        if when(count[0], self, args):
            raise MemoryError("memory allocation failed, allocating 64 bytes")
        return real(self, *args)

    monkeypatch.setattr(owner, name, wrapper)


@pytest.mark.parametrize(
    "target",
    ["data_to_send", "receive_data", "reply_in_message", "reply_in_rcpt"],
)
def test_memory_error_elsewhere_in_dialogue(monkeypatch, target):
    from microsmtp.reply import ReplyParser

    async def scenario(loopback):
        smtp = smtp_for(loopback)
        await smtp.connect()
        if target == "data_to_send":
            fail_on_call(monkeypatch, session_module.Session, "data_to_send", lambda n, s, a: n == 3)
        elif target == "receive_data":
            fail_on_call(monkeypatch, session_module.Session, "receive_data", lambda n, s, a: n == 2)
        else:
            kind = target.split("_")[-1]
            active = [True]

            def when(n, parser, args):
                # Only the parser of this connection, once, while that reply is awaited.
                if active[0] and smtp.session is not None and smtp.session.stage == kind:
                    active[0] = False
                    return True
                return False

            fail_on_call(monkeypatch, ReplyParser, "next_reply", when)
        try:
            await smtp.send_message(message(0))
            outcome = None
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome = exc
        closed = smtp._writer is None
        monkeypatch.undo()
        await smtp.connect()
        again = await smtp.send_message(message(1))
        await smtp.quit()
        return outcome, closed, again

    outcome, closed, again = run(scenario)
    assert isinstance(outcome, OutOfMemory), repr(outcome)
    assert outcome.transient
    assert closed
    assert again.ok
