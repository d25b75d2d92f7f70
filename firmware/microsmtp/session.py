"""Sans-IO SMTP client session (RFC 5321, with STARTTLS RFC 3207, AUTH RFC 4954,
PIPELINING RFC 2920 and CHUNKING RFC 3030).

Theory of operation
-------------------
``Session`` holds the whole protocol state of one connection and makes every protocol
decision, but never touches a socket or a clock. A driver runs it in a loop:

1. call ``next_event()``;
2. on ``SEND``, write ``data_to_send()`` to the connection;
3. on ``NEED_DATA``, read from the connection and pass the bytes to ``receive_data()``
   (``b""`` when the peer closed);
4. on ``START_TLS``, wrap the connection in TLS and call ``tls_started()``;
5. on ``IDLE``, the session waits for the caller: ``mail()`` queues a transaction,
   ``quit()`` ends the session;
6. on ``CLOSED``, close the connection.

Commands wait in a queue and go out in groups. Without PIPELINING each group is one
command, sent after the reply to the previous one (lock-step). With PIPELINING a group
runs up to the next command whose reply decides what to send next: DATA (the content
waits for 354), STARTTLS, EHLO and a multi-step AUTH. Replies are matched to commands
in order through a FIFO of expected replies.

Round trips saved with PIPELINING, following RFC 4954 section 4: AUTH PLAIN with its
initial response completes in one step, so it is held back after EHLO and sent in the
same group as the first MAIL, RCPT and DATA. If AUTH fails, the session stops before any
content is sent. At most an unfinished transaction remains on the server, and the
server discards it when the driver closes the connection. With CHUNKING as well, later transactions send
their content with BDAT, so a whole queue of messages travels in one group.

Paths that one plain alert never takes (multi-step or failed AUTH, a rejected EHLO,
HELO, a refused STARTTLS, BDAT, recipients deferred by a 452, unsolicited replies) live
in ``session_rare.py``, which is imported on first use, so a board that never takes them
never loads it.

Errors: ``next_event()`` raises the typed errors of ``errors.py`` for anything that
ends the session (a 421, a lost connection, a malformed reply, failed AUTH or TLS).
The same error is then raised by every later call, and the driver closes the
connection. An error that concerns one message (MAIL, RCPT, DATA or the final reply
refused) is stored on that message's ``Transaction`` instead, and the session goes on
with the next one after an RSET.
"""

import gc
import sys

from .errors import (
    AuthError,
    ConnectionLost,
    InvalidInputError,
    ProtocolError,
    ReplyError,
    SecurityError,
    out_of_memory,
)
from .reply import ReplyParser
from .transaction import EIGHT_BIT_WITHOUT_8BITMIME, DataEncoder, Transaction

try:
    from micropython import const
except ImportError:
    # Every const() here wraps an int; int() returns it unchanged, and unlike a def it
    # adds no function to the module that MicroPython loads.
    const = int

if sys.implementation.name == "micropython":
    # Free the garbage that loading reply.py and transaction.py left, so that the objects
    # of this module fill those holes and the heap stays less fragmented.
    gc.collect()


# Events returned by next_event().
SEND = const(1)
NEED_DATA = const(2)
START_TLS = const(3)
IDLE = const(4)
CLOSED = const(5)

EVENT_NAMES = {SEND: "SEND", NEED_DATA: "NEED_DATA", START_TLS: "START_TLS", IDLE: "IDLE", CLOSED: "CLOSED"}

# Values of the security option.
STARTTLS = "starttls"
TLS = "tls"
PLAINTEXT = "none"
SECURITY_MODES = (STARTTLS, TLS, PLAINTEXT)

# Internal states.
_CONNECTED = const(0)  # waiting for the greeting
_NEGOTIATING = const(1)  # EHLO, STARTTLS and AUTH under way
_TLS_HANDSHAKE = const(2)  # the driver is upgrading the connection
_READY = const(3)  # transactions can be queued
_CLOSED = const(4)

# The shortest password or token that replies, errors and logs have redacted.
_MIN_SECRET = const(4)

# Error text by expected reply kind, for a transaction command that the server rejects.
_REJECTION_TEXT = {
    "mail": "the sender was refused (MAIL FROM)",
    "data": "the server refused DATA",
    "bdat": "the server refused a BDAT chunk",
    "message": "the server refused the message",
}


def check_line_argument(value, what, secret=False):
    """Return value as bytes; raise InvalidInputError if it could split a command line.

    With ``secret`` (an AUTH credential) an empty value is rejected too, and the error
    message leaves the value out.
    """
    if isinstance(value, str):
        value = value.encode("utf-8")
    if secret and not value:
        raise InvalidInputError("%s is empty; set it or leave out authentication" % what)
    for byte in value:
        if byte in (0, 10, 13):
            if secret:
                raise InvalidInputError("%s contains CR, LF or NUL, which SMTP AUTH cannot carry" % what)
            raise InvalidInputError(
                "%s contains CR, LF or NUL, which would break the SMTP command line: %s" % (what, repr(value[:80]))
            )
    return value


def _check_address(value, what):
    value = check_line_argument(value, what)
    try:
        value.decode("utf-8")
    except UnicodeError:
        raise InvalidInputError("%s is not valid UTF-8: %s" % (what, repr(value))) from None
    for byte in value:
        if byte in (32, 9, 60, 62):  # space, tab, "<", ">"
            raise InvalidInputError(
                "%s must be a bare address without spaces or angle brackets: %s" % (what, repr(value))
            )
    return value


def _check_content(content):
    """Check content given whole; return True if it has octets above 127, False if not.

    Content given whole is checked now, so that one bad message cannot break the
    connection for the others while they are on the wire. Content produced lazily is
    checked as it is encoded: a Message without UTF-8 addresses is 7-bit, and for
    another Message, an object with chunks(), a generator or another iterable the
    result is None, because its octets are not known yet.
    """
    if hasattr(content, "as_bytes"):
        # An email.message object is iterable, over its header names.
        raise InvalidInputError(
            "message content is an email.message object; pass its as_bytes(), without any Bcc header"
        )
    pieces = (content,) if isinstance(content, (bytes, bytearray)) else content
    if not isinstance(pieces, (tuple, list)):
        if hasattr(content, "chunks"):
            # A Message is 7-bit unless an address in its header is UTF-8 (SMTPUTF8).
            return None if getattr(content, "needs_smtputf8", True) else False
        if (hasattr(content, "__next__") or hasattr(content, "__iter__")) and not isinstance(content, str):
            return None
        raise InvalidInputError(
            "message content must be bytes, a list of bytes or a Message, not %s" % type(content).__name__
        )
    eight_bit = False
    for piece in pieces:
        if not isinstance(piece, (bytes, bytearray)):
            raise InvalidInputError("message content must be bytes, not %s" % type(piece).__name__)
        if b"\0" in piece:
            raise InvalidInputError("message content contains a NUL byte")
        if piece and max(piece) > 127:
            eight_bit = True
    return eight_bit


class Session:
    """Protocol state of one SMTP client connection; see the module docstring.

    ``security`` is ``"starttls"`` (default: upgrade with STARTTLS and fail if the server
    does not offer it), ``"tls"`` (the driver connects with TLS from the start) or
    ``"none"`` (plaintext, only when explicitly chosen; AUTH is then refused). ``log`` is
    an optional callable that receives transcript lines (``"--> EHLO x"``, ``"<-- 250 ok"``)
    with every AUTH payload replaced by ``"<redacted>"``; if it raises an Exception, it
    is not called again for this connection and one line on standard error says so (a
    MemoryError still ends the session as OutOfMemory). ``pipelining`` and
    ``chunking`` set False keep the session from using those extensions even when the
    server offers them.
    """

    def __init__(
        self,
        local_name="localhost",
        security=STARTTLS,
        username=None,
        password=None,
        oauth2_token=None,
        log=None,
        max_line=None,
        max_reply=None,
        pipelining=True,
        chunking=True,
    ):
        if security not in SECURITY_MODES:
            raise InvalidInputError("security must be one of %s, not %s" % (", ".join(SECURITY_MODES), repr(security)))
        name = check_line_argument(local_name, "local hostname")
        if not name or b" " in name:
            raise InvalidInputError("local hostname must be a non-empty name without spaces: %s" % repr(local_name))
        if (password is not None or oauth2_token is not None) and username is None:
            raise InvalidInputError("a password or OAuth2 token was given without a username")
        if username is not None:
            # Check the credentials now, so that a bad one fails before connecting.
            if password is None and oauth2_token is None:
                raise InvalidInputError("a password or an OAuth2 token is required with a username")
            check_line_argument(username, "username", True)
            if oauth2_token is None:
                check_line_argument(password, "password", True)
            else:
                check_line_argument(oauth2_token, "OAuth2 token", True)
        self.local_name = name
        self.security = security
        self._credentials = (username, password, oauth2_token)
        self._log = log
        self._allow_pipelining = pipelining
        self._allow_chunking = chunking
        parser = ReplyParser()
        if max_line:
            parser.max_line = max_line
        if max_reply:
            parser.max_reply = max_reply
        self._parser = parser

        self.tls_active = security == TLS
        self.extensions = {}
        self.esmtp = True
        self.authenticated = False
        self.greeting = None
        self.stage = "greeting"

        self._state = _CONNECTED
        # FIFO of (kind, transaction, argument) for the replies still to come.
        self._expected = [("greeting", None, None)]
        # Commands not sent yet, as (kind, transaction, argument).
        self._queued = []
        self._out = []
        self._eof = False
        self._error = None
        # The AUTH mechanism under way: an auth.py object, or for PLAIN its base64
        # payload, because PLAIN is built here without loading auth.py.
        self._mechanism = None
        self._auth_line = None
        self._transactions = 0
        self._needs_reset = False
        # (transaction, chunk iterator, DataEncoder) while content is being sent.
        self._content = None
        self._current = None
        self._quit_requested = False
        self._secrets = []
        self._start_tls_requested = False

    # -- driver interface -------------------------------------------------------------

    def receive_data(self, data):
        """Take bytes read from the connection; ``b""`` means the peer closed it."""
        if data:
            self._parser.feed(data)
        else:
            self._eof = True

    def data_to_send(self):
        """Return and forget the bytes that the driver must write now."""
        out = self._out
        self._out = []
        # A single piece of bytes (usually a chunk of content) goes out without a copy.
        if len(out) == 1 and isinstance(out[0], bytes):
            return out[0]
        return b"".join(out)

    def tls_started(self):
        """Record that the driver finished the STARTTLS upgrade; send EHLO again.

        RFC 3207 section 4.2: everything learnt before TLS is discarded, including the
        extensions, because an attacker could have forged it.
        """
        if self._state != _TLS_HANDSHAKE:
            raise ProtocolError("tls_started() called while no STARTTLS was under way")
        old = self._parser
        self._parser = ReplyParser(old.max_line, old.max_reply)
        self.tls_active = True
        self.extensions = {}
        self._state = _NEGOTIATING
        self._command(b"EHLO " + self.local_name, "ehlo")
        self.stage = "ehlo"

    def next_event(self):
        """Advance the protocol and return what the driver must do next (an event)."""
        if self._error is not None:
            raise self._error
        try:
            while True:
                if self._out:
                    return SEND
                if self._state == _CLOSED:
                    return CLOSED
                if self._start_tls_requested:
                    self._start_tls_requested = False
                    return START_TLS
                if self._state == _TLS_HANDSHAKE:
                    raise ProtocolError("next_event() called before tls_started() finished the STARTTLS upgrade")
                if self._content is not None:
                    self._send_content()
                    continue
                if self._queued and self._may_send(self._queued[0][0]):
                    self._current = self._queued.pop(0)
                    self._send_item(*self._current)
                    self._current = None
                    continue
                if not self._expected:
                    return IDLE
                # The stage is the command whose reply is awaited, so that an error or a
                # timeout names the step that failed.
                kind = self._expected[0][0]
                self.stage = kind
                reply = self._next_reply()
                if reply is None:
                    if self._eof:
                        self._state = _CLOSED
                        if kind == "quit":
                            # A server may hang up right after QUIT without its 221.
                            return CLOSED
                        raise ConnectionLost("the server closed the connection during %s" % kind, stage=kind)
                    return NEED_DATA
                self._log_reply(reply)
                self._current = self._expected.pop(0)
                self._handle(reply, *self._current)
                self._current = None
        except Exception as exc:
            if isinstance(exc, MemoryError):
                # Encoding the content or parsing a reply ran out of heap. The
                # transactions get a transient SMTPError, so that they are tried again.
                error = out_of_memory(self.stage, exc)
                self._fail_all(error)
                raise error from None
            # The reply parser does not know the dialogue, so its errors get the stage here.
            if getattr(exc, "stage", 0) is None:
                exc.stage = self.stage
            self._fail_all(exc)
            raise

    # -- caller interface -------------------------------------------------------------

    @property
    def usable(self):
        """True when the connection can carry another transaction."""
        return self._error is None and self._state == _READY

    @property
    def pipelining(self):
        return self._allow_pipelining and "PIPELINING" in self.extensions

    @property
    def max_size(self):
        """The server's SIZE limit in octets, or 0 when it announced none."""
        try:
            return max(int(self.extensions.get("SIZE", "0")), 0)
        except ValueError:
            return 0

    @property
    def auth_mechanisms(self):
        return self.extensions.get("AUTH", "").upper().split()

    def mail(self, sender, recipients, content, size=None, smtputf8=False):
        """Queue a transaction and return its ``Transaction``.

        ``content`` is bytes, a list of bytes chunks or an object with ``chunks()`` (a
        Message); it is converted to the wire form on the fly. ``size`` (octets) is
        announced with the SIZE extension and checked against the server's limit
        before anything is sent. Input errors raise InvalidInputError at once and queue
        nothing; server refusals end up in the Transaction's ``error``.
        """
        if self._state != _READY or self._error is not None or self._quit_requested:
            raise ProtocolError("mail() called while the session cannot send (state %d)" % self._state)
        sender = _check_address(sender, "sender address")
        if isinstance(recipients, (str, bytes)):
            recipients = [recipients]
        rcpts = []
        for rcpt in recipients:
            rcpt = _check_address(rcpt, "recipient address")
            if not rcpt:
                # Only the sender may be empty (the null reverse-path of a bounce).
                raise InvalidInputError("a recipient address is empty")
            if rcpt not in rcpts:
                rcpts.append(rcpt)
        if not rcpts:
            raise InvalidInputError("a message needs at least one recipient")
        limit = self.max_size
        if size is not None and limit and size > limit:
            raise InvalidInputError(
                "message is %d octets but the server accepts at most %d (SIZE); make it smaller" % (size, limit),
                stage="mail",
            )
        for address in [sender] + rcpts:
            # An address outside ASCII needs SMTPUTF8 (RFC 6531), even when smtputf8 is False.
            if len(address.decode()) != len(address):
                smtputf8 = True
        if smtputf8 and "SMTPUTF8" not in self.extensions:
            raise InvalidInputError(
                "an address is not ASCII and the server does not offer SMTPUTF8; use ASCII addresses", stage="mail"
            )
        eight_bit = _check_content(content)
        if eight_bit is None:
            # Declared where the server offers it, so that 8-bit content can follow.
            eight_bit = "8BITMIME" in self.extensions
        elif eight_bit and "8BITMIME" not in self.extensions:
            raise InvalidInputError(EIGHT_BIT_WITHOUT_8BITMIME, stage="mail")
        self._check_unsolicited()
        transaction = Transaction(sender, rcpts, content, size, smtputf8)
        transaction.eight_bit = eight_bit
        self._transactions += 1
        self._queued += self._envelope(transaction, self._transactions > 1)
        return transaction

    def quit(self):
        """Queue QUIT; next_event() returns CLOSED once the server replied or hung up."""
        if self._state == _CLOSED or self._quit_requested:
            return
        if not self._expected and not self._queued and (self._parser.buffered or self._eof):
            # The server already sent an unsolicited reply (usually a 421) or hung up,
            # so there is no one left to receive QUIT.
            self._state = _CLOSED
            return
        self._quit_requested = True
        self._queued.append(("quit", None, None))

    # -- sending ---------------------------------------------------------------------

    def _envelope(self, transaction, reset):
        """Return the queue items of one attempt: RSET if ``reset``, held-back AUTH, MAIL, RCPTs, DATA or BDAT."""
        items = [("reset", transaction, None)] if reset else []
        if self._auth_line is not None:
            items.append(("auth", None, self._auth_line))
        items.append(("mail", transaction, None))
        for rcpt in transaction.batch:
            items.append(("rcpt", transaction, rcpt))
        # BDAT without PIPELINING would cost a round trip per chunk, so it is used only
        # together with PIPELINING. AUTH still unanswered in the same group means the
        # content must wait for the server's verdict, which DATA provides through its 354.
        chunking = self._allow_chunking and self.pipelining and "CHUNKING" in self.extensions
        items.append(("bdat" if chunking and self._auth_line is None else "data", transaction, None))
        self._auth_line = None
        return items

    def _may_send(self, kind):
        if self._state < _READY:
            # Nothing queued may interleave with greeting, EHLO, STARTTLS or AUTH.
            return False
        if not self._expected:
            return True
        if not self.pipelining:
            return False
        for expected, transaction, _ in self._expected:
            # Nothing may follow DATA before its 354, because the content comes next
            # (RFC 2920 section 3.1). QUIT waits for the RCPT replies, because a 452
            # "too many recipients" means another transaction on this connection.
            if expected == "data":
                return False
            if kind == "quit" and (expected == "rcpt" or (transaction is not None and transaction.deferred)):
                return False
        return True

    def _send_item(self, kind, transaction, argument):
        if transaction is not None and transaction.done:
            return
        if kind == "reset":
            # With PIPELINING the previous outcome is not known yet, so RSET always goes
            # (a 250 either way); in lock-step it goes only after a failure.
            if self.pipelining or self._needs_reset:
                self._needs_reset = False
                self._command(b"RSET", "rset", transaction)
        elif kind == "auth":
            # Only PLAIN is held back for a pipelined group.
            self._command(argument, "auth", None, None, "AUTH PLAIN <redacted>")
        elif kind == "mail":
            params = b""
            if transaction.size is not None and "SIZE" in self.extensions:
                params += b" SIZE=%d" % transaction.size
            if transaction.eight_bit:
                params += b" BODY=8BITMIME"
            if transaction.smtputf8:
                params += b" SMTPUTF8"
            self._command(b"MAIL FROM:<" + transaction.sender + b">" + params, "mail", transaction)
        elif kind == "rcpt":
            self._command(b"RCPT TO:<" + argument + b">", "rcpt", transaction, argument)
        elif kind == "data":
            self._command(b"DATA", "data", transaction)
        elif kind == "bdat":
            self._start_content(transaction, False)
        elif kind == "quit":
            self._command(b"QUIT", "quit")

    def _check_nothing_unsolicited(self):
        # When every expected reply has been read, any further byte is a reply to no
        # command. Taking it as the reply to the next command would shift every reply
        # after it by one, so the session stops here instead.
        if not self._expected and self._parser.buffered:
            raise ProtocolError(
                "the server sent %d octets that reply to no command; it is broken, or something on the path "
                "inserts data" % self._parser.buffered,
                stage=self.stage,
            )

    def _command(self, line, kind, transaction=None, argument=None, redacted=None):
        self._check_nothing_unsolicited()
        if not self._expected:
            # The first command of a group names the stage while the group is written.
            self.stage = kind
        self._out.append(line + b"\r\n")
        self._expected.append((kind, transaction, argument))
        if self._log is not None:
            self._emit("--> " + (redacted if redacted is not None else line.decode()))

    def _start_content(self, transaction, dot_stuff):
        self._check_nothing_unsolicited()
        # A fresh iterator, because a second batch of recipients reads the content again.
        content = transaction.content
        if isinstance(content, (bytes, bytearray)):
            chunks = iter((bytes(content),))
        elif hasattr(content, "chunks"):
            chunks = content.chunks()
        else:
            chunks = iter(content)
        self._content = (transaction, chunks, DataEncoder(dot_stuff, transaction.eight_bit))
        self.stage = "message"

    def _send_content(self):
        # One call queues one piece, so that the driver writes the content as it is
        # encoded and the whole message is never held in memory.
        transaction, chunks, encoder = self._content
        if not encoder.dot_stuff and transaction.done and transaction.error is not None:
            # RFC 3030 section 3: after a failed BDAT no further chunk may be sent.
            self._content = None
            return
        if encoder.dot_stuff:
            for chunk in chunks:
                data = encoder.encode(chunk)
                if data:
                    self._out.append(data)
                    return
            self._out.append(encoder.finish())
            self._content = None
            self._expected.append(("message", transaction, None))
            if self._log is not None:
                self._emit("--> (message content, %d octets)" % encoder.size)
                self._emit("--> .")
            return

        from . import session_rare

        try:
            session_rare.send_bdat(self, transaction, chunks, encoder)
        except (InvalidInputError, MemoryError) as exc:
            # Each BDAT chunk states its length, so the connection is between two
            # commands here. Only this transaction fails: the RSET before the next one,
            # or QUIT, ends it on the server without a message (RFC 3030 section 3).
            if isinstance(exc, MemoryError):
                exc = out_of_memory("message", exc)
            elif exc.stage is None:
                exc.stage = "message"
            self._content = None
            self._fail_transaction(transaction, exc)

    # -- receiving -------------------------------------------------------------------

    def _emit(self, line):
        # A fault of the caller's log function must not cost a message, so it ends the
        # transcript of this connection instead. Lack of heap keeps its meaning (an
        # OutOfMemory), and KeyboardInterrupt, SystemExit and a cancellation are no
        # Exception, so they pass.
        if self._log is not None:
            try:
                self._log(line)
            except Exception as exc:
                if isinstance(exc, MemoryError):
                    raise
                from . import session_rare

                session_rare.log_failed(self, exc)

    def _log_reply(self, reply):
        # The lines are redacted already (_next_reply()).
        if self._log is None:
            return
        prefix = "<-- %d" % reply.code
        enhanced = (reply.enhanced + " ") if reply.enhanced else ""
        for i, line in enumerate(reply.lines):
            sep = " " if i == len(reply.lines) - 1 else "-"
            if self.stage == "auth" and reply.code == 334:
                line = "<redacted>"
            self._emit(prefix + sep + enhanced + line)

    def _check_unsolicited(self):
        # A reply or EOF while no reply is expected ends the session (a 421 shutdown
        # notice, or a dialogue out of step).
        if self._expected:
            return
        reply = self._next_reply()
        if reply is not None or self._eof:
            from . import session_rare

            session_rare.fail_idle(self, reply)

    def _next_reply(self):
        """Return the next complete reply from the parser, with the credentials redacted, or None."""
        try:
            reply = self._parser.next_reply()
        except ProtocolError as exc:
            # The parser quotes the malformed line, which may hold a piece of a credential
            # whose start was on an earlier line of the reply.
            if not self._secrets:
                raise
            from . import session_rare

            raise session_rare.unquoted(exc) from None
        if reply is not None:
            # Replies end up in results (refused recipients), errors and logs, so a
            # server quoting the AUTH command must not leave credentials there. This is
            # the only place that redacts: redacting "<redacted>" again could garble it.
            lines = reply.lines
            for secret in self._secrets:
                # A reply of several lines is checked for a credential cut at a line end too.
                if len(lines) > 1 or secret in lines[0]:
                    from . import session_rare

                    session_rare.scrub_reply(self, reply)
                    break
        return reply

    def _reply_error(self, what, reply, error=ReplyError, stage=None):
        # The reply lines are redacted already (_next_reply()).
        return error("%s: %s" % (what, reply.describe()), reply.code, reply.enhanced, reply.text, stage or self.stage)

    def _fatal(self, what, reply, error=ReplyError):
        # 421 means the server is closing the connection (RFC 5321 section 3.8), so no
        # further command, not even QUIT, may be sent. Other fatal replies leave the
        # dialogue in a state that only closing the connection clears.
        self._state = _CLOSED
        raise self._reply_error(what, reply, error)

    def abort(self, error):
        """End the session because of an error the driver met (a timeout, a lost connection).

        Every unfinished transaction gets the error, and later calls raise it.
        """
        if self._error is None:
            self._fail_all(error)

    def _fail_all(self, error):
        """End the session with error; every unfinished transaction gets it too."""
        self._error = error
        self._state = _CLOSED
        culprit = None
        others = error
        if isinstance(error, InvalidInputError) and self._content is not None:
            # Content that turned out invalid while it was being sent is that message's
            # fault only; the others failed because the connection had to be dropped.
            culprit = self._content[0]
            others = ConnectionLost(
                "the connection was dropped because another message had invalid content: %s" % error.message,
                stage=error.stage,
            )
        items = self._expected + self._queued
        if self._current is not None:
            items.append(self._current)
        if self._content is not None:
            items.append((None, self._content[0], None))
        for _, transaction, _ in items:
            if transaction is not None and not transaction.done:
                transaction.fail(error if transaction is culprit else others)
                transaction.done = True
        self._current = None
        self._content = None
        self._expected = []
        self._queued = []

    def _handle(self, reply, kind, transaction, argument):
        code = reply.code
        if code == 421 and kind != "quit":
            self._fatal("the server is closing the connection", reply)
        if transaction is not None and kind != "rset":
            self._handle_transaction(reply, kind, transaction, argument)
        elif kind == "greeting":
            self.greeting = reply
            if code != 220:
                self._fatal("the server refused the connection", reply)
            self._state = _NEGOTIATING
            self._command(b"EHLO " + self.local_name, "ehlo")
            self.stage = "ehlo"
        elif kind == "ehlo":
            self._on_ehlo(reply)
        elif kind == "helo":
            from . import session_rare

            session_rare.helo_reply(self, reply)
        elif kind == "starttls":
            if code != 220:
                from . import session_rare

                session_rare.starttls_refused(self, reply)
            # RFC 3207 section 4: the server sends nothing more in plaintext. Bytes
            # already received would be read as if they came through TLS (response
            # injection).
            if self._parser.buffered:
                raise ProtocolError(
                    "the server sent %d unexpected octets after its STARTTLS reply; possible response injection"
                    % self._parser.buffered,
                    stage="starttls",
                )
            self._state = _TLS_HANDSHAKE
            self._start_tls_requested = True
            self.stage = "tls"
        elif kind == "auth":
            self._on_auth(reply)
        elif kind == "rset":
            if code != 250:
                self._fatal("RSET failed", reply)
        elif kind == "quit":
            self._state = _CLOSED
        else:
            raise ProtocolError("internal error: unknown expected reply %s" % kind)

    # -- negotiation -------------------------------------------------------------------

    def _on_ehlo(self, reply):
        if reply.code == 250:
            self.esmtp = True
            # The EHLO keywords, as upper-case keyword -> parameter string.
            extensions = {}
            for line in reply.lines[1:]:
                words = line.strip().split(" ", 1)
                keyword = words[0].upper()
                if not keyword:
                    continue
                params = words[1].strip() if len(words) > 1 else ""
                if keyword.startswith("AUTH="):
                    # Old servers announce "AUTH=LOGIN PLAIN" beside or instead of "AUTH".
                    params = (keyword[5:] + " " + params).strip()
                    keyword = "AUTH"
                    if keyword in extensions:
                        params = extensions[keyword] + " " + params
                extensions[keyword] = params
            self.extensions = extensions
            self._after_hello()
            return
        from . import session_rare

        session_rare.ehlo_rejected(self, reply)

    def _after_hello(self):
        # 1. STARTTLS first when required: nothing else may happen in plaintext.
        if self.security == STARTTLS and not self.tls_active:
            if "STARTTLS" not in self.extensions:
                raise SecurityError(
                    "the server does not offer STARTTLS, and security 'starttls' requires it; "
                    "check the port (587 for STARTTLS, 465 for implicit TLS)",
                    stage="ehlo",
                )
            self._command(b"STARTTLS", "starttls")
            return

        # 2. AUTH when credentials were given, and never over plaintext.
        username, password, token = self._credentials
        if username is not None and not self.authenticated:
            self.stage = "auth"
            if not self.tls_active:
                raise SecurityError(
                    "refusing to send credentials over a plaintext connection; use security 'starttls' or 'tls'",
                    stage="auth",
                )
            if "AUTH" not in self.extensions:
                raise AuthError(
                    "the server does not offer AUTH; connect without credentials or use another port", stage="auth"
                )
            # A server may quote the password or token itself, not only its base64 form.
            # One of fewer than _MIN_SECRET characters is left as it is: it occurs in
            # almost any text, so redacting it would garble every reply and error, and
            # such a password is easy to guess anyway. Every base64 form
            # (AUTH PLAIN, LOGIN, XOAUTH2) is at least 4 characters, so it is always redacted.
            for secret in (password, token):
                if isinstance(secret, bytes):
                    try:
                        secret = secret.decode()
                    except UnicodeError:
                        continue
                secret = (secret or "").strip(" \t")
                if len(secret) >= _MIN_SECRET:
                    self._secrets.append(secret)
            offered = self.auth_mechanisms
            if token is None and "PLAIN" in offered:
                # PLAIN (RFC 4616) first, because it finishes in one round trip.
                import binascii

                name = "PLAIN"
                user = check_line_argument(username, "username", True)
                secret = check_line_argument(password, "password", True)
                initial = binascii.b2a_base64(b"\0" + user + b"\0" + secret)[:-1]
                self._mechanism = initial
            else:
                from . import auth

                self._mechanism = auth.choose(offered, username, password, token)
                name = self._mechanism.name
                initial = self._mechanism.initial_response()
            line = b"AUTH " + name.encode()
            if initial is not None:
                line += b" " + initial
                self._secrets.append(initial.decode())
            if self.pipelining and name == "PLAIN":
                # One step with an initial response: it may lead a pipelined group
                # (RFC 4954 section 4), so it waits for the first transaction.
                self._auth_line = line
                self._state = _READY
                self.stage = "ready"
                return
            redacted = "AUTH %s <redacted>" % name if initial is not None else None
            self._command(line, "auth", None, None, redacted)
            return

        # 3. Ready for transactions.
        self._state = _READY
        self.stage = "ready"

    def _on_auth(self, reply):
        if reply.code == 235:
            self.authenticated = True
            self._mechanism = None
            if self._state == _NEGOTIATING:
                self._after_hello()
            return
        from . import session_rare

        session_rare.auth_reply(self, reply, self._state == _NEGOTIATING)

    # -- transactions --------------------------------------------------------------------

    def _fail_transaction(self, transaction, error, reply=None):
        """Record that one transaction failed; the session goes on with the next one.

        ``accepted`` keeps only the batches whose content got its final 250.
        """
        if transaction.reply is not None and reply is not None:
            # A later batch after a 452, and an earlier one already has the message. So a
            # refusal by the server leaves the transaction a success. Content that failed
            # on this side, with no reply, sets error.
            from . import session_rare

            session_rare.refuse_batch(transaction, reply)
        else:
            transaction.fail(error)
        transaction.done = True
        if transaction.mail_accepted:
            self._needs_reset = True
        # Commands of this transaction not sent yet are dropped; replies to those
        # already sent (pipelined) are still read and ignored.
        self._queued = [item for item in self._queued if item[1] is not transaction]

    def _handle_transaction(self, reply, kind, transaction, rcpt):
        code = reply.code
        if transaction.done:
            if kind == "data" and code == 354:
                # RFC 2920 section 3.1: a server that accepts DATA without a valid
                # recipient gets an empty message, which it must reject.
                self._out.append(b".\r\n")
                self._expected.append(("message", transaction, None))
                self._emit("--> .")
            return

        if kind == "rcpt":
            address = rcpt.decode()
            transaction.batch_replies += 1
            if code in (250, 251):
                # Only the final 250 to the content puts the recipient in accepted.
                transaction.rcpt_accepted[address] = reply
                transaction.batch_accepted.append(address)
            elif code == 452 and transaction.batch_accepted:
                from . import session_rare

                session_rare.rcpt_over_limit(transaction, rcpt, address, reply)
            else:
                transaction.refused[address] = reply
            if transaction.batch_replies >= len(transaction.batch) and not transaction.batch_accepted:
                # With PIPELINING, DATA is already on its way. If the server accepts it
                # anyway, the session sends an empty message, which the server rejects.
                from . import session_rare

                self._fail_transaction(transaction, session_rare.all_refused_error(self, transaction), reply)
            return

        if code != (354 if kind == "data" else 250):
            error = self._reply_error(_REJECTION_TEXT[kind], reply, ReplyError, "data" if kind == "bdat" else None)
            self._fail_transaction(transaction, error, reply)
        elif kind == "mail":
            transaction.mail_accepted = True
        elif kind == "data":
            self._start_content(transaction, True)
        elif kind == "message":
            transaction.reply = reply
            transaction.mail_accepted = False
            for address in transaction.batch_accepted:
                transaction.accepted[address] = transaction.rcpt_accepted[address]
            if transaction.deferred:
                from . import session_rare

                session_rare.retry_deferred(self, transaction)
            else:
                transaction.done = True
