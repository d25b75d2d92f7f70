"""SMTP reply parser: bytes in, complete replies out (RFC 5321 section 4.2).

A reply is one or more lines ``CODE-text`` ending with one line ``CODE text`` (or a bare
``CODE``). The parser keeps a byte buffer, so it can be fed any split of the stream, and
returns a ``Reply`` once the last line of a reply has arrived. It never blocks and never
reads a socket.

Bounds protect a board's RAM from a broken or hostile server: one line may be at most
``max_line`` octets and one whole reply at most ``max_reply`` octets, so an endless
``250-`` continuation ends in an error instead of exhausting memory.
"""

from .errors import ProtocolError

try:
    from micropython import const
except ImportError:
    # Every const() here wraps an int; int() returns it unchanged, and unlike a def it
    # adds no function to the module that MicroPython loads.
    const = int


# RFC 5321 section 4.5.3.1.5 sets 512 octets for a reply line; real servers stay well
# inside that. Twice the limit leaves room for long enhanced-code texts.
MAX_LINE = const(1024)
# Large enough for the longest EHLO replies seen from big providers (about 20 lines).
MAX_REPLY = const(8192)

_CR = const(13)
_LF = const(10)
_TAB = const(9)
_DEL = const(127)


class Reply:
    """One complete server reply: ``code``, optional ``enhanced`` status, text ``lines``."""

    def __init__(self, code, lines, enhanced=None):
        self.code = code
        self.lines = lines
        self.enhanced = enhanced

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def positive(self):
        return 200 <= self.code < 400

    @property
    def transient(self):
        return 400 <= self.code < 500

    def __repr__(self):
        return "Reply(%d, %s)" % (self.code, repr(self.text))

    def describe(self):
        """Format the reply as one line for error messages and logs."""
        enhanced = self.enhanced + " " if self.enhanced else ""
        return "%d %s%s" % (self.code, enhanced, " / ".join(self.lines))


def _parse_enhanced(text, klass):
    """Split an RFC 3463 enhanced status code off ``text``; return (code or None, rest).

    The code is taken only when its class digit matches the reply's first digit, as
    RFC 2034 requires, so a text that merely starts with digits stays untouched.
    """
    end = text.find(" ")
    word = text if end < 0 else text[:end]
    parts = word.split(".")
    if len(parts) != 3 or parts[0] != klass:
        return None, text
    if not (1 <= len(parts[1]) <= 3 and 1 <= len(parts[2]) <= 3):
        return None, text
    if not (parts[1].isdigit() and parts[2].isdigit()):
        return None, text
    return word, "" if end < 0 else text[end + 1 :]


class ReplyParser:
    """Incremental parser for SMTP replies.

    Feed received bytes with ``feed()``; call ``next_reply()`` until it returns None,
    which means more data is needed. A malformed reply raises ``ProtocolError``; after
    that the parser stays broken, because the stream can no longer be framed safely.
    """

    def __init__(self, max_line=MAX_LINE, max_reply=MAX_REPLY):
        self.max_line = max_line
        self.max_reply = max_reply
        self._buffer = b""
        self._code = 0
        self._lines = []
        self._reply_size = 0
        self._error = None

    @property
    def buffered(self):
        """Number of received octets not yet returned as part of a reply."""
        return len(self._buffer) + self._reply_size

    def feed(self, data):
        if data:
            self._buffer += data

    def next_reply(self):
        """Return the next complete Reply, or None when more data is needed."""
        if self._error is not None:
            raise self._error
        try:
            while True:
                reply = self._next_line()
                if reply is not None:
                    # False means that no complete line is buffered.
                    return reply or None
        except ProtocolError as exc:
            # The stream can no longer be framed safely, so the parser stays broken.
            self._error = exc
            self._buffer = b""
            self._lines = []
            raise

    def _next_line(self):
        # Take one line off the buffer; return the Reply it completes, None after a
        # continuation line, or False when the buffer contains no complete line.
        buffer = self._buffer
        end = buffer.find(b"\n")
        # A line still without its LF is checked too, so that a peer that never sends
        # LF cannot grow the buffer without bound.
        size = len(buffer) if end < 0 else end + 1
        if size > self.max_line:
            raise ProtocolError(
                "server reply line longer than %d octets; the server is broken or this is not an SMTP server"
                % self.max_line
            )
        if self._reply_size + size > self.max_reply:
            raise ProtocolError("server reply longer than %d octets" % self.max_reply)
        if end < 0:
            return False
        line = buffer[:end]
        self._buffer = buffer[end + 1 :]
        if line.endswith(b"\r"):
            line = line[:-1]
        self._reply_size += size

        for byte in line:
            if byte == _CR:
                raise ProtocolError("server reply contains a CR without LF: %s" % repr(line[:80]))
            if (byte < 32 and byte != _TAB) or byte == _DEL:
                raise ProtocolError("server reply contains control character 0x%02x: %s" % (byte, repr(line[:80])))

        # 1. The code: three digits, first 2-5, second 0-5 (RFC 5321 section 4.2).
        if len(line) < 3 or not (50 <= line[0] <= 53 and 48 <= line[1] <= 53 and 48 <= line[2] <= 57):
            raise ProtocolError("malformed server reply (expected a 3-digit code 200-559): %s" % repr(line[:80]))
        code = int(line[:3])

        # 2. The separator: "-" continues the reply; " " or nothing ends it.
        if len(line) == 3:
            last = True
            text = b""
        elif line[3] == 45:  # "-"
            last = False
            text = line[4:]
        elif line[3] == 32:  # " "
            last = True
            text = line[4:]
        else:
            raise ProtocolError("malformed server reply (no space or hyphen after the code): %s" % repr(line[:80]))

        if self._lines and code != self._code:
            raise ProtocolError("server reply code changed from %d to %d inside one reply" % (self._code, code))
        self._code = code
        # Reply text is ASCII by RFC 5321, but servers with SMTPUTF8 may send UTF-8.
        # Bytes that are not valid UTF-8 become "?", so one odd byte never costs the reply.
        try:
            text = text.decode("utf-8")
        except UnicodeError:
            chars = bytearray(text)
            for i in range(len(chars)):
                if chars[i] > 127:
                    chars[i] = 63  # "?"
            text = bytes(chars).decode()
        self._lines.append(text)
        if not last:
            return None

        # 3. A complete reply; the enhanced code is read from the first line only.
        lines = self._lines
        enhanced, rest = _parse_enhanced(lines[0], chr(line[0]))
        if enhanced is not None:
            lines[0] = rest
            for i in range(1, len(lines)):
                other, rest = _parse_enhanced(lines[i], chr(line[0]))
                if other == enhanced:
                    lines[i] = rest
        self._lines = []
        self._reply_size = 0
        return Reply(code, lines, enhanced)
