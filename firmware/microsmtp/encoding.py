"""RFC 2047 encoded words, quoted-printable and base64 for microsmtp.message, and PEM.

Header text outside printable ASCII, or with a word too long to fold, becomes encoded
words, and a body with non-ASCII text or lines over 998 octets becomes quoted-printable
or base64 (RFC 2045). microsmtp.message imports this module only when a message needs it,
and the TLS setup only for CA roots given as PEM text (pem_to_der()) or read from a CA
file (ca_file_roots()).
"""

import binascii

from .errors import ConfigError

_MAX_WORD = 75  # maximum length of an RFC 2047 encoded word


def _q_piece(byte):
    """Return one octet in RFC 2047 Q encoding, allowed in a phrase (section 5 (3))."""
    ch = chr(byte)
    if "a" <= ch <= "z" or "A" <= ch <= "Z" or "0" <= ch <= "9" or ch in "!*+-/":
        return ch
    return "_" if ch == " " else "=%02X" % byte


def encoded_words(text, first_max):
    """Encode text as RFC 2047 UTF-8 encoded words, each preceded by a space.

    Each word contains only whole characters and is at most 75 characters long, the
    first at most first_max. Q encoding is used when it is not longer than B encoding.
    """
    data = text.encode("utf-8")
    q_size = 0
    for byte in data:
        q_size += len(_q_piece(byte))
    use_q = q_size <= (len(data) + 2) // 3 * 4
    limit = min(max(first_max, 24), _MAX_WORD) - 12  # 12 is the length of "=?utf-8?q?" "?="
    words = []
    pieces = []  # Q text pieces or raw UTF-8 bytes of the current word
    size = 0  # Q characters, or raw octets for B
    for ch in text:
        piece = ch.encode("utf-8")
        if use_q:
            octets = piece
            piece = ""
            for byte in octets:
                piece += _q_piece(byte)
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


def encode_text(data):
    """Return (transfer encoding, body) for UTF-8 text that cannot be sent as 7bit.

    data is not empty and every line of it ends with LF. The body has CRLF line ends and
    is the shorter of quoted-printable and base64.
    """
    lines = data.split(b"\n")
    lines.pop()
    qp_lines = []
    for line in lines:
        _quote_line(line, qp_lines)
    # Base64 encodes the text with CRLF line ends, which adds one octet to each line.
    b64_chars = (len(data) + len(lines) + 2) // 3 * 4
    lines = None
    qp_size = 0
    for line in qp_lines:
        qp_size += len(line) + 2
    if qp_size <= b64_chars + (b64_chars + 75) // 76 * 2:
        qp_lines.append("")
        return b"quoted-printable", "\r\n".join(qp_lines).encode()
    qp_lines = None
    return b"base64", base64_lines(data.replace(b"\n", b"\r\n"))


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


def base64_lines(data):
    """Return data as base64 lines of 76 characters with CRLF, 57 input octets a line."""
    view = memoryview(data)
    lines = []
    for start in range(0, len(data), 57):
        lines.append(binascii.b2a_base64(view[start : start + 57])[:-1])
    lines.append(b"")
    return b"\r\n".join(lines)


def pem_to_der(pem):
    """Return the DER bytes of every certificate in a PEM text (str or bytes).

    Text outside the BEGIN and END lines (comments, other blocks) is skipped, and so are
    header lines such as "Comment: ..." in a block and whitespace within its base64.
    """
    if isinstance(pem, bytes):
        try:
            pem = pem.decode()
        except UnicodeError:
            raise ConfigError(
                "the PEM text of the CA roots is not ASCII; pass the CA certificate as PEM or DER"
            ) from None
    roots = []
    body = None
    for line in pem.splitlines():
        # strip() leaves a byte order mark, which some editors write at the start.
        line = line.strip().lstrip("\ufeff")
        if line == "-----BEGIN CERTIFICATE-----":
            body = []
        elif line == "-----END CERTIFICATE-----" and body is not None:
            text = "".join(body)
            digits = text.rstrip("=")
            der = b""
            # a2b_base64() skips characters outside base64 on both runtimes, and stops at
            # padding, so both are looked for first. A certificate is an ASN.1 SEQUENCE,
            # whose DER starts with 0x30 ("0").
            if len(text) % 4 == 0 and len(text) - len(digits) < 3 and not [c for c in digits if c not in _BASE64]:
                try:
                    der = binascii.a2b_base64(text)
                except ValueError:
                    # binascii.Error on CPython is a ValueError; MicroPython raises ValueError.
                    pass
            if der[:1] != b"0":
                raise ConfigError(
                    "certificate %d of the PEM text is not valid base64; export the CA certificate again"
                    % (len(roots) + 1)
                )
            roots.append(der)
            body = None
        elif body is not None and ":" not in line:
            body.append("".join(line.split()))
    return roots


def ca_file_roots(data):
    """Return the DER certificates in the bytes of a CA file: PEM blocks or one DER certificate.

    Raises ConfigError saying what is wrong with the content and what to do; the caller
    names the file. Every tool and the board read CA files through this function.
    """
    if b"-----BEGIN CERTIFICATE-----" in data:
        roots = pem_to_der(data)
        if not roots:
            raise ConfigError(
                "it has a BEGIN CERTIFICATE line but no complete certificate block; export the CA certificate again"
            )
        return roots
    if data[:1] == b"0":
        # DER: an ASN.1 SEQUENCE, whose first byte is 0x30.
        return [bytes(data)]
    raise ConfigError(
        "it is neither a PEM nor a DER certificate (no BEGIN CERTIFICATE block); give the CA certificate, "
        "not a key or a request"
    )


_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
