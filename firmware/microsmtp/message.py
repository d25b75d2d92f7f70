"""Build RFC 5322 messages with MIME parts for sending over SMTP.

Message turns addresses, a subject, a UTF-8 text body and attachments into bytes with
CRLF line ends and no line longer than 998 octets (RFC 5322 section 2.1.1). Header text
outside printable ASCII becomes RFC 2047 encoded words, non-ASCII or long attachment
names use RFC 2231 parameters, and the text body is sent as 7bit, quoted-printable or
base64 (RFC 2045). The output is not dot-stuffed. Every check runs in the constructor,
so an invalid value raises InvalidInputError before any byte is produced.

This module contains what a plain-text message with printable ASCII headers and common
addresses needs. Encoded words, quoted-printable and base64 live in microsmtp.encoding,
attachments and multipart bodies in microsmtp.mime, and the full input checks with their
error messages in microsmtp.checks. Those modules are imported only when a message needs
them, so they take no MicroPython heap otherwise.
"""

import time

from .errors import InvalidInputError

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


# Header line length without CRLF: RFC 5322 recommends 78, and RFC 2047 section 2 allows
# 76 on lines with encoded words.
_MAX_LINE = const(76)
_MAX_BODY_LINE = const(998)  # maximum line length in octets without CRLF
_MAX_WORD = const(75)  # maximum length of an RFC 2047 encoded word

# Header names written by Message, each between spaces, so a substring test matches whole
# names only (header names cannot contain spaces).
_OWN_HEADERS = " date from to cc bcc reply-to subject message-id mime-version content-type content-transfer-encoding "


def _check_text(field, value, body=False):
    """Return value if it is a str that UTF-8 can encode, else raise InvalidInputError.

    Header text must not contain CR, LF or NUL, and a body must not contain NUL.
    """
    if isinstance(value, str) and "\x00" not in value and (body or "\r" not in value and "\n" not in value):
        try:
            value.encode("utf-8")
            return value
        except UnicodeError:  # a lone surrogate (CPython only)
            pass
    from .checks import text_problem

    raise InvalidInputError(text_problem(field, value, body))


def _is_printable(text):
    for ch in text:
        if not " " <= ch <= "~":
            return False
    return True


def _random_hex(size):
    import binascii

    try:
        from os import urandom

        data = urandom(size)
    except (ImportError, OSError, NotImplementedError):  # no urandom on this port
        import random

        data = bytearray(size)
        for index in range(size):
            data[index] = random.getrandbits(8)
    return binascii.hexlify(data).decode()


def parse_address(value, field="address"):
    """Split an address into (display_name, addr_spec) and validate both.

    value is "user@example.com", "Name <user@example.com>" or a (name, addr_spec) pair.
    Quotes and escapes are removed from the name, and spaces and tabs around it stripped.
    The addr-spec must follow RFC 5321: a dot-atom or quoted local part of at most 64
    octets and a domain name or [address literal], at most 254 octets in all, with UTF-8
    allowed for SMTPUTF8 (RFC 6531). Raises InvalidInputError naming the problem and
    field, the argument that value came from.
    """
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise InvalidInputError("%s must be a (display_name, address) pair" % field)
        name = _check_text("display name of " + field, value[0] or "")
        addr = _check_text(field, value[1]).strip(" \t")
        if addr[:1] == "<" and addr[-1:] == ">":
            addr = addr[1:-1]
    else:
        addr = _check_text(field, value).strip(" \t")
        name = ""
        if addr.endswith(">"):
            # Split "name <addr>" at the first "<" outside quotes, and remove quotes and
            # backslash escapes from the name.
            chars = []
            quoted = escaped = False
            for index in range(len(addr)):
                ch = addr[index]
                if escaped:
                    escaped = False
                elif ch == "\\" and quoted:
                    escaped = True
                    continue
                elif ch == '"':
                    quoted = not quoted
                    continue
                elif ch == "<" and not quoted:
                    name = "".join(chars)
                    addr = addr[index + 1 : -1]
                    break
                chars.append(ch)
            else:
                raise InvalidInputError("%s %r has '>' but no '<' outside quotes" % (field, value))
    if not _is_common_address(addr):
        from .checks import addr_spec_problem

        reason = addr_spec_problem(addr)
        if reason:
            raise InvalidInputError("%s %r is not a valid address: %s" % (field, addr, reason))
    return name.strip(" \t"), addr


def _is_common_address(addr):
    """Return True if addr is a valid ASCII dot-atom@domain address.

    Every address accepted here is valid, so only the others, which are rare or invalid,
    load microsmtp.checks to be checked fully and to get an error message.
    """
    at = addr.rfind("@")
    if not 0 < at <= 64 or at == len(addr) - 1 or len(addr) > 254:
        return False
    previous = "."  # rejects a leading dot
    for ch in addr[:at]:
        # atext (RFC 5322 printable ASCII except specials) or a single dot
        if not "!" <= ch <= "~" or ch in '"(),:;<>@[\\]' or ch == previous == ".":
            return False
        previous = ch
    if previous == ".":
        return False
    for label in addr[at + 1 :].split("."):
        if not label or label[0] == "-" or label[-1] == "-":
            return False
        for ch in label:
            if not ("a" <= ch <= "z" or "A" <= ch <= "Z" or "0" <= ch <= "9" or ch == "-"):
                return False
    return True


def _address_list(value, field):
    """Parse one address or a list or tuple of addresses into (name, addr) pairs.

    A 2-tuple whose first item is None or not a valid address is one (display_name,
    address) pair, so ("Ann", "ann@example.com") is one recipient.
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [parse_address(value, field)]
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        first = value[0]
        # Text without "@" cannot be an address, so it is a display name without parsing.
        if first is None or isinstance(first, str) and "@" not in first:
            return [parse_address(value, field)]
        try:
            parse_address(first, field)
        except InvalidInputError:  # first is a display name
            return [parse_address(value, field)]
    try:
        items = list(value)
    except TypeError:
        raise InvalidInputError("%s must be an address or a list of addresses" % field) from None
    result = []
    for item in items:
        result.append(parse_address(item, field))
    return result


def _fold(name, tokens):
    """Return header field bytes, folding before tokens so lines stay within 76 octets.

    Each token starts with the white space that separates it from the previous one, so
    folding inserts CRLF there. Only a token longer than 76 octets makes a longer line.
    """
    out = [name.encode() + b":"]
    size = len(out[0])  # octets in the current line
    for token in tokens:
        data = token.encode("utf-8")
        if len(out) > 1 and size + len(data) > _MAX_LINE:
            out.append(b"\r\n")
            size = 0
        out.append(data)
        size += len(data)
    out.append(b"\r\n")
    return b"".join(out)


def _text_tokens(text, name, limit):
    """Split unstructured header text into folding tokens.

    Printable ASCII without "=?" and without leading or trailing spaces is sent as it is,
    unless a word with its preceding spaces would make a line longer than limit. Anything
    else becomes encoded words, which decoders turn back into the exact text.
    """
    if not text:
        return []
    if _is_printable(text) and "=?" not in text and text[0] != " " and text[-1] != " ":
        tokens = []
        gap = " "
        room = limit - len(name) - 1
        for word in text.split(" "):
            if not word:
                gap += " "
                continue
            if len(gap) + len(word) > room:
                break
            tokens.append(gap + word)
            gap = " "
            room = limit
        else:
            return tokens
    from .encoding import encoded_words

    return encoded_words(text, _MAX_LINE - len(name) - 2)


def _phrase_tokens(name, first_max):
    """Encode a display name as atoms, a quoted string or encoded words.

    Some readers, CPython's email package among them, decode an encoded word even inside
    a quoted string, so names containing "=?" are always encoded.
    """
    if _is_printable(name) and "=?" not in name:
        words = name.split(" ")
        # An atom is 1 to 70 characters of atext: printable ASCII except space and the
        # RFC 5322 specials.
        atoms = True
        for word in words:
            if not 0 < len(word) <= 70:
                atoms = False
        for ch in name:
            if ch in '"(),.:;<>@[\\]':
                atoms = False
        if atoms:
            tokens = []
            for word in words:
                tokens.append(" " + word)
            return tokens
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(quoted) <= 60:
            return [" " + quoted]
    from .encoding import encoded_words

    return encoded_words(name, first_max)


def _address_header(name, addresses):
    tokens = []
    last = len(addresses) - 1
    for index in range(last + 1):
        display, addr = addresses[index]
        if display:
            # Only the first word of the field shares its line with the field name.
            tokens.extend(_phrase_tokens(display, _MAX_LINE - len(name) - 2 if index == 0 else _MAX_WORD))
            tokens.append(" <" + addr + ">")
        else:
            tokens.append(" " + addr)
        if index < last:
            tokens[-1] += ","
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
        if month == 2:
            days = 29 if leap else 28
        else:
            # April, June, September and November have 30 days.
            days = 31 - (month - 1) % 7 % 2
    if not (1900 <= year <= 9999 and 1 <= day <= days and 0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 60):
        raise InvalidInputError("date tuple %r is not a valid UTC date and time" % (parts,))
    # Gregorian weekday by Sakamoto's method, 0 for Sunday. January and February count
    # as months of the previous year. The digits are the method's month offsets.
    shifted = year - 1 if month < 3 else year
    weekday = (shifted + shifted // 4 - shifted // 100 + shifted // 400 + int("032503514624"[month - 1]) + day) % 7
    return "%s, %02d %s %04d %02d:%02d:%02d +0000" % (
        "SunMonTueWedThuFriSat"[weekday * 3 : weekday * 3 + 3],
        day,
        "JanFebMarAprMayJunJulAugSepOctNovDec"[month * 3 - 3 : month * 3],
        year,
        hour,
        minute,
        second,
    )


def _text_part(text):
    """Return the Content-Type and Content-Transfer-Encoding lines and the body of text.

    Bare CR, bare LF and CRLF all end a line, and a final line break is added if missing.
    Pure ASCII with lines of at most 998 octets is 7bit, other text the shorter of
    quoted-printable and base64.
    """
    data = text.encode("utf-8")
    seven_bit = len(data) == len(text)  # pure ASCII
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if data and data[-1:] != b"\n":
        data += b"\n"
    start = 0
    while seven_bit and start < len(data):
        end = data.find(b"\n", start)
        seven_bit = end - start <= _MAX_BODY_LINE
        start = end + 1
    if seven_bit:
        encoding = b"7bit"
        data = data.replace(b"\n", b"\r\n")
    else:
        from .encoding import encode_text

        encoding, data = encode_text(data)
    return b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: " + encoding + b"\r\n", data


class Attachment:
    """A file attached to a Message, sent base64-encoded.

    content_type is "type/subtype" with optional "; name=value" parameters (token or
    quoted-string values). multipart/* and message/* are rejected because RFC 2045 and
    RFC 2046 forbid base64 for them. The checks and the encoding are in microsmtp.mime.
    """

    def __init__(self, filename, data, content_type="application/octet-stream"):
        from .mime import parse_attachment

        self._mime_type, self._params = parse_attachment(filename, data, content_type)
        self.filename = filename
        self.data = data
        self.content_type = content_type


def _check_headers(headers):
    if hasattr(headers, "items"):
        headers = headers.items()
    result = []
    for item in headers:
        name = item[0] if isinstance(item, (tuple, list)) and len(item) == 2 else None
        # Printable ASCII is valid text, so only the value needs _check_text.
        if not (
            isinstance(name, str)
            and name
            and _is_printable(name)
            and " " not in name
            and ":" not in name
            and " " + name.lower() + " " not in _OWN_HEADERS
        ):
            from .checks import header_problem

            raise InvalidInputError(header_problem(item))
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
    headers are extra (name, value) pairs or a dict, sent as unstructured text; pairs keep
    their order on every runtime, while MicroPython's dicts do not keep insertion order.
    Headers that Message writes itself are rejected. An empty subject writes no Subject field.
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
        self._sender = parse_address(sender, "sender")
        self._to = _address_list(to, "to")
        self._cc = _address_list(cc, "cc")
        bcc = _address_list(bcc, "bcc")
        self._reply_to = _address_list(reply_to, "reply_to")
        self._subject = _check_text("subject", subject)
        self._text = _check_text("text", text, body=True)
        self._headers = _check_headers(headers)
        if isinstance(attachments, Attachment):
            attachments = [attachments]
        self._attachments = list(attachments)
        if self._attachments:
            from .mime import check_attachments

            self._boundary = check_attachments(self._attachments, text)
        self._date = format_date(date)
        self.message_id = _message_id(message_id, self._sender[1])

        # Domains are case-insensitive, local parts are not (RFC 5321 section 2.4).
        self.recipients = []
        keys = []
        for _, addr in self._to + self._cc + bcc:
            at = addr.rfind("@")
            key = addr[:at] + addr[at:].lower()
            if key not in keys:
                keys.append(key)
                self.recipients.append(addr)
        if not self.recipients:
            raise InvalidInputError("message has no recipients: give an address in to, cc or bcc")
        self.needs_smtputf8 = False
        for _, addr in [self._sender] + self._to + self._cc + bcc + self._reply_to:
            if not _is_printable(addr):
                self.needs_smtputf8 = True

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
        Each header field is a piece of its own: the client copies the pieces into its
        write buffer, so no block of the heap has to hold the whole header.
        """
        if self._attachments:
            from .mime import multipart_chunks

            yield from multipart_chunks(self)
            return
        content_headers, body = _text_part(self._text)
        yield from self._head(content_headers)
        yield body

    def _head(self, content_headers):
        """Yield the header fields, then the empty line that ends the header."""
        yield b"Date: " + self._date.encode() + b"\r\n"
        yield _address_header("From", [self._sender])
        for name, addresses in (("Reply-To", self._reply_to), ("To", self._to), ("Cc", self._cc)):
            if addresses:
                yield _address_header(name, addresses)
        if self._subject:
            yield _fold("Subject", _text_tokens(self._subject, "Subject", _MAX_LINE))
        yield b"Message-ID: " + self.message_id.encode() + b"\r\n"
        for name, value in self._headers:
            yield _fold(name, _text_tokens(value, name, _MAX_BODY_LINE))
        yield b"MIME-Version: 1.0\r\n"
        yield content_headers
        yield b"\r\n"
