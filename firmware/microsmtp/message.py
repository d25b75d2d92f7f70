"""Build RFC 5322 messages with MIME parts for sending over SMTP.

Message turns addresses, a subject, a UTF-8 text body and attachments into bytes with
CRLF line ends and no line longer than 998 octets (RFC 5322 section 2.1.1). Header text
outside printable ASCII becomes RFC 2047 encoded words, non-ASCII or long attachment
names use RFC 2231 parameters, and the text body is sent as 7bit, quoted-printable or
base64 (RFC 2045). The output is not dot-stuffed. Every check runs in the constructor,
so an invalid value raises InvalidInputError before any byte is produced.
"""

import binascii
import random
import time

try:
    from os import urandom
except ImportError:
    urandom = None

from .errors import InvalidInputError

# Header line length without CRLF: RFC 5322 recommends 78, and RFC 2047 section 2 allows
# 76 on lines with encoded words.
_MAX_LINE = 76
_MAX_WORD = 75  # maximum length of an RFC 2047 encoded word
_MAX_BODY_LINE = 998  # maximum line length in octets without CRLF
_B64_SLICE = 57 * 32  # attachment octets per chunk: 32 base64 lines of 76 characters
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_ATEXT = _ALNUM + "!#$%&'*+-/=?^_`{|}~"
_Q_SAFE = _ALNUM + "!*+-/"  # RFC 2047 section 5 (3): Q characters allowed in a phrase
_ATTR_SAFE = _ALNUM + "!#$&+-.^_`|~"  # RFC 5987 attr-char
_TSPECIALS = '()<>@,;:\\"/[]?='
_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_OWN_HEADERS = (
    "date",
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
)


def _check_text(field, value, body=False):
    """Return value if it is a str that UTF-8 can encode, else raise InvalidInputError.

    Header text must not contain CR, LF or NUL, and a body must not contain NUL.
    """
    if not isinstance(value, str):
        raise InvalidInputError("%s must be a str, not %s" % (field, type(value).__name__))
    if body and "\x00" in value:
        raise InvalidInputError("%s contains a NUL character: remove it" % field)
    if not body and ("\x00" in value or "\r" in value or "\n" in value):
        raise InvalidInputError("%s contains CR, LF or NUL, which could inject header lines: remove them" % field)
    try:
        value.encode("utf-8")
    except UnicodeError:
        raise InvalidInputError("%s contains a lone surrogate: fix the text" % field) from None
    return value


def _is_printable(text):
    return all(" " <= ch <= "~" for ch in text)


def _is_token(text):
    return text != "" and all("!" <= ch <= "~" and ch not in _TSPECIALS for ch in text)


def _random_hex(size):
    try:
        data = urandom(size)
    except (TypeError, OSError, NotImplementedError):  # no urandom on this port
        data = bytes(bytearray([random.getrandbits(8) for _ in range(size)]))
    return binascii.hexlify(data).decode()


def parse_address(value):
    """Split an address into (display_name, addr_spec) and validate both.

    value is "user@example.com", "Name <user@example.com>" or a (name, addr_spec) pair.
    Quotes and escapes are removed from the name, and spaces and tabs around it stripped.
    The addr-spec must follow RFC 5321: a dot-atom or quoted local part of at most 64
    octets and a domain name or [address literal], at most 254 octets in all, with UTF-8
    allowed for SMTPUTF8 (RFC 6531). Raises InvalidInputError naming the problem.
    """
    return _parse_address(value, "address")


def _parse_address(value, field):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise InvalidInputError("%s must be a (display_name, address) pair" % field)
        name = _check_text("display name of " + field, value[0] or "")
        addr = _check_text(field, value[1]).strip(" \t")
        if addr[:1] == "<" and addr[-1:] == ">":
            addr = addr[1:-1]
    else:
        addr = _check_text(field, value).strip(" \t")
        mailbox = _split_mailbox(addr) if addr.endswith(">") else ("", addr)
        if mailbox is None:
            raise InvalidInputError("%s %r has '>' but no '<' outside quotes" % (field, value))
        name, addr = mailbox
    _check_addr_spec(field, addr)
    return name.strip(" \t"), addr


def _split_mailbox(text):
    """Split "name <addr>" at the first "<" outside quotes into (name, addr).

    Quotes and backslash escapes in the name are removed. Returns None without a "<".
    """
    name = []
    quoted = escaped = False
    for index in range(len(text)):
        ch = text[index]
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
            continue
        elif ch == '"':
            quoted = not quoted
            continue
        elif ch == "<" and not quoted:
            return "".join(name), text[index + 1 : -1]
        name.append(ch)
    return None


def _check_addr_spec(field, addr):
    def fail(reason):
        raise InvalidInputError("%s %r is not a valid address: %s" % (field, addr, reason))

    at = addr.rfind("@")
    if not addr:
        fail("it is empty, give an address such as user@example.com")
    if at < 0:
        fail("'@' is missing")
    local, domain = addr[:at], addr[at + 1 :]
    if not local or not domain:
        fail("the part before or after '@' is empty")
    if len(local.encode("utf-8")) > 64 or len(addr.encode("utf-8")) > 254:
        fail("the local part exceeds 64 octets or the address exceeds 254 octets")
    for ch in addr:
        # Unicode-aware readers such as Python's str.splitlines() end lines at NEL
        # (U+0085), U+2028 and U+2029, so these could split a header.
        if "\x7f" <= ch <= "\x9f" or ch in "\u2028\u2029":
            fail("it contains a control character or a Unicode line separator")
    if local[0] == '"':
        escaped = False
        for ch in local[1:-1]:
            if ch < " " or ch == "\x7f":
                fail("the quoted local part contains a control character")
            if ch == '"' and not escaped:
                fail("the quoted local part contains an unescaped '\"'")
            escaped = ch == "\\" and not escaped
        if len(local) < 2 or local[-1] != '"' or escaped:
            fail("the quoted local part is not closed by '\"'")
    else:
        for ch in local:
            if not (ch in _ATEXT or ch == "." or ch >= "\x80"):
                fail("%r is not allowed in the local part unless it is quoted" % ch)
        if local[0] == "." or local[-1] == "." or ".." in local:
            fail("the local part has a leading, trailing or double dot")
    if domain[0] == "[" and domain[-1] == "]":
        if len(domain) == 2:
            fail("the address literal is empty")
        for ch in domain[1:-1]:
            if not "!" <= ch <= "~" or ch in "[]\\":
                fail("the address literal contains %r" % ch)
        return
    for label in domain.split("."):
        if not label or label[0] == "-" or label[-1] == "-":
            fail("the domain has an empty label or a label starting or ending with '-'")
        for ch in label:
            if not (ch in _ALNUM or ch == "-" or ch >= "\x80"):
                fail("%r is not allowed in a domain name" % ch)


def _address_list(value, field):
    """Parse one address or a list or tuple of addresses into (name, addr) pairs.

    A 2-tuple whose first item is None or not a valid address is one (display_name,
    address) pair, so ("Ann", "ann@example.com") is one recipient.
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [_parse_address(value, field)]
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        try:
            _parse_address(value[0], field)
        except InvalidInputError:  # value[0] is None or a display name
            return [_parse_address(value, field)]
    try:
        items = list(value)
    except TypeError:
        raise InvalidInputError("%s must be an address or a list of addresses" % field) from None
    return [_parse_address(item, field) for item in items]


def _fold(name, tokens):
    """Return header field bytes, folding before tokens so lines stay within 76 octets.

    Each token starts with the white space that separates it from the previous one, so
    folding inserts CRLF there. Only a token longer than 76 octets makes a longer line.
    """
    lines = [name.encode() + b":"]
    for index in range(len(tokens)):
        data = tokens[index].encode("utf-8")
        if index and len(lines[-1]) + len(data) > _MAX_LINE:
            lines.append(b"")
        lines[-1] += data
    return b"\r\n".join(lines) + b"\r\n"


def _q_piece(byte):
    ch = chr(byte)
    if ch in _Q_SAFE:
        return ch
    return "_" if ch == " " else "=%02X" % byte


def _encoded_words(text, first_max):
    """Encode text as RFC 2047 UTF-8 encoded words, each preceded by a space.

    Each word contains only whole characters and is at most 75 characters long, the
    first at most first_max. Q encoding is used when it is not longer than B encoding.
    """
    data = text.encode("utf-8")
    use_q = sum(len(_q_piece(byte)) for byte in data) <= (len(data) + 2) // 3 * 4
    limit = min(max(first_max, 24), _MAX_WORD) - 12  # 12 is the length of "=?utf-8?q?" "?="
    words = []
    pieces = []  # Q text pieces or raw UTF-8 bytes of the current word
    size = 0  # Q characters, or raw octets for B
    for ch in text:
        piece = ch.encode("utf-8")
        if use_q:
            piece = "".join([_q_piece(byte) for byte in piece])
        grown = size + len(piece)
        if pieces and (grown if use_q else (grown + 2) // 3 * 4) > limit:
            words.append(_finish_word(pieces, use_q))
            pieces = []
            grown = len(piece)
            limit = _MAX_WORD - 12
        pieces.append(piece)
        size = grown
    if pieces:
        words.append(_finish_word(pieces, use_q))
    return words


def _finish_word(pieces, use_q):
    if use_q:
        return " =?utf-8?q?" + "".join(pieces) + "?="
    return " =?utf-8?b?" + binascii.b2a_base64(b"".join(pieces)).decode().rstrip("\n") + "?="


def _text_tokens(text, name, limit):
    """Split unstructured header text into folding tokens.

    Printable ASCII without "=?" and without leading or trailing spaces is sent as it is,
    unless a word with its preceding spaces would make a line longer than limit. Anything
    else becomes encoded words, which decoders turn back into the exact text.
    """
    first_max = _MAX_LINE - len(name) - 2
    if not text:
        return []
    if not _is_printable(text) or "=?" in text or text[0] == " " or text[-1] == " ":
        return _encoded_words(text, first_max)
    tokens = []
    gap = " "
    room = limit - len(name) - 1
    for word in text.split(" "):
        if not word:
            gap += " "
            continue
        if len(gap) + len(word) > room:
            return _encoded_words(text, first_max)
        tokens.append(gap + word)
        gap = " "
        room = limit
    return tokens


def _phrase_tokens(name, first_max):
    """Encode a display name as atoms, a quoted string or encoded words.

    Some readers, CPython's email package among them, decode an encoded word even inside
    a quoted string, so names containing "=?" are always encoded.
    """
    if _is_printable(name) and "=?" not in name:
        words = name.split(" ")
        plain = True
        for word in words:
            plain = plain and 0 < len(word) <= 70 and all(ch in _ATEXT for ch in word)
        if plain:
            return [" " + word for word in words]
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(quoted) <= 60:
            return [" " + quoted]
    return _encoded_words(name, first_max)


def _address_header(name, addresses):
    tokens = []
    first_max = _MAX_LINE - len(name) - 2
    for index in range(len(addresses)):
        display, addr = addresses[index]
        if display:
            tokens.extend(_phrase_tokens(display, first_max if index == 0 else _MAX_WORD))
            tokens.append(" <" + addr + ">")
        else:
            tokens.append(" " + addr)
        if index < len(addresses) - 1:
            tokens[-1] += ","
    return _fold(name, tokens)


def _param_tokens(attribute, value):
    """Encode a MIME parameter: quoted if short printable ASCII, otherwise RFC 2231.

    '"' and '\\' also select RFC 2231, because readers differ on quoted-string escapes.
    Long values are split into numbered continuations at character boundaries.
    """
    if _is_printable(value) and len(value) <= 60 and '"' not in value and "\\" not in value:
        return [' %s="%s"' % (attribute, value)]
    segments = ["utf-8''"]
    for ch in value:
        piece = ""
        for byte in ch.encode("utf-8"):
            piece += chr(byte) if chr(byte) in _ATTR_SAFE else "%%%02X" % byte
        if len(segments[-1]) + len(piece) > 50:
            segments.append("")
        segments[-1] += piece
    if len(segments) == 1:
        return [" %s*=%s" % (attribute, segments[0])]
    tokens = []
    for index in range(len(segments)):
        separator = ";" if index < len(segments) - 1 else ""
        tokens.append(" %s*%d*=%s%s" % (attribute, index, segments[index], separator))
    return tokens


def _params_header(name, value, params):
    tokens = [" " + value]
    for attribute, param_value in params:
        tokens[-1] += ";"
        tokens.extend(_param_tokens(attribute, param_value))
    return _fold(name, tokens)


def format_date(value=None):
    """Format a UTC time as an RFC 5322 date such as "Fri, 04 Dec 2026 20:10:26 +0000".

    value is None for now, seconds since the platform epoch (1970 on CPython and most
    ports, 2000 on ESP32), or a time tuple such as time.gmtime() returns. Only the first
    six items of a tuple are used, because the weekday is computed from the date.
    """
    if value is None:
        parts = time.gmtime()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        parts = time.gmtime(int(value))
    else:
        parts = value
    try:
        year, month, day, hour, minute, second = parts[:6]
    except (TypeError, ValueError):
        raise InvalidInputError("date must be None, seconds or a time.gmtime() tuple") from None
    for item in (year, month, day, hour, minute, second):
        if not isinstance(item, int) or isinstance(item, bool):
            raise InvalidInputError("date tuple %r must contain integers" % (parts,))
    days = 0
    if 1 <= month <= 12:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        days = 29 if month == 2 and leap else _MONTH_DAYS[month - 1]
    if not (1900 <= year <= 9999 and 1 <= day <= days and 0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 60):
        raise InvalidInputError("date tuple %r is not a valid UTC date and time" % (parts,))
    # Gregorian weekday by Sakamoto's method, 0 for Sunday. January and February count
    # as months of the previous year.
    shifted = year - 1 if month < 3 else year
    weekday = (
        shifted + shifted // 4 - shifted // 100 + shifted // 400 + (0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4)[month - 1] + day
    ) % 7
    return "%s, %02d %s %04d %02d:%02d:%02d +0000" % (
        _DAYS[weekday],
        day,
        _MONTHS[month - 1],
        year,
        hour,
        minute,
        second,
    )


def _text_body(text):
    """Return (transfer encoding, body bytes) for text, with CRLF line ends.

    Bare CR, bare LF and CRLF all end a line, and a final line break is added if missing.
    Pure ASCII with lines of at most 998 octets is 7bit, other text the shorter of
    quoted-printable and base64.
    """
    data = text.encode("utf-8")
    ascii_only = len(data) == len(text)
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    lines = data.split(b"\n")
    data = None
    if lines[-1] == b"":
        lines.pop()
    if not lines:
        return "7bit", b""
    if ascii_only and max(len(line) for line in lines) <= _MAX_BODY_LINE:
        return "7bit", b"\r\n".join(lines) + b"\r\n"
    qp_lines = []
    for line in lines:
        _quote_line(line, qp_lines)
    qp_size = sum(len(line) + 2 for line in qp_lines)
    b64_chars = (sum(len(line) + 2 for line in lines) + 2) // 3 * 4
    if qp_size <= b64_chars + (b64_chars + 75) // 76 * 2:
        return "quoted-printable", ("\r\n".join(qp_lines) + "\r\n").encode()
    qp_lines = None
    return "base64", b"".join(_base64_lines(b"\r\n".join(lines) + b"\r\n"))


def _quote_line(line, out):
    """Append the quoted-printable lines for one text line to out.

    "=", non-ASCII and control octets, and a space or tab at the end of the line are
    encoded. Soft line breaks keep every line within 76 characters.
    """
    pieces = []
    size = 0
    last = len(line) - 1
    for index in range(len(line)):
        byte = line[index]
        if (33 <= byte <= 126 and byte != 61) or (byte in (9, 32) and index != last):
            piece = chr(byte)
        else:
            piece = "=%02X" % byte
        if index == 0 and line[:5] == b"From ":
            piece = "=46"  # keeps mbox readers from mangling the line into ">From "
        if size + len(piece) > 75:
            out.append("".join(pieces) + "=")
            pieces = []
            size = 0
        pieces.append(piece)
        size += len(piece)
    out.append("".join(pieces))


def _base64_lines(data):
    """Yield data as base64 lines of 76 characters with CRLF, 57 input octets a line."""
    for start in range(0, len(data), 57):
        yield binascii.b2a_base64(data[start : start + 57])[:-1] + b"\r\n"


class Attachment:
    """A file attached to a Message, sent base64-encoded.

    content_type is "type/subtype" with optional "; name=value" parameters (token or
    quoted-string values). multipart/* and message/* are rejected because RFC 2045 and
    RFC 2046 forbid base64 for them.
    """

    def __init__(self, filename, data, content_type="application/octet-stream"):
        _check_text("attachment filename", filename)
        if not filename:
            raise InvalidInputError("attachment filename is empty: give a file name")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidInputError("data of attachment %r must be bytes, not %s" % (filename, type(data).__name__))
        self.filename = filename
        self.data = data
        self.content_type = content_type
        self._mime_type, self._params = _parse_content_type(content_type)

    def _header_bytes(self):
        return (
            _params_header("Content-Type", self._mime_type, self._params + [("name", self.filename)])
            + _params_header("Content-Disposition", "attachment", [("filename", self.filename)])
            + b"Content-Transfer-Encoding: base64\r\n\r\n"
        )


def _parse_content_type(value):
    field = "attachment content type"
    parts = _check_text(field, value).split(";")
    mime_type = parts[0].strip(" \t").lower()
    slash = mime_type.find("/")
    if slash < 0 or not _is_token(mime_type[:slash]) or not _is_token(mime_type[slash + 1 :]):
        raise InvalidInputError("%s %r is not of the form type/subtype" % (field, value))
    if mime_type[:slash] in ("multipart", "message"):
        raise InvalidInputError("%s %r cannot be sent base64-encoded: use application/octet-stream" % (field, value))
    params = []
    for part in parts[1:]:
        part = part.strip(" \t")
        if not part:
            continue
        equals = part.find("=")
        attribute = part[:equals].strip(" \t").lower() if equals > 0 else ""
        param_value = part[equals + 1 :].strip(" \t")
        quoted = len(param_value) >= 2 and param_value[0] == param_value[-1] == '"'
        if quoted:
            param_value = param_value[1:-1]
        valid = (
            _is_token(param_value)
            or quoted
            and _is_printable(param_value)
            and '"' not in param_value
            and "\\" not in param_value
        )
        if not _is_token(attribute) or not valid or attribute == "name":
            raise InvalidInputError(
                "%s %r has an invalid parameter %r (the file name is set by filename)" % (field, value, part)
            )
        params.append((attribute, param_value))
    return mime_type, params


def _check_headers(headers):
    if hasattr(headers, "items"):
        headers = headers.items()
    result = []
    for item in headers:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InvalidInputError("headers must be (name, value) pairs, got %r" % (item,))
        name = _check_text("header name", item[0])
        if not name or not _is_printable(name) or " " in name or ":" in name:
            raise InvalidInputError("header name %r is invalid: use printable ASCII without spaces or ':'" % name)
        if name.lower() in _OWN_HEADERS:
            raise InvalidInputError("header %s is written by Message: set it with the Message argument" % name)
        result.append((name, _check_text("value of header " + name, item[1])))
    return result


def _message_id(value, sender):
    if value is None:
        domain = sender[sender.rfind("@") + 1 :]
        if not _is_printable(domain):
            domain = "localhost"
        return "<%s.%d@%s>" % (_random_hex(12), int(time.time()), domain)
    inner = _check_text("message_id", value).strip(" \t")
    if inner[:1] == "<" and inner[-1:] == ">":
        inner = inner[1:-1]
    halves = inner.split("@")
    if (
        len(halves) != 2
        or not halves[0]
        or not halves[1]
        or not _is_printable(inner)
        or " " in inner
        or "<" in inner
        or ">" in inner
    ):
        raise InvalidInputError(
            "message_id %r is invalid: use the form <unique-part@domain> in printable ASCII" % value
        )
    return "<" + inner + ">"


class Message:
    """An email with a UTF-8 text body and optional attachments.

    sender is "addr", "Name <addr>" or a (name, addr) pair. to, cc, bcc and reply_to are
    each one such address or a list of them. Bcc recipients get the message but no header.
    date is None (now), seconds since the platform epoch or a time.gmtime() tuple in UTC.
    headers are extra (name, value) pairs or a dict, sent as unstructured text. Headers
    that Message writes itself are rejected. An empty subject writes no Subject field.
    Raises InvalidInputError for any value that cannot be sent safely.
    """

    def __init__(
        self,
        sender,
        to,
        subject="",
        text="",
        cc=(),
        bcc=(),
        reply_to=None,
        attachments=(),
        date=None,
        message_id=None,
        headers=(),
    ):
        self._sender = _parse_address(sender, "sender")
        self._to = _address_list(to, "to")
        self._cc = _address_list(cc, "cc")
        self._bcc = _address_list(bcc, "bcc")
        self._reply_to = _address_list(reply_to, "reply_to")
        self._subject = _check_text("subject", subject)
        self._text = _check_text("text", text, body=True)
        self._headers = _check_headers(headers)
        if isinstance(attachments, Attachment):
            attachments = [attachments]
        self._attachments = []
        for item in attachments:
            if not isinstance(item, Attachment):
                if not isinstance(item, (tuple, list)) or not 2 <= len(item) <= 3:
                    raise InvalidInputError("attachment must be an Attachment or (filename, data[, content_type])")
                item = Attachment(*item)
            self._attachments.append(item)
        self._date = format_date(date)
        self.message_id = _message_id(message_id, self._sender[1])

        # Domains are case-insensitive, local parts are not (RFC 5321 section 2.4).
        self.recipients = []
        keys = []
        for _, addr in self._to + self._cc + self._bcc:
            key = addr[: addr.rfind("@")] + addr[addr.rfind("@") :].lower()
            if key not in keys:
                keys.append(key)
                self.recipients.append(addr)
        if not self.recipients:
            raise InvalidInputError("message has no recipients: give an address in to, cc or bcc")
        everyone = [self._sender] + self._to + self._cc + self._bcc + self._reply_to
        self.needs_smtputf8 = not all(_is_printable(addr) for _, addr in everyone)

        # Only a 7bit text part can contain the boundary: QP and base64 never contain "=_".
        self._boundary = None
        while self._attachments and (self._boundary is None or self._boundary in text):
            self._boundary = "=_" + _random_hex(12)

    @property
    def sender_address(self):
        """Bare sender address for MAIL FROM."""
        return self._sender[1]

    def to_bytes(self):
        """Return the whole message with CRLF line ends, not dot-stuffed."""
        return b"".join(list(self.chunks()))

    def chunks(self):
        """Yield the message in pieces, encoding attachments a slice at a time.

        The pieces join to to_bytes(). Besides the attachment data that the caller
        already holds, only the encoded text body and one base64 slice are in memory.
        """
        if not self._attachments:
            encoding, body = _text_body(self._text)
            yield self._head(
                b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: " + encoding.encode() + b"\r\n"
            )
            yield body
            return
        delimiter = ("--" + self._boundary).encode()
        yield self._head(_params_header("Content-Type", "multipart/mixed", [("boundary", self._boundary)]))
        if self._text:
            encoding, body = _text_body(self._text)
            # The CRLF before a delimiter belongs to the delimiter, so the body keeps its own.
            yield (
                delimiter + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n\r\n" + body + b"\r\n"
            )
        for attachment in self._attachments:
            yield delimiter + b"\r\n" + attachment._header_bytes()
            data = attachment.data
            if len(data) == 0:
                yield b"\r\n"
            for start in range(0, len(data), _B64_SLICE):
                yield b"".join(list(_base64_lines(data[start : start + _B64_SLICE])))
        yield delimiter + b"--\r\n"

    def _head(self, content_headers):
        parts = [b"Date: " + self._date.encode() + b"\r\n", _address_header("From", [self._sender])]
        for name, addresses in (("Reply-To", self._reply_to), ("To", self._to), ("Cc", self._cc)):
            if addresses:
                parts.append(_address_header(name, addresses))
        if self._subject:
            parts.append(_fold("Subject", _text_tokens(self._subject, "Subject", _MAX_LINE)))
        parts.append(b"Message-ID: " + self.message_id.encode() + b"\r\n")
        for name, value in self._headers:
            parts.append(_fold(name, _text_tokens(value, name, _MAX_BODY_LINE)))
        parts.append(b"MIME-Version: 1.0\r\n")
        parts.append(content_headers)
        parts.append(b"\r\n")
        return b"".join(parts)
