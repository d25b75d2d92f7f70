"""Name the problem with an input that microsmtp.message's quick checks did not accept.

microsmtp.message accepts common valid input with short tests and loads this module only
for input that is invalid or rare: a quoted local part, an address literal or a UTF-8
address (RFC 6531). Each function here returns the text of the InvalidInputError to
raise, or None where the input turns out valid.
"""

from .message import _OWN_HEADERS, _is_printable


def text_problem(field, value, body):
    """Return why value is not valid text for field, a header value unless body is True.

    Header text must not contain CR, LF or NUL, and a body must not contain NUL. Both must
    be a str that UTF-8 can encode.
    """
    if not isinstance(value, str):
        return "%s must be a str, not %s" % (field, type(value).__name__)
    if body and "\x00" in value:
        return "%s contains a NUL character: remove it" % field
    if not body and ("\x00" in value or "\r" in value or "\n" in value):
        return "%s contains CR, LF or NUL, which could inject header lines: remove them" % field
    try:
        value.encode("utf-8")
    except UnicodeError:
        return "%s contains a lone surrogate: fix the text" % field
    return None


def header_problem(item):
    """Return why item is not a valid (name, value) pair for an extra header field."""
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        return "headers must be (name, value) pairs, got %r" % (item,)
    name = item[0]
    problem = text_problem("header name", name, False)
    if problem:
        return problem
    if not name or not _is_printable(name) or " " in name or ":" in name:
        return "header name %r is invalid: use printable ASCII without spaces or ':'" % name
    if " " + name.lower() + " " in _OWN_HEADERS:
        return "header %s is written by Message: set it with the Message argument" % name
    return text_problem("value of header " + name, item[1], False)


def addr_spec_problem(addr):
    """Return why addr is not a valid RFC 5321 addr-spec, or None if it is valid."""
    at = addr.rfind("@")
    if not addr:
        return "it is empty, give an address such as user@example.com"
    if at < 0:
        return "'@' is missing"
    local, domain = addr[:at], addr[at + 1 :]
    if not local or not domain:
        return "the part before or after '@' is empty"
    if len(local.encode("utf-8")) > 64 or len(addr.encode("utf-8")) > 254:
        return "the local part exceeds 64 octets or the address exceeds 254 octets"

    for ch in addr:
        # Unicode-aware readers such as Python's str.splitlines() end lines at NEL
        # (U+0085), U+2028 and U+2029, so these could split a header.
        if "\x7f" <= ch <= "\x9f" or ch in "\u2028\u2029":
            return "it contains a control character or a Unicode line separator"

    if local[0] == '"':
        escaped = False
        for ch in local[1:-1]:
            if ch < " " or ch == "\x7f":
                return "the quoted local part contains a control character"
            if ch == '"' and not escaped:
                return "the quoted local part contains an unescaped '\"'"
            escaped = ch == "\\" and not escaped
        if len(local) < 2 or local[-1] != '"' or escaped:
            return "the quoted local part is not closed by '\"'"
    else:
        for ch in local:
            # atext (RFC 5322 printable ASCII except specials), a dot or UTF-8
            if not ("!" <= ch <= "~" and ch not in '"(),:;<>@[\\]' or ch >= "\x80"):
                return "%r is not allowed in the local part unless it is quoted" % ch
        if local[0] == "." or local[-1] == "." or ".." in local:
            return "the local part has a leading, trailing or double dot"

    if domain[0] == "[" and domain[-1] == "]":
        if len(domain) == 2:
            return "the address literal is empty"
        for ch in domain[1:-1]:
            if not "!" <= ch <= "~" or ch in "[]\\":
                return "the address literal contains %r" % ch
        return None

    for label in domain.split("."):
        if not label or label[0] == "-" or label[-1] == "-":
            return "the domain has an empty label or a label starting or ending with '-'"
        for ch in label:
            # ASCII letters, digits and "-", or any non-ASCII character (RFC 6531).
            if not ("a" <= ch <= "z" or "A" <= ch <= "Z" or "0" <= ch <= "9" or ch == "-" or ch >= "\x80"):
                return "%r is not allowed in a domain name" % ch
    return None
