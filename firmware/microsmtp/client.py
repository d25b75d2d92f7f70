"""asyncio driver for the sans-IO session: sockets, TLS and time limits.

The same code runs on CPython and on MicroPython. The driver moves bytes between the
connection and ``Session`` and enforces time limits; every protocol decision is the
session's. Only TLS setup differs between the runtimes:

* CPython: ``open_connection(ssl=...)`` for implicit TLS and ``StreamWriter.start_tls()``
  for STARTTLS.
* MicroPython: the stream's socket (``stream.s``) is wrapped with
  ``SSLContext.wrap_socket(..., do_handshake_on_connect=False)`` and put back; the next
  read or write drives the handshake, so the handshake obeys the same time limits as
  any other step. For implicit TLS, where the server speaks first, one non-blocking
  read on the wrapped socket starts the handshake, because waiting for the socket to
  become readable would wait forever.

CPython-only code lives in ``cpython.py``, which MicroPython never imports, so that a
board does not load code it cannot run.

Time limits: every connect, write and reply wait is bounded by its own limit
(``connect_timeout_ms``, ``reply_timeout_ms``) and by the deadline of the whole
operation (``timeout_ms``). DNS resolution on MicroPython is a blocking call that no
asyncio timeout can interrupt.
"""

import gc
import sys
import time

try:
    import asyncio
except ImportError:  # MicroPython before asyncio was renamed
    import uasyncio as asyncio

from . import session as _session
from .errors import (
    ClockNotSetError,
    ConfigError,
    ConnectionLost,
    InvalidInputError,
    SecurityError,
    SMTPError,
    Timeout,
    free_heap,
    out_of_memory,
)
from .transaction import Transaction

try:
    from micropython import const
except ImportError:
    # Every const() here wraps an int; int() returns it unchanged, and unlike a def it
    # adds no function to the module that MicroPython loads.
    const = int

MICROPYTHON = sys.implementation.name == "micropython"

if MICROPYTHON:
    # Free the garbage that loading the session modules left, so that the objects of
    # this module fill those holes and the heap stays less fragmented.
    gc.collect()
    _now_ms = time.ticks_ms
    _ticks_diff = time.ticks_diff
else:
    from .cpython import now_ms as _now_ms
    from .cpython import ticks_diff as _ticks_diff


DEFAULT_PORTS = {_session.STARTTLS: 587, _session.TLS: 465, _session.PLAINTEXT: 25}

# Certificates are checked against the clock. A clock before this year means it was
# never set (boards start in 2000 or 2021), and every verification would fail.
MIN_CLOCK_YEAR = 2025

# A stream read allocates a buffer of this size before it trims it to the bytes that
# arrived, so a small size needs less contiguous heap. 256 instead of 1024 lowered the
# heap that one STARTTLS alert needs by about 2.5 KB (unix port, x64). A multi-line
# EHLO reply still takes only a few reads.
_READ_SIZE = const(256)
# Writes shorter than this are joined with the next ones of the same group.
_WRITE_SIZE = const(512)
# Maximum time, in ms, to wait for the server's side of the end of a session: the
# reply to QUIT, and on CPython the TLS close_notify in close(). That wait is capped by
# what is left of the operation's timeout_ms. MicroPython closes without waiting.
_CLOSE_WAIT_MS = const(2000)
# The drop in free GC heap across wrap_socket() above which mbedTLS is taken to allocate
# from the GC heap. That happens on the Pico W, where its record buffers take about 22 KB.
_TLS_ON_HEAP = const(16384)
# Below this much heap left after those buffers, a failed certificate check counts as a
# shortage of memory, because mbedTLS reports a failed allocation during the signature
# check as an untrusted certificate. A chain of RSA-2048 keys failed this way with up to
# 21,248 bytes left (32-bit unix port with mbedTLS on the GC heap, code as .mpy files).
# NOTE: a 4096-bit RSA root (ISRG Root X1) needs more. That was not measured.
_CERT_CHECK_HEAP = const(24576)


def clock_is_set():
    return time.gmtime()[0] >= MIN_CLOCK_YEAR


def make_ssl_context(ca_roots=None):
    """Create a client SSLContext that verifies the certificate chain and the hostname.

    ``ca_roots`` is a list of DER certificates (or PEM text). Without it CPython uses the
    system's trusted roots; MicroPython has no such store, so roots are required there.
    """
    roots = None
    if ca_roots is not None:
        if isinstance(ca_roots, (bytes, bytearray, str)):
            ca_roots = [ca_roots]
        roots = []
        for root in ca_roots:
            if not isinstance(root, (bytes, bytearray, str)):
                raise ConfigError(
                    "ca_roots must contain DER bytes or PEM text, not %s; read a CA file first" % type(root).__name__
                )
            if isinstance(root, str) or b"-----BEGIN CERTIFICATE-----" in root:
                from .encoding import pem_to_der

                roots.extend(pem_to_der(root))
            else:
                roots.append(bytes(root))
        if not roots:
            raise ConfigError("ca_roots contains no certificate; pass DER bytes or PEM text of the server's root CA")
    if not MICROPYTHON:
        from .cpython import make_ssl_context

        return make_ssl_context(roots)
    if not roots:
        raise ConfigError("no CA roots given; MicroPython has no system store, so pass ca_roots (DER bytes)")
    try:
        # MicroPython 1.23 and later: the C module that ssl.py wraps. Leaving the wrapper
        # unloaded saves 1,024 bytes of heap during the send (unix port, x64).
        import tls
    except ImportError:
        import ssl as tls

    context = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    # MicroPython's ssl module defaults to CERT_NONE: without this line any certificate
    # would pass there.
    context.verify_mode = tls.CERT_REQUIRED
    for index, der in enumerate(roots):
        try:
            if tls.__name__ == "tls":
                # Its context takes the certificate as the only positional argument.
                context.load_verify_locations(der)
            else:
                context.load_verify_locations(cadata=der)
        except ValueError as exc:
            # mbedTLS also raises "invalid cert" when it runs out of memory while parsing.
            raise ConfigError(
                "CA root %d of %d was rejected (%s%s); check ca_roots" % (index + 1, len(roots), exc, free_heap()),
                stage="connect",
            ) from None
    return context


def open_stream(host, port, context=None, server_hostname=None):
    """Return an awaitable that opens a connection, over TLS with context, and gives (reader, writer).

    On MicroPython the TLS handshake runs at the first read or write.
    """
    if MICROPYTHON:
        return _open_micropython(host, port, context, server_hostname)
    return asyncio.open_connection(host, port, ssl=context, server_hostname=server_hostname)


def _open_micropython(host, port, context=None, server_hostname=None):
    """Connect as MicroPython's asyncio.open_connection() does, closing the socket if the wait ends early.

    That function keeps its socket to itself, so a connect that timed out left the
    socket open, and a board has only a few. This is a generator because it yields to
    MicroPython's I/O queue, as that function does.
    """
    import socket
    from errno import EINPROGRESS

    # The DNS lookup blocks; no timeout can interrupt it.
    address = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    plain = sock = socket.socket(address[0], address[1], address[2])
    try:
        sock.setblocking(False)
        try:
            sock.connect(address[-1])
        except OSError as exc:
            if exc.errno != EINPROGRESS:
                raise
        if context is not None:
            tls = context.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=False)
            tls.setblocking(False)
            sock = tls
        # Writable once connected or failed; a failure shows at the first read or write.
        yield asyncio.core._io_queue.queue_write(sock)
    except BaseException:
        # A timeout or a cancellation arrives here as CancelledError.
        sock.close()
        plain.close()
        raise
    stream = _Stream(sock, plain)
    return stream, stream


class _Stream:
    """A MicroPython socket stream with the methods of asyncio's stream that the driver and the OAuth2 client call.

    Loading asyncio's stream module takes 1,888 bytes of heap during the send, and this
    class adds 832 bytes to the heap that importing the library takes (unix port, x64,
    measured with gc.mem_alloc()). Its methods wait on asyncio's I/O queue as those of
    that module do. They are generators, which MicroPython awaits like coroutines.
    """

    def __init__(self, sock, plain):
        self.s = sock
        # When its handshake fails, MicroPython's TLS socket drops its reference to the
        # plain socket, and its close() then leaves that one open. So both are closed.
        self._plain = plain
        self._out = b""

    def write(self, data):
        # drain() sends it, so data must stay unchanged until drain() has returned.
        self._out = bytes(self._out) + bytes(data) if self._out else data

    def drain(self):
        data = memoryview(self._out)
        self._out = b""
        while data:
            yield asyncio.core._io_queue.queue_write(self.s)
            sent = self.s.write(data)
            if sent:
                data = data[sent:]

    def read(self, size):
        while True:
            yield asyncio.core._io_queue.queue_read(self.s)
            data = self.s.read(size)
            # None: nothing to read yet, or the TLS handshake needs another round.
            if data is not None:
                return data

    def close(self):
        pass

    async def wait_closed(self):
        self.s.close()
        self._plain.close()


class SMTP:
    """One SMTP connection that can send several messages.

    Use ``await smtp.connect()``, ``await smtp.send_message(msg)`` as often as needed,
    then ``await smtp.quit()``; or ``async with SMTP(...) as smtp:``. Options are those
    of ``send()``.
    """

    def __init__(
        self,
        host,
        port=None,
        security=_session.STARTTLS,
        username=None,
        password=None,
        oauth2_token=None,
        ca_roots=None,
        server_hostname=None,
        local_hostname=None,
        timeout_ms=60000,
        connect_timeout_ms=15000,
        reply_timeout_ms=30000,
        log=None,
        ssl_context=None,
    ):
        if security not in _session.SECURITY_MODES:
            raise ConfigError(
                "security must be one of %s, not %s" % (", ".join(_session.SECURITY_MODES), repr(security))
            )
        if not host or not isinstance(host, str):
            raise ConfigError("host must be the SMTP server's name or address, not %r" % (host,))
        if host[0] == "[" and host[-1] == "]":
            # An IPv6 address literal as written in a URL.
            host = host[1:-1]
        tls_name = server_hostname or host
        for value in (host, tls_name):
            # "." in front also catches a lone "." and a leading dot. A value is empty
            # only when the host was "[]": an empty server_hostname means the host's name.
            # Blanks and control characters (all at or below " ") would reach SNI.
            if not value or not isinstance(value, str) or ".." in "." + value or min(value) <= " ":
                raise ConfigError(
                    "host and server_hostname must be names without an empty label, blanks or control "
                    "characters, not %r" % (value,)
                )
        if tls_name[-1] == ".":
            # A fully qualified name as DNS writes it: SNI and the certificate's names
            # have no trailing dot (RFC 6066 section 3). TCP connects to the host as given.
            tls_name = tls_name[:-1]
        if port is not None:
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < int(port) < 65536:
                raise ConfigError("port must be a number from 1 to 65535, not %r" % (port,))
            port = int(port)
        for name, value in (
            ("timeout_ms", timeout_ms),
            ("connect_timeout_ms", connect_timeout_ms),
            ("reply_timeout_ms", reply_timeout_ms),
        ):
            # A NaN fails both comparisons. MicroPython's tick arithmetic wraps after 2**29 ms.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 536870912:
                raise ConfigError(
                    "%s must be a number of milliseconds above 0 and at most 536870912 (6.2 days), not %r"
                    % (name, value)
                )
        if ssl_context is not None:
            if ca_roots is not None or security == _session.PLAINTEXT or not hasattr(ssl_context, "wrap_socket"):
                raise ConfigError(
                    "ssl_context must be an SSLContext, given without ca_roots and with security 'starttls' or 'tls'"
                )
        elif ca_roots is not None and not isinstance(ca_roots, (bytes, bytearray, str, list, tuple)):
            raise ConfigError(
                "ca_roots must be certificates (DER bytes or PEM text) or a list of them, not %s; "
                "read a CA file first" % type(ca_roots).__name__
            )
        self.host = host
        self.port = port or DEFAULT_PORTS[security]
        self.security = security
        self.server_hostname = tls_name
        self.local_hostname = local_hostname
        self.timeout_ms = timeout_ms
        self.connect_timeout_ms = connect_timeout_ms
        self.reply_timeout_ms = reply_timeout_ms
        self._credentials = (username, password, oauth2_token)
        self._log = log
        self._ca_roots = ca_roots
        self._ssl_context = ssl_context
        self._reader = None
        self._writer = None
        self._deadline_start = 0
        self._deadline_ms = 0
        self._handshaking = False
        self._early = None
        self._heap_after_wrap = None
        # Made here, on a heap that the caller has usually just collected.
        self._write_buffer = bytearray(_WRITE_SIZE)
        self._received_any = False
        self._deadline_locked = False
        # True while a call runs, because the connection carries one dialogue at a time.
        self._busy = False
        self.session = None

    # -- public API ------------------------------------------------------------------

    async def connect(self):
        """Connect, secure the connection, say EHLO and authenticate."""
        self._claim()
        try:
            await self._connect()
        except MemoryError as exc:
            await self.close()
            stage = "connect" if self.session is None else self.session.stage
            raise out_of_memory(stage, exc) from None
        finally:
            self._busy = False

    def _claim(self):
        if self._busy:
            raise InvalidInputError(
                "this SMTP object is in use by another task; await that call first, or give each task "
                "an SMTP object of its own"
            )
        self._busy = True

    async def _connect(self):
        # A second connect() replaces the first connection, which must not leak.
        await self.close()
        self.session = None
        self._received_any = False
        self._start_deadline(self.timeout_ms)
        context = None
        if self.security != _session.PLAINTEXT:
            if not clock_is_set():
                raise ClockNotSetError(
                    "clock not set (year %d): certificates cannot be checked; set the time (NTP) before sending"
                    % time.gmtime()[0],
                    stage="connect",
                )
            context = self._ssl_context or make_ssl_context(self._ca_roots)
        self._context = context

        await self._open(context)
        username, password, token = self._credentials
        local_name = self.local_hostname
        if not local_name:
            # MicroPython streams do not report the local address for an address literal.
            local_name = "localhost"
            if not MICROPYTHON:
                from .cpython import local_name_of

                local_name = local_name_of(self._writer)
        try:
            self.session = _session.Session(
                local_name,
                self.security,
                username,
                password,
                token,
                self._log,
            )
        except BaseException:
            await self.close()
            raise
        if self._early:
            self.session.receive_data(self._early)
            self._early = None
        await self._run()

    async def send_message(self, message):
        """Send a Message; return its Transaction (per-recipient and final replies).

        Raises the SMTPError that stopped the message, such as RecipientsRefused when
        no recipient was accepted.
        """
        self._claim()
        try:
            self._check_connected()
            self._start_deadline(self.timeout_ms)
            transaction = await self._queue(self._queue_message, message)
            await self._run()
        finally:
            self._busy = False
        return _outcome(transaction)

    async def send_messages(self, messages):
        """Send several Messages, pipelined where the server allows; return their Transactions.

        Failures do not raise: each Transaction has ``error`` set (an SMTPError) or
        ``reply`` (the final 250). A failure of the connection sets ``error`` on every
        message not yet accepted, which can then be tried again on a new connection.
        """
        self._claim()
        try:
            self._check_connected()
            self._start_deadline(self.timeout_ms)
            transactions = []
            failure = None
            for message in messages:
                if failure is not None:
                    # The connection is gone: the rest get its error without being encoded.
                    transactions.append(_failed_transaction(message, failure))
                    continue
                try:
                    transactions.append(await self._queue(self._queue_message, message))
                except InvalidInputError as exc:
                    # This message cannot be sent as it is; the others go on.
                    transactions.append(_failed_transaction(message, exc))
                except SMTPError as exc:
                    # The connection failed while the messages were being queued; the
                    # session gave the error to those already queued.
                    transactions.append(_failed_transaction(message, exc))
                    if not self.session.usable:
                        failure = exc
            try:
                await self._run()
            except SMTPError:
                pass
        finally:
            self._busy = False
        return transactions

    async def send_raw(self, sender, recipients, content, size=None, smtputf8=False):
        """Send content (bytes, a list of bytes chunks, or an object with chunks()) as one message."""
        self._claim()
        try:
            self._check_connected()
            self._start_deadline(self.timeout_ms)
            transaction = await self._queue(self.session.mail, sender, recipients, content, size, smtputf8)
            await self._run()
        finally:
            self._busy = False
        return _outcome(transaction)

    async def _queue(self, queue, *args):
        """Call a queueing function; close the connection if it found the session dead."""
        try:
            return queue(*args)
        except SMTPError:
            if not self.session.usable:
                await self.close()
            raise
        except BaseException as exc:
            # The messages queued before it must never go out. A MemoryError becomes
            # OutOfMemory, and another failure (a broken message object) is raised as it is.
            await self._end_session(exc, "queueing a message failed unexpectedly")

    def _check_connected(self):
        if self.session is None or self._writer is None or not self.session.usable:
            raise ConnectionLost("not connected; call connect() first", stage="mail")

    def _queue_message(self, message):
        if not hasattr(message, "chunks") or not hasattr(message, "recipients"):
            raise InvalidInputError(
                "expected a microsmtp.Message, not %s; build one, or pass bytes to send_raw()" % type(message).__name__
            )
        # The size is announced only to servers that have a SIZE limit; measuring it
        # costs one pass over the encoded message, but no memory.
        size = None
        if "SIZE" in self.session.extensions:
            size = 0
            for chunk in message.chunks():
                size += len(chunk)
        transaction = self.session.mail(
            message.sender_address, message.recipients, message, size, message.needs_smtputf8
        )
        transaction.message_id = message.message_id
        return transaction

    async def quit(self):
        """Send QUIT and close the connection; errors while quitting are ignored."""
        self._claim()
        try:
            if self.session is not None and self._writer is not None:
                self._start_deadline(self.reply_timeout_ms)
                try:
                    self.session.quit()
                    await self._run()
                except (SMTPError, MemoryError):
                    pass
            await self.close()
        finally:
            self._busy = False

    async def close(self):
        """Close the connection without QUIT, waiting no longer than timeout_ms has left."""
        writer = self._writer
        self._writer = None
        self._reader = None
        if writer is None:
            return
        closed = False
        try:
            writer.close()
            if MICROPYTHON:
                # MicroPython's close() does nothing (MicroPython 1.22 and 1.29), and
                # wait_closed() closes the socket at once, without waiting for the peer.
                await writer.wait_closed()
                closed = True
            else:
                from .cpython import cancelling

                wait_ms = min(_CLOSE_WAIT_MS, self._deadline_ms - _ticks_diff(_now_ms(), self._deadline_start))
                # An unfinished TLS handshake has no close_notify to wait for, and the
                # stream never learns of that close. A cancelled caller does not wait.
                if wait_ms > 0 and not self._handshaking and not cancelling():
                    await asyncio.wait_for(writer.wait_closed(), wait_ms / 1000)
                    closed = True
        except Exception:
            # Closing a broken connection can raise OSError, a TLS error or a timeout
            # (CPython waits for the TLS close_notify); the connection is gone either way.
            pass
        finally:
            if not closed and not MICROPYTHON:
                # A peer that stopped responding would keep the socket open in the
                # background, also after a cancellation during the wait.
                from .cpython import abort

                abort(writer)

    async def __aenter__(self):
        await self.connect()
        return self

    async def __aexit__(self, exc_type, exc, tb):
        if exc_type is None:
            await self.quit()
        else:
            await self.close()

    # -- event loop of the session -----------------------------------------------------

    async def _run(self):
        session = self.session
        # Commands of one pipelined group, and small pieces of content, go out in one
        # write: one TLS record and one TCP segment instead of one per command. With
        # Nagle's algorithm on (lwIP's default), a second small segment would wait
        # for the ACK of the first, and the server's reply could arrive in between.
        # They are gathered in a buffer made with the SMTP object. Joining them would
        # take a new block of the heap for every piece, which a fragmented heap on a
        # board may fail to find while the message is sent.
        buffer = self._write_buffer
        pending = 0
        try:
            while True:
                event = session.next_event()
                if event == _session.SEND:
                    data = session.data_to_send()
                    size = len(data)
                    if size >= _WRITE_SIZE:
                        if pending:
                            await self._transfer(memoryview(buffer)[:pending])
                            pending = 0
                        await self._transfer(data)
                        continue
                    # A piece that does not fit fills the buffer, which goes out whole, and
                    # the rest starts the next write. So base64 pieces of 312 bytes go out
                    # in writes of 512 bytes.
                    start = 0
                    if pending + size > _WRITE_SIZE:
                        start = _WRITE_SIZE - pending
                        buffer[pending:] = memoryview(data)[:start]
                        await self._transfer(buffer)
                        pending = 0
                    buffer[pending : pending + size - start] = memoryview(data)[start:]
                    pending += size - start
                    continue
                if pending:
                    await self._transfer(memoryview(buffer)[:pending])
                    pending = 0
                if event == _session.NEED_DATA:
                    session.receive_data(await self._transfer())
                elif event == _session.START_TLS:
                    self._handshaking = True
                    if MICROPYTHON:
                        await self._wrap_micropython(False)
                    else:
                        from .cpython import start_tls

                        await start_tls(self)
                    session.tls_started()
                elif event == _session.IDLE:
                    return
                else:
                    await self.close()
                    return
        except SMTPError as exc:
            # Errors from next_event() end the session already; a timeout or a lost
            # connection met here must end it too, so that no message is left pending.
            session.abort(exc)
            await self.close()
            raise
        except BaseException as exc:
            # Cancellation, a lack of memory or an unexpected failure: the dialogue is
            # in an unknown state, so the connection must not be reused.
            await self._end_session(exc, "the operation was cancelled or failed unexpectedly")

    async def _end_session(self, exc, message):
        """End the session and close the connection after exc, which is no SMTPError, then raise.

        After a MemoryError the unfinished transactions get a transient OutOfMemory,
        which is raised in its place. After any other exception they get a
        ConnectionLost with ``message``, and exc is raised again.
        """
        session = self.session
        if isinstance(exc, MemoryError):
            # Queueing runs before any command of the message: name its first one.
            error = out_of_memory("mail" if session.stage == "ready" else session.stage, exc)
            session.abort(error)
            await self.close()
            raise error from None
        session.abort(ConnectionLost(message, stage=session.stage))
        await self.close()
        raise exc

    # -- I/O with time limits -----------------------------------------------------------

    def _start_deadline(self, timeout_ms):
        if self._deadline_locked:
            return
        self._deadline_start = _now_ms()
        self._deadline_ms = timeout_ms

    async def _with_limit(self, awaitable, stage_ms, stage, what):
        remaining = self._deadline_ms - _ticks_diff(_now_ms(), self._deadline_start)
        if remaining <= 0:
            # The awaitable never runs: closed, it leaves no coroutine that was never awaited.
            if hasattr(awaitable, "close"):
                awaitable.close()
            raise Timeout(
                "the operation did not finish within timeout_ms=%d (during %s)" % (self._deadline_ms, stage),
                stage=stage,
            )
        limit_s = min(stage_ms, remaining) / 1000
        try:
            result = await asyncio.wait_for(awaitable, limit_s)
        except asyncio.TimeoutError:
            if limit_s * 1000 < stage_ms:
                cause = "the operation's timeout_ms=%d ran out" % self._deadline_ms
            else:
                cause = "no progress within %d ms" % stage_ms
            advice = "the server or network is too slow or down"
            if stage == "greeting" and not self._received_any and self.security != _session.TLS:
                # A server that expects implicit TLS waits for the ClientHello and sends nothing.
                advice += ", or the port expects implicit TLS (465): then set security 'tls'"
            raise Timeout("%s timed out during %s (%s); %s" % (what, stage, cause, advice), stage=stage) from None
        if not MICROPYTHON:
            from .cpython import raise_if_cancelled

            raise_if_cancelled(result)
        return result

    async def _transfer(self, data=None):
        """Write data, or read when data is None and return what arrived (b"" at EOF)."""
        # Until the first read through TLS succeeds, a failure belongs to the handshake.
        stage = "tls" if self._handshaking else self.session.stage
        try:
            if data is not None:
                if not MICROPYTHON:
                    # CPython's transport may keep what it could not send yet without a
                    # copy, and the write buffer is used again.
                    data = bytes(data)
                self._writer.write(data)
                await self._with_limit(self._writer.drain(), self.reply_timeout_ms, stage, "sending")
                return None
            # Once only QUIT is unanswered, every message of the session has its reply,
            # and a 221 that is late changes nothing worth waiting reply_timeout_ms for.
            limit = min(self.reply_timeout_ms, _CLOSE_WAIT_MS) if stage == "quit" else self.reply_timeout_ms
            data = await self._with_limit(self._reader.read(_READ_SIZE), limit, stage, "waiting for a reply")
        except (OSError, ValueError, MemoryError) as exc:
            await self.close()
            raise self._transport_error(exc, stage) from None
        self._handshaking = False
        self._received_any = True
        return data or b""

    def _transport_error(self, exc, stage):
        """Turn a socket or TLS exception into the matching SMTPError."""
        # mbedTLS messages span several lines; one line reads better in logs.
        detail = "%s: %s" % (type(exc).__name__, " ".join(str(exc).split()))
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        if self._handshaking:
            stage = "tls"
        if lacks_memory(exc):
            return out_of_memory(stage, detail)
        if self._handshaking:
            # Certificate failures raise ValueError on both runtimes (CPython's
            # SSLCertVerificationError is a ValueError too).
            if isinstance(exc, ValueError):
                heap = self._heap_after_wrap
                if heap and cert_check_lacked_heap(exc, *heap):
                    # Retried like any shortage of memory. A wrong CA on a board this
                    # short of heap is retried too, so the message names both causes.
                    return out_of_memory(
                        "tls",
                        "%s; %d bytes were left for the certificate check (or ca_roots lack the server's root)"
                        % (detail, heap[1]),
                    )
                # NOTE: with mbedTLS on a separate heap (ESP32), an allocation failure
                # while it checks a signature still ends here as a permanent error. The
                # free heap in the message helps to tell them apart.
                return SecurityError(
                    "TLS certificate verification failed for %s (%s%s); check ca_roots and server_hostname"
                    % (self.server_hostname, detail, free_heap()),
                    stage="tls",
                )
            if MICROPYTHON:
                # mbedTLS errors arrive as OSError with a negative error number. Those
                # that mean the peer closed or the network failed are connection losses:
                # SSL_CONN_EOF, SSL_PEER_CLOSE_NOTIFY, NET_CONN_RESET, NET_RECV_FAILED
                # and NET_SEND_FAILED (mbedtls/ssl.h, mbedtls/net_sockets.h).
                tls_error = code < 0 and code not in (-0x7280, -0x7880, -0x0050, -0x004C, -0x004E)
            else:
                import ssl

                tls_error = isinstance(exc, ssl.SSLError)
            if tls_error:
                advice = ""
                if self.security == _session.TLS:
                    advice = "; if the port expects STARTTLS (587 or 25), set security 'starttls'"
                return SecurityError(
                    "TLS handshake with %s failed (%s)%s" % (self.server_hostname, detail, advice), stage="tls"
                )
        if stage in ("greeting", "tls") and not self._received_any and not isinstance(exc, ValueError):
            # MicroPython reports a refused connection only at the first read, and with
            # implicit TLS that read is part of the handshake.
            stage = "connect"
        return ConnectionLost(
            "connection to %s:%d failed during %s (%s)" % (self.host, self.port, stage, detail), stage=stage
        )

    # -- connection setup ---------------------------------------------------------------

    async def _open(self, context):
        implicit = self.security == _session.TLS
        stage = "connect"
        self._handshaking = implicit
        try:
            if implicit and not MICROPYTHON:
                opening = open_stream(self.host, self.port, context, self.server_hostname)
            else:
                # MicroPython's socket is wrapped later, so that the heap taken by mbedTLS
                # can be measured.
                opening = open_stream(self.host, self.port)
            self._reader, self._writer = await self._with_limit(
                opening, self.connect_timeout_ms, stage, "connecting to %s:%d" % (self.host, self.port)
            )
        except (OSError, ValueError, MemoryError) as exc:
            raise self._transport_error(exc, stage) from None
        if not MICROPYTHON:
            # CPython finished the handshake inside open_connection().
            self._handshaking = False
        if MICROPYTHON:
            # CPython's asyncio sets TCP_NODELAY itself. ESP32 and rp2 define the constant
            # from MicroPython 1.23 on, and in 1.22 their setsockopt() prints a warning
            # for an option it does not know, so it is set only where defined. The unix
            # port, the only one with AF_UNIX, defines no constant but passes options on
            # to the OS, so Linux's values (6 and 1) are used there.
            import socket

            option = getattr(socket, "TCP_NODELAY", None)
            if option is None and hasattr(socket, "AF_UNIX"):
                option = 1
            if option is not None:
                try:
                    self._writer.s.setsockopt(getattr(socket, "IPPROTO_TCP", 6), option, 1)
                except (OSError, AttributeError):
                    pass
            if implicit:
                await self._wrap_micropython(start=True)

    async def _wrap_micropython(self, start):
        stream = self._writer
        # mbedTLS allocates its record buffers here (17 KB in one block on the Pico W),
        # so the garbage of the dialogue so far is freed first.
        gc.collect()
        try:
            free = gc.mem_free()
            stream.s = self._context.wrap_socket(
                stream.s, server_hostname=self.server_hostname, do_handshake_on_connect=False
            )
            left = gc.mem_free()
            # Kept only where mbedTLS took its buffers from the GC heap (see cert_check_lacked_heap).
            self._heap_after_wrap = (free, left) if free - left > _TLS_ON_HEAP else None
            if start:
                # The server waits for our ClientHello before it sends anything, so a
                # first non-blocking read starts the handshake. It returns None while
                # the handshake runs; any bytes it returns belong to the greeting.
                early = stream.s.read(_READ_SIZE)
                if early:
                    self._early = early
        except (OSError, ValueError, MemoryError) as exc:
            await self.close()
            raise self._transport_error(exc, "tls") from None


def lacks_memory(exc):
    """Return True when a socket or TLS exception means that the heap ran out."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    # ENOMEM, and the ALLOC_FAILED codes of mbedTLS's SSL, X509, PK, ECP, cipher and MD
    # modules (mbedtls/*.h), which MicroPython raises as OSErrors with a message. It
    # raises codes above -256 as positive errnos, which are left out because they
    # collide with real errnos.
    # mbedTLS also adds a low-level code to a high-level one, as in
    # MBEDTLS_ERR_RSA_PUBLIC_FAILED + MBEDTLS_ERR_MPI_ALLOC_FAILED (-0x0010). On its
    # own, -16 is lwIP's ERR_ARG, so only such sums count.
    return (
        isinstance(exc, MemoryError)
        or code in (12, -0x7F00, -0x2880, -0x3F80, -0x4D80, -0x6180, -0x5180)
        or (code < -0x7F and -code & 0x7F == 0x10)
    )


def cert_check_lacked_heap(exc, free, left):
    """Return True when exc, a failed certificate check, may be a failed allocation instead.

    ``free`` and ``left`` are the free GC heap before and after the socket was wrapped.
    A drop of more than _TLS_ON_HEAP means that mbedTLS took its buffers from the GC
    heap, where the signature check allocates too. mbedTLS gives one line per failed
    check, and only an untrusted signature on its own can come from a failed allocation,
    because a wrong name or an expired date does not depend on the heap.
    """
    text = str(exc).strip()
    return (
        free - left > _TLS_ON_HEAP and left < _CERT_CHECK_HEAP and "\n" not in text and "not correctly signed" in text
    )


def _failed_transaction(message, error):
    # getattr(), because message may be an object that is not a Message.
    transaction = Transaction(getattr(message, "sender_address", None), getattr(message, "recipients", []), message)
    transaction.message_id = getattr(message, "message_id", None)
    transaction.fail(error)
    transaction.done = True
    return transaction


def _outcome(transaction):
    if transaction.error is not None:
        raise transaction.error
    if not transaction.done:
        raise ConnectionLost("the connection ended before the server confirmed the message", stage="message")
    return transaction


async def send(message, host, **options):
    """Send one Message over a new connection and return its Transaction.

    Options are those of ``SMTP``: ``port``, ``security`` (``"starttls"``, ``"tls"`` or
    ``"none"``), ``username``, ``password`` or ``oauth2_token``, ``ca_roots`` (DER
    bytes or PEM text of the trusted roots) or ``ssl_context``, ``server_hostname``,
    ``local_hostname``, ``timeout_ms`` (deadline for the whole send),
    ``connect_timeout_ms``, ``reply_timeout_ms`` and ``log``.
    """
    smtp = SMTP(host, **options)
    smtp._start_deadline(smtp.timeout_ms)
    smtp._deadline_locked = True
    try:
        await smtp.connect()
        transaction = await smtp._queue(smtp._queue_message, message)
        # QUIT goes in the same group as the content where the server allows it.
        await smtp._queue(smtp.session.quit)
        try:
            await smtp._run()
        except SMTPError:
            if transaction.error is None:
                # The message was accepted before the connection failed.
                if not transaction.done:
                    raise
        return _outcome(transaction)
    finally:
        await smtp.close()
