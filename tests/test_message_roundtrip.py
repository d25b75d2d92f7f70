"""Round trip of Message output through CPython's email parser, with generated input.

CPython's email package (policy.default) is the independent decoder, and what it decodes
from to_bytes() must equal what was given to Message. The bytes must also keep the wire
rules: CRLF only, lines of at most 998 octets, ASCII unless an address needs SMTPUTF8.
"""

import email
import email.header
import email.policy
import email.utils

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from microsmtp.message import Attachment, Message, parse_address

DATE = (2026, 12, 4, 20, 10, 26, 4, 338)
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

header_char = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00")
header_text = st.text(header_char, max_size=120)

body_piece = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            max_size=60),
    st.sampled_from(["\r", "\n", "\r\n", "\n\r", ".", "..\n", "\n.", "\n.\n", "From ",
                     "=", "=\n", " \n", "\t\n", " ", "\u00e9", "\U0001f600", "x" * 997,
                     "y" * 1200, "\u00fc" * 600, "=?utf-8?q?x?="]),
)
body_text = st.lists(body_piece, max_size=12).map("".join)

atom = st.text(st.sampled_from("abcxyzABC0189!#$%&'*+-/=?^_`{|}~"), min_size=1, max_size=8)
quoted_local = st.text(st.sampled_from("ab @,.<>()[]:;"), min_size=1, max_size=8).map(
    lambda text: '"' + text + '"')
local_part = st.one_of(st.lists(atom, min_size=1, max_size=3).map(".".join), quoted_local)
domain = st.lists(st.text(st.sampled_from("abcdefghij0123456789"), min_size=1, max_size=10),
                  min_size=1, max_size=3).map(".".join)
ascii_address = st.builds(lambda local, dom: local + "@" + dom + ".example", local_part, domain)
utf8_address = st.builds(lambda local, dom: local + "\u00f6\u65e5@" + dom + ".example",
                         atom, domain)
address = st.one_of(ascii_address, ascii_address, utf8_address)
mailbox = st.tuples(header_text, address)

content_type = st.sampled_from(["application/octet-stream", "application/pdf", "image/png",
                                "text/plain", "text/csv; charset=utf-8"])
filename = st.text(header_char, min_size=1, max_size=100)
attachment = st.tuples(filename, st.binary(max_size=3000), content_type)


def expected_body(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text and not text.endswith("\n"):
        text += "\n"
    return text


def parse(msg, data):
    if msg.needs_smtputf8:
        # RFC 6532 headers are UTF-8, which the bytes parser would turn into surrogates.
        return email.message_from_string(data.decode("utf-8"), policy=email.policy.default)
    return email.message_from_bytes(data, policy=email.policy.default)


def check_wire_form(msg, data):
    assert data.endswith(b"\r\n")
    for line in data[:-2].split(b"\r\n"):
        assert b"\r" not in line
        assert b"\n" not in line
        assert len(line) <= 998
    if not msg.needs_smtputf8:
        assert data.isascii()
    head = data[: data.index(b"\r\n\r\n")]
    for line in head.split(b"\r\n"):
        # Generated addresses are short, so every line can stay within 76 octets (the
        # RFC 2047 limit for lines with encoded words) except Message-ID, which is one
        # token and grows with the sender's domain.
        if not line.startswith(b"Message-ID:"):
            assert len(line) <= 76, line
        for word in line.split(b" "):
            if word.startswith(b"=?"):
                assert len(word.rstrip(b",")) <= 75


def legacy_display_names(data, field, smtputf8):
    """Decode the display names of an address field with CPython's compat32 API.

    policy.default in CPython 3.11 inserts a space between adjacent encoded words of a
    display name, although RFC 2047 section 6.2 says to ignore the white space between
    them (python/cpython#128110). So display names are decoded with
    email.utils.getaddresses and email.header instead.
    """
    if smtputf8:
        legacy = email.message_from_string(data.decode("utf-8"), policy=email.policy.compat32)
    else:
        legacy = email.message_from_bytes(data, policy=email.policy.compat32)
    fields = legacy.get_all(field)
    try:
        # In CPython 3.13 the default strict mode returns ('', '') for any address with
        # "[" in it, even a quoted local part. 3.11.7 and 3.12.1 have no strict parameter.
        pairs = email.utils.getaddresses(fields, strict=False)
    except TypeError:
        pairs = email.utils.getaddresses(fields)
    names = []
    for name, _ in pairs:
        names.append(str(email.header.make_header(email.header.decode_header(name))))
    return names


def check_mailboxes(msg, data, parsed, field, given):
    addresses = parsed[field].addresses
    assert len(addresses) == len(given)
    for parsed_address, (_, addr) in zip(addresses, given, strict=True):
        local, _, domain_part = addr.rpartition("@")
        # Address.username is the local part without the quotes (none contain '\\').
        if local.startswith('"'):
            local = local[1:-1]
        assert parsed_address.username == local
        assert parsed_address.domain == domain_part
    names = legacy_display_names(data, field, msg.needs_smtputf8)
    assert names == [name.strip(" \t") for name, _ in given]


@SETTINGS
@given(text=body_text)
def test_body_round_trip(text):
    msg = Message("a@example.com", "b@example.com", "s", text, date=DATE)
    data = msg.to_bytes()
    check_wire_form(msg, data)
    assert b"".join(msg.chunks()) == data
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert not parsed.defects
    content = parsed.get_content()
    assert content.replace("\r\n", "\n") == expected_body(text)
    if text.isascii() and max(len(line) for line in expected_body(text).split("\n")) <= 998:
        assert parsed["Content-Transfer-Encoding"] == "7bit"


@SETTINGS
@given(subject=header_text, headers=st.lists(header_text, max_size=3))
def test_subject_and_extra_headers_round_trip(subject, headers):
    extra = [("X-Test-%d" % i, value) for i, value in enumerate(headers)]
    msg = Message("a@example.com", "b@example.com", subject, "x", date=DATE, headers=extra)
    data = msg.to_bytes()
    check_wire_form(msg, data)
    parsed = parse(msg, data)
    if subject:
        assert str(parsed["Subject"]) == subject
    else:
        assert parsed["Subject"] is None
    for name, value in extra:
        assert str(parsed[name]) == value


@SETTINGS
@given(name=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
       addr=ascii_address)
def test_parse_address_reads_formataddr_output(name, addr):
    # formataddr quotes a display name with specials and escapes '"' and '\\'.
    assert parse_address(email.utils.formataddr((name, addr))) == (name.strip(" \t"), addr)


@SETTINGS
@given(sender=mailbox, to=st.lists(mailbox, min_size=1, max_size=4),
       cc=st.lists(mailbox, max_size=3), reply_to=st.lists(mailbox, max_size=2))
# A quoted local part with "[" in it, which newer CPython parses only when not strict.
@example(sender=("", "a@0.example"), to=[("", "b@0.example")], cc=[], reply_to=[("0", '"["@0.example')])
def test_addresses_round_trip(sender, to, cc, reply_to):
    msg = Message(sender, to, "s", "x", cc=cc, reply_to=reply_to or None, date=DATE)
    data = msg.to_bytes()
    check_wire_form(msg, data)
    parsed = parse(msg, data)
    check_mailboxes(msg, data, parsed, "From", [sender])
    check_mailboxes(msg, data, parsed, "To", to)
    if cc:
        check_mailboxes(msg, data, parsed, "Cc", cc)
    if reply_to:
        check_mailboxes(msg, data, parsed, "Reply-To", reply_to)
    assert msg.sender_address == sender[1]
    all_addresses = [sender[1]] + [addr for _, addr in to + cc + reply_to]
    assert msg.needs_smtputf8 == (not all(addr.isascii() for addr in all_addresses))
    assert parsed["Message-ID"] == msg.message_id


@SETTINGS
@given(text=body_text, attachments=st.lists(attachment, min_size=1, max_size=3),
       as_objects=st.booleans())
def test_attachments_round_trip(text, attachments, as_objects):
    given_attachments = attachments
    if as_objects:
        given_attachments = [Attachment(*item) for item in attachments]
    msg = Message("a@example.com", "b@example.com", "files", text, date=DATE,
                  attachments=given_attachments)
    data = msg.to_bytes()
    check_wire_form(msg, data)
    assert b"".join(msg.chunks()) == data
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/mixed"
    assert not parsed.defects
    parts = list(parsed.iter_parts())
    if text:
        body = parts.pop(0)
        assert body.get_content_type() == "text/plain"
        assert body.get_content().replace("\r\n", "\n") == expected_body(text)
    assert len(parts) == len(attachments)
    for part, (name, payload, mime_type) in zip(parts, attachments, strict=True):
        assert part.get_content_disposition() == "attachment"
        # The header parameters are compared because Message.get_filename() strips white
        # space and a pair of enclosing quotes from the decoded name.
        assert part["Content-Disposition"].params["filename"] == name
        assert part["Content-Type"].params["name"] == name
        assert part.get_content_type() == mime_type.split(";")[0]
        assert part["Content-Transfer-Encoding"] == "base64"
        assert part.get_payload(decode=True) == payload
