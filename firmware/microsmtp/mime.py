"""Attachments and multipart/mixed bodies for microsmtp.message.

Attachments are sent base64-encoded, with the file name in name and filename parameters
that are quoted strings when short printable ASCII and RFC 2231 parameters otherwise.
microsmtp.message imports this module only when a message has attachments.
"""

from .encoding import base64_lines
from .errors import InvalidInputError
from .message import Attachment, _check_text, _fold, _is_printable, _random_hex, _text_part

# Attachment octets per chunk: 4 base64 lines of 76 characters (312 bytes with CRLF).
# The chunk is a new block of the heap, and a fragmented heap of a board running for
# days finds small blocks where a larger one fails.
_B64_SLICE = 57 * 4
_TSPECIALS = '()<>@,;:\\"/[]?='
_ATTR_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&+-.^_`|~"  # RFC 5987 attr-char


def _is_token(text):
    if not text:
        return False
    for ch in text:
        if not "!" <= ch <= "~" or ch in _TSPECIALS:
            return False
    return True


def _is_byte_view(view):
    """Return True when the memoryview view is a plain run of bytes: one-byte items, no step."""
    if not getattr(view, "c_contiguous", True):
        return False
    # MicroPython's memoryview has no itemsize, so one item is measured by copying it.
    size = getattr(view, "itemsize", None)
    if size is None:
        size = len(bytes(view[:1])) if len(view) else 1
    return size == 1


def parse_attachment(filename, data, content_type):
    """Check the arguments of Attachment and return (MIME type, parameters).

    The MIME type is lower case, and the parameters are (attribute, value) pairs with
    the quotes removed. Raises InvalidInputError naming the invalid argument.
    """
    _check_text("attachment filename", filename)
    if not filename:
        raise InvalidInputError("attachment filename is empty: give a file name")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInputError("data of attachment %r must be bytes, not %s" % (filename, type(data).__name__))
    if isinstance(data, memoryview) and not _is_byte_view(data):
        # The encoder slices by items: wider items would give base64 lines over 76
        # characters, and a view with a step cannot be encoded at all.
        raise InvalidInputError(
            "data of attachment %r is a memoryview of items wider than one byte or with a step; pass bytes(data)"
            % filename
        )
    field = "attachment content type"
    parts = _check_text(field, content_type).split(";")
    mime_type = parts[0].strip(" \t").lower()
    slash = mime_type.find("/")
    if slash < 0 or not _is_token(mime_type[:slash]) or not _is_token(mime_type[slash + 1 :]):
        raise InvalidInputError("%s %r is not of the form type/subtype" % (field, content_type))
    if mime_type[:slash] in ("multipart", "message"):
        raise InvalidInputError(
            "%s %r cannot be sent base64-encoded: use application/octet-stream" % (field, content_type)
        )
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
                "%s %r has an invalid parameter %r (the file name is set by filename)" % (field, content_type, part)
            )
        params.append((attribute, param_value))
    return mime_type, params


def check_attachments(items, text):
    """Replace each (filename, data[, content_type]) item of the list by an Attachment.

    Returns a multipart boundary that does not occur in text. Only a 7bit text part can
    contain it, because quoted-printable and base64 never contain "=_".
    """
    for index in range(len(items)):
        item = items[index]
        if not isinstance(item, Attachment):
            if not isinstance(item, (tuple, list)) or not 2 <= len(item) <= 3:
                raise InvalidInputError("attachment must be an Attachment or (filename, data[, content_type])")
            items[index] = Attachment(*item)
    boundary = "=_" + _random_hex(12)
    while boundary in text:
        boundary = "=_" + _random_hex(12)
    return boundary


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


def multipart_chunks(message):
    """Yield a Message with attachments as multipart/mixed, one base64 slice at a time."""
    boundary = message._boundary
    delimiter = ("--" + boundary).encode()
    yield from message._head(_params_header("Content-Type", "multipart/mixed", [("boundary", boundary)]))
    # Small pieces, not joined: the client copies them into its write buffer.
    if message._text:
        content_headers, body = _text_part(message._text)
        yield delimiter + b"\r\n"
        yield content_headers
        yield b"\r\n"
        yield body
        body = None
        # The CRLF before a delimiter belongs to the delimiter, so the body keeps its own.
        yield b"\r\n"
    for attachment in message._attachments:
        filename = attachment.filename
        yield delimiter + b"\r\n"
        yield _params_header("Content-Type", attachment._mime_type, attachment._params + [("name", filename)])
        yield _params_header("Content-Disposition", "attachment", [("filename", filename)])
        yield b"Content-Transfer-Encoding: base64\r\n\r\n"
        data = attachment.data
        if len(data) == 0:
            yield b"\r\n"
        view = memoryview(data)
        for start in range(0, len(data), _B64_SLICE):
            yield base64_lines(view[start : start + _B64_SLICE])
    yield delimiter + b"--\r\n"
