"""The asyncio driver (client.SMTP, client.send) against servers that misbehave, on CPython.

Each server is a RawServer script on loopback. ``Script`` records what the client sent
and whether the client closed the connection, so that a test can check that a failed or
cancelled send leaves no connection open.
"""

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import threading
import types

import pytest
from raw_server import RawServer

import unix_port
from microsmtp import client
from microsmtp.client import SMTP, send
from microsmtp.errors import (
    ConnectionLost,
    InvalidInputError,
    OutOfMemory,
    ReplyError,
    SecurityError,
    SMTPError,
    Timeout,
)
from microsmtp.message import Message

EHLO = b"250-mx.example\r\n250 SIZE 2000\r\n"
# Time a test waits for the server to see the client close; far above any close.
CLOSE_WAIT_S = 5


class Script:
    """A server script: greeting, EHLO, then the given handler for the rest."""

    def __init__(self, rest, ehlo=EHLO):
        self.rest = rest
        self.ehlo = ehlo
        self.lines = []
        self.connections = 0
        self.closed_by_client = threading.Event()
        # Set by a script when it reaches the point where it stops replying.
        self.stalled = threading.Event()
        self.server = RawServer(self.handle)

    def handle(self, conn):
        self.connections += 1
        conn.send(b"220 mx.example ESMTP\r\n")
        self.read(conn)
        conn.send(self.ehlo)
        try:
            self.rest(self, conn)
        except OSError:
            self.closed_by_client.set()
            return
        self.wait_for_close(conn)

    def read(self, conn):
        line = conn.read_line()
        self.lines.append(line)
        return line

    def wait_for_close(self, conn):
        """Block until the client closes the connection (or CLOSE_WAIT_S passes)."""
        conn.sock.settimeout(CLOSE_WAIT_S)
        try:
            while conn.sock.recv(4096):
                pass
            self.closed_by_client.set()
        except OSError:
            pass

    def sent(self, prefix):
        return [line for line in self.lines if line.startswith(prefix)]


def serve_normally(script, conn):
    """Answer every command like a working server until QUIT."""
    while True:
        line = script.read(conn)
        if line.startswith(b"DATA"):
            conn.send(b"354 go ahead\r\n")
            while conn.read_line() != b".\r\n":
                pass
            conn.send(b"250 2.0.0 queued\r\n")
        elif line.startswith(b"QUIT"):
            conn.send(b"221 bye\r\n")
            return
        else:
            conn.send(b"250 ok\r\n")


def stall_at_final_reply(script, conn):
    """Accept the envelope and the content, then never send the final reply."""
    script.read(conn)
    conn.send(b"250 ok\r\n")
    script.read(conn)
    conn.send(b"250 ok\r\n")
    script.read(conn)
    conn.send(b"354 go ahead\r\n")
    while conn.read_line() != b".\r\n":
        pass
    script.stalled.set()


async def cancel_when_stalled(script, coroutine):
    """Run coroutine until the server stalls, then cancel it; return its task."""
    task = asyncio.ensure_future(coroutine)
    stalled = await asyncio.to_thread(script.stalled.wait, CLOSE_WAIT_S)
    assert stalled, "the server never reached its stall"
    for _ in range(10):
        # CPython 3.11 loses a cancel that lands just as a write's drain completes
        # (see test_cancel_as_write_completes), so the cancel is repeated until it lands.
        task.cancel()
        await asyncio.sleep(0)
        if task.done():
            break
    with pytest.raises(asyncio.CancelledError):
        await task
    return task


def message(n=1, body="body"):
    return Message("board@example.com", ["ops@example.com"], "alert %d" % n, body)


def smtp_for(script, **options):
    options.setdefault("security", "none")
    options.setdefault("timeout_ms", 10000)
    return SMTP(script.server.host, port=script.server.port, **options)


@pytest.fixture
def script():
    scripts = []

    def start(rest, ehlo=EHLO):
        started = Script(rest, ehlo)
        scripts.append(started)
        return started

    yield start
    for started in scripts:
        started.server.stop()


# -- known bugs ---------------------------------------------------------------------------


def test_timeout_closes_connection(script):
    server = script(stall_at_final_reply)

    async def scenario():
        smtp = smtp_for(server, reply_timeout_ms=300)
        await smtp.connect()
        with pytest.raises(Timeout):
            await smtp.send_message(message())
        usable = smtp.session.usable
        await asyncio.to_thread(server.closed_by_client.wait, CLOSE_WAIT_S)
        await smtp.close()
        return usable

    usable = asyncio.run(scenario())
    assert not usable
    assert server.closed_by_client.is_set()


def test_send_messages_timeout_sets_error(script):
    server = script(stall_at_final_reply)

    async def scenario():
        smtp = smtp_for(server, reply_timeout_ms=300)
        await smtp.connect()
        transactions = await smtp.send_messages([message()])
        await smtp.close()
        return transactions

    (transaction,) = asyncio.run(scenario())
    assert isinstance(transaction.error, Timeout)
    assert transaction.done


def test_send_messages_invalid_message_leaves_nothing_queued(script):
    server = script(serve_normally)

    async def scenario():
        smtp = smtp_for(server)
        await smtp.connect()
        try:
            returned = await smtp.send_messages([message(1), message(2, "x" * 5000)])
        except InvalidInputError:
            returned = None
        mails_before = len(server.sent(b"MAIL"))
        await smtp.send_message(message(3))
        await smtp.quit()
        return returned, mails_before

    returned, mails_before = asyncio.run(scenario())
    if returned is None:
        # The call failed as a whole: nothing of it may go out later.
        assert mails_before == 0
        assert len(server.sent(b"MAIL")) == 1
    else:
        assert returned[0].ok
        assert isinstance(returned[1].error, InvalidInputError)


class BrokenMessage:
    """A message whose content fails to encode with an error that is not an SMTPError."""

    def __init__(self):
        good = message(2)
        self.sender_address = good.sender_address
        self.recipients = good.recipients
        self.message_id = good.message_id
        self.needs_smtputf8 = False

    def chunks(self):
        raise TypeError("attachment data must be bytes")


def test_send_messages_unexpected_error_sends_nothing(script):
    server = script(serve_normally)

    async def scenario():
        smtp = smtp_for(server)
        await smtp.connect()
        with pytest.raises(TypeError):
            await smtp.send_messages([message(1), BrokenMessage()])
        usable = smtp.session is not None and smtp.session.usable
        # The caller saw the call fail, so a later quit() must not send message 1.
        await smtp.quit()
        await asyncio.to_thread(server.closed_by_client.wait, CLOSE_WAIT_S)
        return usable

    usable = asyncio.run(scenario())
    assert not usable
    assert server.sent(b"MAIL") == []
    assert server.closed_by_client.is_set()


def test_second_connect_closes_first(script):
    server = script(lambda script, conn: None)

    async def scenario():
        smtp = smtp_for(server)
        await smtp.connect()
        first = smtp._writer
        try:
            await smtp.connect()
        except SMTPError:
            pass
        # Checked at once: garbage collection would close the socket later, with a
        # ResourceWarning.
        first_closed = first.is_closing()
        await smtp.close()
        first.close()
        return first_closed

    assert asyncio.run(scenario())


def test_idle_421_closes_connection(script):
    # The 421 arrives in the same segment as the EHLO reply, so the session keeps it
    # buffered while idle.
    server = script(lambda script, conn: None, ehlo=EHLO + b"421 4.3.2 shutting down\r\n")

    async def scenario():
        smtp = smtp_for(server)
        await smtp.connect()
        with pytest.raises(SMTPError) as raised:
            await smtp.send_message(message())
        open_after = smtp._writer is not None
        await smtp.close()
        return raised.value, open_after

    error, open_after = asyncio.run(scenario())
    assert error.transient
    assert not open_after


def test_cancel_as_write_completes(script):
    server = script(serve_normally)

    async def scenario():
        loop = asyncio.get_running_loop()
        tasks = []

        def log(line):
            # Two loop iterations after the final dot is queued, the drain of that
            # write has completed but wait_for has not yet resumed its caller.
            if line == "--> ." and tasks:
                loop.call_soon(loop.call_soon, tasks[0].cancel)

        smtp = smtp_for(server, log=log)
        await smtp.connect()
        tasks.append(asyncio.ensure_future(smtp.send_message(message())))
        try:
            await tasks[0]
            outcome = "completed"
        except asyncio.CancelledError:
            outcome = "cancelled"
        await smtp.close()
        return outcome

    assert asyncio.run(scenario()) == "cancelled"


# -- behaviour that works ------------------------------------------------------------------


def test_cancelled_send_closes_connection(script):
    def stall(script, conn):
        script.read(conn)
        script.stalled.set()
        script.wait_for_close(conn)

    server = script(stall)

    async def scenario():
        await cancel_when_stalled(server, send(message(), server.server.host, port=server.server.port, security="none"))
        await asyncio.to_thread(server.closed_by_client.wait, CLOSE_WAIT_S)

    asyncio.run(scenario())
    assert server.closed_by_client.is_set()
    assert server.sent(b"MAIL")


def test_cancelled_send_message_closes_connection(script):
    server = script(stall_at_final_reply)

    async def scenario():
        smtp = smtp_for(server)
        await smtp.connect()
        await cancel_when_stalled(server, smtp.send_message(message()))
        await asyncio.to_thread(server.closed_by_client.wait, CLOSE_WAIT_S)
        with pytest.raises(ConnectionLost):
            await smtp.send_message(message(2))

    asyncio.run(scenario())
    assert server.closed_by_client.is_set()
    assert len(server.sent(b"MAIL")) == 1


def test_fatal_error_then_send_messages(script):
    def refuse(script, conn):
        script.read(conn)
        conn.send(b"421 4.3.2 shutting down\r\n")

    server = script(refuse)

    async def scenario():
        smtp = smtp_for(server)
        await smtp.connect()
        with pytest.raises(ReplyError) as raised:
            await smtp.send_message(message())
        assert raised.value.code == 421
        with pytest.raises(ConnectionLost):
            await smtp.send_messages([message(2)])
        await asyncio.to_thread(server.closed_by_client.wait, CLOSE_WAIT_S)
        await smtp.quit()

    asyncio.run(scenario())
    assert server.closed_by_client.is_set()
    assert len(server.sent(b"MAIL")) == 1


def test_reuse_after_close_needs_connect(script):
    server = script(serve_normally)

    async def scenario():
        smtp = smtp_for(server)
        await smtp.connect()
        await smtp.close()
        await smtp.close()
        with pytest.raises(ConnectionLost):
            await smtp.send_message(message())
        await smtp.connect()
        transaction = await smtp.send_message(message(2))
        await smtp.quit()
        await smtp.quit()
        return transaction

    transaction = asyncio.run(scenario())
    assert transaction.ok
    assert server.connections == 2
    assert len(server.sent(b"MAIL")) == 1


def test_async_with_error_closes_without_quit(script):
    server = script(serve_normally)

    async def scenario():
        with pytest.raises(RuntimeError):
            async with smtp_for(server):
                raise RuntimeError("caller failed")
        await asyncio.to_thread(server.closed_by_client.wait, CLOSE_WAIT_S)

    asyncio.run(scenario())
    assert server.closed_by_client.is_set()
    assert server.sent(b"QUIT") == []


def test_server_closes_during_tls_handshake(script, certs):
    def close_after_starttls(script, conn):
        script.read(conn)
        conn.send(b"220 go ahead\r\n")
        conn.sock.recv(10)
        conn.sock.shutdown(socket.SHUT_RDWR)

    server = script(close_after_starttls, ehlo=b"250-mx.example\r\n250 STARTTLS\r\n")

    async def scenario():
        with pytest.raises(SMTPError) as raised:
            await send(
                message(),
                server.server.host,
                port=server.server.port,
                ca_roots=[certs.ca_der],
                server_hostname="localhost",
                username="alice",
                password="pw-9f3c-secret",
            )
        return raised.value

    error = asyncio.run(scenario())
    assert isinstance(error, (ConnectionLost, SecurityError))
    assert error.stage == "tls"
    assert "pw-9f3c-secret" not in str(error)
    assert server.sent(b"AUTH") == []


class CloseRecorder:
    """A stream writer that records close(); ``stuck`` makes it never finish closing."""

    def __init__(self, stuck):
        self.stuck = stuck
        self.waits = 0
        self.aborted = False
        self.transport = types.SimpleNamespace(abort=self.abort)

    def abort(self):
        self.aborted = True

    def close(self):
        pass

    async def wait_closed(self):
        self.waits += 1
        if self.stuck:
            # A peer that stopped responding never completes the TLS close.
            await asyncio.Event().wait()


@pytest.mark.parametrize(
    "spent_ms, handshaking, stuck, waits, aborted",
    [
        (0, False, False, 1, False),
        (950, False, True, 1, True),
        (1000, False, True, 0, True),
        (1500, False, False, 0, True),
        (0, True, True, 0, True),
    ],
)
def test_close_waits_within_timeout(monkeypatch, spent_ms, handshaking, stuck, waits, aborted):
    clock = [10_000]
    monkeypatch.setattr(client, "_now_ms", lambda: clock[0])
    smtp = SMTP("127.0.0.1", security="none", timeout_ms=1000)
    smtp._start_deadline(1000)
    clock[0] += spent_ms
    smtp._handshaking = handshaking
    writer = CloseRecorder(stuck)
    smtp._writer = writer

    asyncio.run(smtp.close())

    assert writer.waits == waits
    assert writer.aborted == aborted
    assert smtp._writer is None


def hold_tls_close(certs, answer_quit):
    """Return a STARTTLS script that takes a message and QUIT, then never completes the TLS close.

    With ``answer_quit`` the script replies 221 and sets ``stalled`` once the client's
    TLS close has begun. Without it, the script sets ``stalled`` after QUIT. It watches
    the TCP connection under TLS and sets ``closed_by_client`` when the client closes
    or resets it, so a TLS close_notify alone does not count.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    certs.server_cert.configure_cert(context)

    def rest(script, conn):
        script.read(conn)
        conn.send(b"220 go ahead\r\n")
        conn.start_tls(context)
        script.read(conn)
        conn.send(EHLO)

        for reply in (b"250 ok\r\n", b"250 ok\r\n", b"354 go ahead\r\n"):
            script.read(conn)
            conn.send(reply)
        while conn.read_line() != b".\r\n":
            pass
        conn.send(b"250 2.0.0 queued\r\n")
        script.read(conn)

        raw = socket.socket(fileno=os.dup(conn.sock.fileno()))
        raw.settimeout(CLOSE_WAIT_S)
        try:
            if answer_quit:
                conn.send(b"221 bye\r\n")
                # This is the client's close_notify, so the client now waits for the server's.
                raw.recv(4096)
            script.stalled.set()
            while raw.recv(4096):
                pass
            script.closed_by_client.set()
        except TimeoutError:
            pass
        except OSError:
            script.closed_by_client.set()
        finally:
            raw.close()
            conn.sock.close()

    return rest


@pytest.mark.parametrize("answer_quit", [True, False], ids=["during-close", "before-221"])
def test_cancel_near_tls_close_drops_connection(script, certs, monkeypatch, answer_quit):
    # A close that waited its full time for the server's close_notify would outlast
    # the test's wait for the connection to close.
    monkeypatch.setattr(client, "_CLOSE_WAIT_MS", 60_000)
    server = script(hold_tls_close(certs, answer_quit), ehlo=b"250-mx.example\r\n250 STARTTLS\r\n")

    async def scenario():
        task = asyncio.ensure_future(
            send(
                message(),
                server.server.host,
                port=server.server.port,
                ca_roots=[certs.ca_der],
                server_hostname="localhost",
            )
        )
        stalled = await asyncio.to_thread(server.stalled.wait, CLOSE_WAIT_S)
        assert stalled, "the server never reached its stall"
        # One cancellation, as from asyncio.wait_for(): the call must not wait for the
        # TLS close after it.
        task.cancel()
        await asyncio.wait([task], timeout=CLOSE_WAIT_S)
        await asyncio.to_thread(server.closed_by_client.wait, CLOSE_WAIT_S)
        return task

    task = asyncio.run(scenario())
    assert task.cancelled()
    assert server.closed_by_client.is_set()
    assert len(server.sent(b"QUIT")) == 1


def test_memory_error_while_reading_closes_connection(script):
    def stall(script, conn):
        script.read(conn)
        script.stalled.set()
        script.read(conn)

    server = script(stall)

    async def scenario():
        smtp = smtp_for(server)
        await smtp.connect()

        def no_memory(size):
            raise MemoryError()

        smtp._reader.read = no_memory
        with pytest.raises(OutOfMemory) as raised:
            await smtp.send_message(message())
        await asyncio.to_thread(server.closed_by_client.wait, CLOSE_WAIT_S)
        return raised.value

    error = asyncio.run(scenario())
    assert error.transient
    assert error.stage == "mail"
    assert server.closed_by_client.is_set()


def test_plaintext_after_tls_handshake_refused(script, certs):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    certs.server_cert.configure_cert(context)

    def garbage_instead_of_tls(script, conn):
        script.read(conn)
        conn.send(b"220 go ahead\r\n")
        conn.sock.recv(4096)
        conn.send(b"250 this is not TLS\r\n" * 4)

    server = script(garbage_instead_of_tls, ehlo=b"250-mx.example\r\n250 STARTTLS\r\n")

    async def scenario():
        with pytest.raises(SMTPError) as raised:
            await send(
                message(),
                server.server.host,
                port=server.server.port,
                ca_roots=[certs.ca_der],
                server_hostname="localhost",
                timeout_ms=3000,
            )
        return raised.value

    error = asyncio.run(scenario())
    assert isinstance(error, SecurityError)
    assert error.stage == "tls"
    assert server.sent(b"MAIL") == []


# -- MicroPython socket modules and CPython builds -----------------------------------------


class RecordingSocket:
    """The stream socket of a MicroPython port: records each setsockopt() call."""

    def __init__(self):
        self.options = []

    def setsockopt(self, level, option, value):
        self.options.append((level, option, value))


# Socket constants of MicroPython ports (ports/esp32/modsocket.c, extmod/modlwip.c and
# ports/unix/modsocket.c), and the setsockopt() calls expected on each. ESP32 and rp2
# define no TCP_NODELAY in 1.22, and their setsockopt() then prints a warning for an
# option it does not know. From 1.23 rp2 defines it as lwIP's TF_NODELAY (0x40) and
# ESP32 as 1. The unix port defines neither TCP_NODELAY nor IPPROTO_TCP.
SOCKET_MODULES = {
    "esp32 1.22": ({"SOL_SOCKET": 0xFFF, "SO_REUSEADDR": 4, "IPPROTO_TCP": 6}, []),
    "rp2 1.22": ({"SOL_SOCKET": 1, "SO_REUSEADDR": 4, "IPPROTO_IP": 0}, []),
    "rp2 1.23": ({"SOL_SOCKET": 1, "SO_REUSEADDR": 4, "IPPROTO_IP": 0, "TCP_NODELAY": 0x40}, [(6, 0x40, 1)]),
    "esp32 1.23": ({"SOL_SOCKET": 0xFFF, "IPPROTO_TCP": 6, "TCP_NODELAY": 1}, [(6, 1, 1)]),
    "unix": ({"SOL_SOCKET": 1, "SO_REUSEADDR": 2, "AF_UNIX": 1}, [(6, 1, 1)]),
}


@pytest.mark.parametrize("port", sorted(SOCKET_MODULES))
def test_nodelay_set_only_where_defined(monkeypatch, port):
    constants, expected = SOCKET_MODULES[port]
    socket_module = types.ModuleType("socket")
    socket_module.__dict__.update(constants)
    stream = types.SimpleNamespace(s=RecordingSocket())

    async def open_connection(host, port, context=None, server_hostname=None):
        return stream, stream

    async def scenario():
        smtp = SMTP("127.0.0.1", port=25, security="none")
        smtp._start_deadline(smtp.timeout_ms)
        monkeypatch.setattr(client, "MICROPYTHON", True)
        monkeypatch.setattr(client, "_open_micropython", open_connection)
        # Only for the connection setup, so that the event loop keeps the real module.
        monkeypatch.setitem(sys.modules, "socket", socket_module)
        try:
            await smtp._open(None)
        finally:
            monkeypatch.undo()

    asyncio.run(scenario())
    assert stream.s.options == expected


def test_plaintext_send_without_ssl_module(script, tmp_path):
    # A CPython built without the ssl module can still send over plaintext.
    server = script(serve_normally)
    program = tmp_path / "send_without_ssl.py"
    program.write_text(
        "import asyncio, sys\n"
        "sys.modules['ssl'] = None\n"
        "from microsmtp import Message, send\n"
        "message = Message('board@example.com', 'ops@example.com', 'alert', 'body')\n"
        "result = asyncio.run(send(message, %r, port=%d, security='none', timeout_ms=10000))\n"
        "print(result.reply.code)\n" % (server.server.host, server.server.port)
    )
    env = dict(os.environ, PYTHONPATH=str(unix_port.FIRMWARE_DIR))

    process = subprocess.run([sys.executable, str(program)], env=env, capture_output=True, text=True, timeout=60)

    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == "250"
    assert len(server.sent(b"MAIL")) == 1


# -- misuse of the API, and cancellation at the edges ---------------------------------------


def test_cancel_as_connection_opens_closes_it(script, monkeypatch):
    server = script(lambda script, conn: None)
    real_open = client.open_stream
    opened = []

    async def scenario():
        tasks = []

        async def opening(*args):
            pair = await real_open(*args)
            opened.append(pair[1])
            # The cancel arrives as the connection is made, before the driver stores it.
            tasks[0].cancel()
            return pair

        monkeypatch.setattr(client, "open_stream", opening)
        smtp = smtp_for(server)
        tasks.append(asyncio.ensure_future(smtp.connect()))
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]

    asyncio.run(scenario())
    assert opened[0].is_closing()


def test_spent_deadline_closes_awaitable():
    async def scenario():
        smtp = SMTP("127.0.0.1", security="none")
        smtp._start_deadline(1)
        smtp._deadline_start -= 10
        waiting = asyncio.sleep(0)
        with pytest.raises(Timeout):
            await smtp._with_limit(waiting, 1000, "mail", "sending")
        return waiting

    waiting = asyncio.run(scenario())
    # A closed coroutine has no frame, and never warns that it was not awaited.
    assert waiting.cr_frame is None


def test_second_task_on_one_connection_refused(script):
    server = script(serve_normally)

    async def scenario():
        smtp = smtp_for(server)
        await smtp.connect()
        first = asyncio.ensure_future(smtp.send_message(message(1)))
        await asyncio.sleep(0)
        with pytest.raises(InvalidInputError) as refused:
            await smtp.send_message(message(2))
        result = await first
        await smtp.send_message(message(3))
        await smtp.quit()
        return refused.value, result

    error, result = asyncio.run(scenario())
    assert "in use by another task" in str(error)
    assert result.ok
    assert len(server.sent(b"MAIL")) == 2


def test_object_that_is_no_message_is_invalid_input(script):
    from email.message import EmailMessage

    server = script(serve_normally)
    email = EmailMessage()
    email["Subject"] = "x"

    async def scenario():
        smtp = smtp_for(server)
        await smtp.connect()
        errors = []
        for wrong in (None, b"Subject: x\r\n\r\nhi\r\n", email):
            with pytest.raises(InvalidInputError) as raised:
                await smtp.send_message(wrong)
            errors.append(raised.value)
        transactions = await smtp.send_messages([message(1), email, message(2)])
        await smtp.quit()
        return errors, transactions

    errors, transactions = asyncio.run(scenario())
    assert "expected a microsmtp.Message, not EmailMessage" in str(errors[2])
    assert [transaction.ok for transaction in transactions] == [True, False, True]
    assert isinstance(transactions[1].error, InvalidInputError)
    assert len(server.sent(b"MAIL")) == 2


def test_silent_greeting_suggests_implicit_tls():
    server = RawServer(lambda conn: conn.stall(10))
    try:
        with pytest.raises(Timeout) as raised:
            asyncio.run(send(message(), server.host, port=server.port, security="none", reply_timeout_ms=300))
    finally:
        server.stop()
    assert raised.value.stage == "greeting"
    assert "the port expects implicit TLS (465): then set security 'tls'" in str(raised.value)


def test_implicit_tls_to_plaintext_port_suggests_starttls(script, certs):
    server = script(serve_normally)

    with pytest.raises(SecurityError) as raised:
        asyncio.run(
            send(message(), server.server.host, port=server.server.port, security="tls", ca_roots=[certs.ca_der])
        )
    assert raised.value.stage == "tls"
    assert "set security 'starttls'" in str(raised.value)


def test_recipients_refused_survives_pickle():
    import copy
    import pickle

    from microsmtp.errors import RecipientsRefused
    from microsmtp.reply import Reply

    refused = {"a@x.org": Reply(450, ["busy"], "4.2.1"), "b@x.org": Reply(550, ["no such user"], "5.1.1")}
    error = RecipientsRefused("every recipient was refused", refused, order=("a@x.org", "b@x.org"))

    for copied in (pickle.loads(pickle.dumps(error)), copy.deepcopy(error)):
        assert type(copied) is RecipientsRefused
        assert str(copied) == str(error)
        assert copied.code == 550
        assert copied.transient is False
        assert sorted(copied.refused) == ["a@x.org", "b@x.org"]
