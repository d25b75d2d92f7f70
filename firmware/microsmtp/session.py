"""Sans-IO SMTP client session (RFC 5321, with STARTTLS RFC 3207 and AUTH RFC 4954).

Theory of operation
-------------------
``Session`` holds the whole protocol state of one connection and makes every protocol
decision, but never touches a socket or a clock. A driver runs it in a loop:

1. call ``next_event()``;
2. on ``SEND``, write ``data_to_send()`` to the connection;
3. on ``NEED_DATA``, read from the connection and pass the bytes to ``receive_data()``
   (``b""`` when the peer closed);
4. on ``START_TLS``, wrap the connection in TLS and call ``tls_started()``;
5. on ``IDLE``, the session waits for the caller: ``mail()`` starts a transaction,
   ``quit()`` ends the session; ``result`` holds the last transaction's outcome;
6. on ``CLOSED``, close the connection.

``next_event()`` raises the typed errors of ``errors.py``. An error that concerns one
message (MAIL, RCPT, DATA or the final reply refused) leaves the session usable, and the
next ``mail()`` first resets the transaction with RSET. Any other error is final: the
same error is raised again by every later call, and the driver closes the connection.

Each command sent pushes the name of its expected reply onto a FIFO. Replies are
matched to commands in that order, which is what lets several commands share one
round trip where the server allows it.
"""

from . import auth as _auth
from .errors import (
    AuthError,
    ConnectionLost,
    InvalidInputError,
    ProtocolError,
    RecipientsRefused,
    ReplyError,
    SecurityError,
)
from .reply import ReplyParser

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


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
_READY = const(3)  # idle between transactions
_TRANSACTION = const(4)  # MAIL .. final reply
_SENDING_CONTENT = const(5)  # message content being handed to the driver
_QUITTING = const(6)
_CLOSED = const(7)


def check_line_argument(value, what):
    """Return value as bytes; raise InvalidInputError if it could split a command line."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    for byte in value:
        if byte in (0, 10, 13):
            raise InvalidInputError(
                "%s contains CR, LF or NUL, which would break the SMTP command line: %s" % (what, repr(value[:80]))
            )
    return value


def _check_address(value, what):
    value = check_line_argument(value, what)
    for byte in value:
        if byte in (32, 9, 60, 62):  # space, tab, "<", ">"
            raise InvalidInputError("%s must be a bare address without spaces or angle brackets: %s" % (what, repr(value)))
    return value


class DataEncoder:
    """Convert message content to the DATA wire form, one chunk at a time.

    Every bare CR or LF becomes CRLF, a line starting with "." gets a second "."
    (RFC 5321 section 4.5.2), and NUL raises InvalidInputError. So no byte sequence in
    the content can end the DATA early or smuggle a second message.
    """

    def __init__(self):
        self.line_start = True
        self._pending_cr = False
        self.size = 0

    def encode(self, chunk):
        if b"\0" in chunk:
            raise InvalidInputError("message content contains a NUL byte")
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            # The LF that would complete this CRLF may start the next chunk.
            self._pending_cr = True
            chunk = chunk[:-1]
        if not chunk:
            return b""
        chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        chunk = chunk.replace(b"\r\n.", b"\r\n..")
        if self.line_start and chunk.startswith(b"."):
            chunk = b"." + chunk
        self.line_start = chunk.endswith(b"\n")
        self.size += len(chunk)
        return chunk

    def finish(self):
        """Return the bytes that end the content: a pending CRLF if needed, then ".\\r\\n"."""
        tail = b""
        if self._pending_cr:
            self._pending_cr = False
            tail = b"\r\n"
            self.line_start = True
        if not self.line_start:
            tail += b"\r\n"
        self.size += len(tail)
        return tail + b".\r\n"


class TransactionResult:
    """Outcome of one accepted message.

    ``accepted`` and ``refused`` map each recipient to the server's reply; ``reply`` is
    the final reply to the message content; ``message_id`` is set for a Message.
    """

    def __init__(self):
        self.accepted = {}
        self.refused = {}
        self.reply = None
        self.message_id = None

    def __repr__(self):
        return "TransactionResult(%d accepted, %d refused, %s)" % (len(self.accepted), len(self.refused), repr(self.reply))


def parse_extensions(reply):
    """Return the EHLO keywords as a dict of upper-case keyword -> parameter string."""
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
    return extensions


class Session:
    """Protocol state of one SMTP client connection; see the module docstring.

    ``security`` is ``"starttls"`` (default: upgrade with STARTTLS and fail if the server
    does not offer it), ``"tls"`` (the driver connects with TLS from the start) or
    ``"none"`` (plaintext, only when explicitly chosen; AUTH is then refused). ``log`` is
    an optional callable that receives transcript lines (``"--> EHLO x"``, ``"<-- 250 ok"``)
    with every AUTH payload replaced by ``"<redacted>"``.
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
            _auth.choose(("PLAIN", "XOAUTH2"), username, password, oauth2_token)
        self.local_name = name
        self.security = security
        self._username = username
        self._password = password
        self._oauth2_token = oauth2_token
        self._log = log
        parser_args = {}
        if max_line:
            parser_args["max_line"] = max_line
        if max_reply:
            parser_args["max_reply"] = max_reply
        self._parser_args = parser_args
        self._parser = ReplyParser(**parser_args)

        self.tls_active = security == TLS
        self.extensions = {}
        self.esmtp = True
        self.authenticated = False
        self.greeting = None
        self.result = None
        self.stage = "greeting"

        self._state = _CONNECTED
        self._expected = ["greeting"]
        self._queued = []
        self._out = []
        self._eof = False
        self._error = None
        self._needs_reset = False
        self._mechanism = None
        self._transaction = None
        self._content = None
        self._encoder = None
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
        out = b"".join(self._out)
        self._out = []
        return out

    def tls_started(self):
        """Record that the driver finished the STARTTLS upgrade; send EHLO again.

        RFC 3207 section 4.2: everything learnt before TLS is discarded, including the
        extensions, because an attacker could have forged it.
        """
        if self._state != _TLS_HANDSHAKE:
            raise ProtocolError("tls_started() called while no STARTTLS was under way")
        self._parser = ReplyParser(**self._parser_args)
        self.tls_active = True
        self.extensions = {}
        self._state = _NEGOTIATING
        self._send_ehlo()

    def next_event(self):
        """Advance the protocol and return what the driver must do next (an event)."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except ReplyError as exc:
            if self._state not in (_READY, _CLOSED):
                self._error = exc
            raise
        except Exception as exc:
            # The reply parser does not know the dialogue, so its errors get the stage here.
            if getattr(exc, "stage", 0) is None:
                exc.stage = self.stage
            self._error = exc
            raise

    def _next_event(self):
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
            if self._expected:
                # The stage is the command whose reply is awaited, so that an error or a
                # timeout names the step that failed.
                self.stage = self._expected[0]
                reply = self._parser.next_reply()
                if reply is None:
                    if self._eof:
                        self._connection_lost()
                    return NEED_DATA
                self._log_reply(reply)
                self._handle(self._expected.pop(0), reply)
                continue
            if self._state == _SENDING_CONTENT:
                self._send_content_chunk()
                continue
            if self._queued:
                line, expected = self._queued.pop(0)
                self._command(line, expected)
                continue
            return IDLE

    # -- caller interface -------------------------------------------------------------

    def mail(self, sender, recipients, content, size=None, smtputf8=False):
        """Start a transaction: MAIL FROM, one RCPT TO per recipient, DATA, the content.

        ``content`` is bytes or an iterable of bytes chunks; it is converted to the DATA
        form on the fly. ``size`` (octets) is announced with the SIZE extension and
        checked against the server's limit before anything is sent.
        """
        if self._state != _READY:
            raise ProtocolError("mail() called while the session is not ready (state %d)" % self._state)
        sender = _check_address(sender, "sender address")
        if isinstance(recipients, (str, bytes)):
            recipients = [recipients]
        rcpts = [_check_address(r, "recipient address") for r in recipients]
        if not rcpts:
            raise InvalidInputError("a message needs at least one recipient")
        limit = self.max_size
        if size is not None and limit and size > limit:
            raise InvalidInputError(
                "message is %d octets but the server accepts at most %d (SIZE); make it smaller" % (size, limit),
                stage="mail",
            )
        if smtputf8 and "SMTPUTF8" not in self.extensions:
            raise InvalidInputError(
                "an address is not ASCII and the server does not offer SMTPUTF8; use ASCII addresses", stage="mail"
            )
        self._check_unsolicited()

        if isinstance(content, (bytes, bytearray)):
            content = [bytes(content)]
        self._content = iter(content)
        self._encoder = DataEncoder()
        self._transaction = TransactionResult()
        self._rcpts = rcpts
        self.result = None
        self._state = _TRANSACTION
        self.stage = "mail"

        if self._needs_reset:
            self._needs_reset = False
            self._queue(b"RSET", "rset")
        params = b""
        if size is not None and "SIZE" in self.extensions:
            params += b" SIZE=%d" % size
        if smtputf8:
            params += b" SMTPUTF8"
        self._queue(b"MAIL FROM:<" + sender + b">" + params, "mail")
        for rcpt in rcpts:
            self._queue(b"RCPT TO:<" + rcpt + b">", "rcpt")
        self._queue(b"DATA", "data")

    def quit(self):
        """End the session politely; the driver then sees CLOSED."""
        if self._state == _CLOSED:
            return
        if self._parser.buffered or self._eof:
            # The server already said something unasked (usually a 421) or hung up:
            # there is nobody left to say goodbye to.
            self._state = _CLOSED
            return
        self._state = _QUITTING
        self._command(b"QUIT", "quit")

    @property
    def usable(self):
        """True when the connection can carry another transaction."""
        return self._error is None and self._state == _READY

    @property
    def max_size(self):
        """The server's SIZE limit in octets, or 0 when it announced none."""
        value = self.extensions.get("SIZE", "")
        return int(value) if value.isdigit() else 0

    @property
    def auth_mechanisms(self):
        return self.extensions.get("AUTH", "").upper().split()

    # -- sending ---------------------------------------------------------------------

    def _queue(self, line, expected):
        # Queued commands go out one at a time, each after the reply to the previous one
        # (lock-step), so the reply handlers can still cancel the rest.
        self._queued.append((line, expected))

    def _command(self, line, expected, redacted=None):
        self._out.append(line + b"\r\n")
        self._expected.append(expected)
        if self._log is not None:
            self._log("--> " + (redacted if redacted is not None else line.decode()))

    def _send_ehlo(self):
        self.stage = "ehlo"
        self._command(b"EHLO " + self.local_name, "ehlo")

    def _send_content_chunk(self):
        for chunk in self._content:
            data = self._encoder.encode(chunk)
            if data:
                self._out.append(data)
                return
        self._out.append(self._encoder.finish())
        self._expected.append("message")
        self._state = _TRANSACTION
        self._content = None
        if self._log is not None:
            self._log("--> (message content, %d octets)" % self._encoder.size)
            self._log("--> .")

    # -- receiving -------------------------------------------------------------------

    def _log_reply(self, reply):
        if self._log is None:
            return
        prefix = "<-- %d" % reply.code
        enhanced = (reply.enhanced + " ") if reply.enhanced else ""
        for i, line in enumerate(reply.lines):
            sep = " " if i == len(reply.lines) - 1 else "-"
            if self.stage == "auth" and reply.code == 334:
                line = "<redacted>"
            self._log(prefix + sep + enhanced + line)

    def _connection_lost(self):
        self._state = _CLOSED
        raise ConnectionLost("the server closed the connection during %s" % self.stage, stage=self.stage)

    def _check_unsolicited(self):
        # A server may announce its shutdown (421) while the session is idle. Anything
        # else that arrives unasked means the two sides disagree about the dialogue.
        reply = self._parser.next_reply()
        if reply is None:
            if self._eof:
                self._connection_lost()
            return
        self._log_reply(reply)
        self._state = _CLOSED
        if reply.code == 421:
            raise ReplyError(self._describe("the server is closing the connection", reply), reply.code, reply.enhanced, reply.text, self.stage)
        raise ProtocolError("unexpected reply from the server while idle: %s" % reply.describe(), stage=self.stage)

    def _describe(self, what, reply):
        return "%s: %s" % (what, reply.describe())

    def _fail(self, what, reply, error=ReplyError):
        # 421 means the server is closing the connection (RFC 5321 section 3.8), so no
        # further command, not even QUIT, may be sent.
        if reply.code == 421:
            self._state = _CLOSED
        raise error(self._describe(what, reply), reply.code, reply.enhanced, reply.text, self.stage)

    def _handle(self, expected, reply):
        if expected == "greeting":
            self._on_greeting(reply)
        elif expected == "ehlo":
            self._on_ehlo(reply)
        elif expected == "helo":
            self._on_helo(reply)
        elif expected == "starttls":
            self._on_starttls(reply)
        elif expected == "auth":
            self._on_auth(reply)
        elif expected == "rset":
            self._on_rset(reply)
        elif expected == "mail":
            self._on_mail(reply)
        elif expected == "rcpt":
            self._on_rcpt(reply)
        elif expected == "data":
            self._on_data(reply)
        elif expected == "message":
            self._on_message(reply)
        elif expected == "quit":
            self._state = _CLOSED
        else:
            raise ProtocolError("internal error: unknown expected reply %s" % expected)

    def _on_greeting(self, reply):
        self.greeting = reply
        if reply.code != 220:
            self._state = _CLOSED
            self._fail("the server refused the connection", reply)
        self._state = _NEGOTIATING
        self._send_ehlo()

    def _on_ehlo(self, reply):
        if reply.code == 250:
            self.esmtp = True
            self.extensions = parse_extensions(reply)
            self._after_hello()
            return
        if reply.transient:
            self._fail("EHLO failed", reply)
        # HELO carries no extensions, so no STARTTLS and no AUTH: fall back only when
        # plaintext was explicitly allowed or TLS is already up.
        if self.tls_active or self.security == PLAINTEXT:
            self._command(b"HELO " + self.local_name, "helo")
            return
        self._fail(
            "the server rejected EHLO, so it cannot offer STARTTLS; use security 'tls' on the "
            "server's implicit TLS port, or 'none' only on a trusted network",
            reply,
            SecurityError,
        )

    def _on_helo(self, reply):
        if reply.code != 250:
            self._fail("HELO failed", reply)
        self.esmtp = False
        self.extensions = {}
        self._after_hello()

    def _after_hello(self):
        # 1. STARTTLS first when required: nothing else may happen in plaintext.
        if self.security == STARTTLS and not self.tls_active:
            if "STARTTLS" not in self.extensions:
                self._state = _CLOSED
                raise SecurityError(
                    "the server does not offer STARTTLS, and security 'starttls' requires it; "
                    "check the port (587 for STARTTLS, 465 for implicit TLS)",
                    stage="ehlo",
                )
            self._command(b"STARTTLS", "starttls")
            return

        # 2. AUTH when credentials were given, and never over plaintext.
        if self._username is not None and not self.authenticated:
            self.stage = "auth"
            if not self.tls_active:
                raise SecurityError(
                    "refusing to send credentials over a plaintext connection; use security 'starttls' or 'tls'",
                    stage="auth",
                )
            if "AUTH" not in self.extensions:
                raise AuthError("the server does not offer AUTH; connect without credentials or use another port", stage="auth")
            self._mechanism = _auth.choose(self.auth_mechanisms, self._username, self._password, self._oauth2_token)
            initial = self._mechanism.initial_response()
            line = b"AUTH " + self._mechanism.name.encode()
            if initial is not None:
                line += b" " + initial
                redacted = "AUTH %s <redacted>" % self._mechanism.name
            else:
                redacted = None
            self._command(line, "auth", redacted)
            return

        # 3. Ready for transactions.
        self._state = _READY
        self.stage = "ready"

    def _on_starttls(self, reply):
        if reply.code != 220:
            self._state = _CLOSED
            error = SecurityError(
                "STARTTLS was refused, so the connection cannot be secured: %s" % reply.describe(),
                reply.code,
                reply.enhanced,
                reply.text,
                "starttls",
            )
            error.transient = reply.transient
            raise error
        # RFC 3207 section 4: the server sends nothing more in plaintext. Bytes already
        # received would be read as if they came through TLS (response injection).
        if self._parser.buffered:
            self._state = _CLOSED
            raise ProtocolError(
                "the server sent %d unexpected octets after its STARTTLS reply; possible response injection"
                % self._parser.buffered,
                stage="starttls",
            )
        self._state = _TLS_HANDSHAKE
        self._start_tls_requested = True
        self.stage = "tls"

    def _on_auth(self, reply):
        mechanism = self._mechanism
        if reply.code == 235:
            self.authenticated = True
            self._mechanism = None
            self._after_hello()
            return
        if reply.code == 334:
            challenge = reply.lines[0].encode()
            answer = mechanism.respond(challenge)
            if answer is None:
                # "*" cancels the exchange (RFC 4954 section 4); the server answers 501.
                self._command(b"*", "auth")
            else:
                self._command(answer, "auth", "<redacted>")
            return
        self._state = _CLOSED
        what = "authentication failed"
        if reply.code == 503:
            what = "the server rejected AUTH as out of sequence (503)"
        status = getattr(mechanism, "error_status", None)
        if status:
            what += " (XOAUTH2 status %s)" % status
        self._fail(what, reply, AuthError)

    def _end_transaction(self, what, reply):
        # The transaction failed but the connection is fine: the next mail() sends RSET.
        self._needs_reset = True
        self._content = None
        self._queued = []
        self._state = _READY
        self._fail(what, reply)

    def _on_rset(self, reply):
        if reply.code != 250:
            self._state = _CLOSED
            self._fail("RSET failed", reply)

    def _on_mail(self, reply):
        if reply.code != 250:
            self._end_transaction("the sender was refused (MAIL FROM)", reply)

    def _on_rcpt(self, reply):
        transaction = self._transaction
        rcpt = self._rcpts[len(transaction.accepted) + len(transaction.refused)].decode()
        if reply.code in (250, 251):
            transaction.accepted[rcpt] = reply
        else:
            if reply.code == 421:
                self._fail("the server is closing the connection", reply)
            transaction.refused[rcpt] = reply
        if len(transaction.accepted) + len(transaction.refused) < len(self._rcpts):
            return
        if not transaction.accepted:
            self._needs_reset = True
            self._queued = []
            self._state = _READY
            raise RecipientsRefused(
                "every recipient was refused: %s"
                % "; ".join("%s: %s" % (addr, r.describe()) for addr, r in transaction.refused.items()),
                transaction.refused,
            )

    def _on_data(self, reply):
        if reply.code != 354:
            self._end_transaction("the server refused DATA", reply)
        self._state = _SENDING_CONTENT
        self.stage = "message"

    def _on_message(self, reply):
        self._state = _READY
        if reply.code != 250:
            self._fail("the server refused the message", reply)
        self._transaction.reply = reply
        self.result = self._transaction
        self._transaction = None
