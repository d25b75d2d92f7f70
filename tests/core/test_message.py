"""Message building: exact output, addresses, header encoding, bodies, dates, attachments."""

import binascii
import sys
import time

from helpers import raises
from microsmtp import mime
from microsmtp.errors import InvalidInputError
from microsmtp.message import Attachment, Message, format_date, parse_address

DATE = (2026, 12, 4, 20, 10, 26, 4, 338)


def build(**kwargs):
    args = {
        "sender": "ann@example.com",
        "to": "bob@example.org",
        "subject": "Hi",
        "text": "Hello\n",
        "date": DATE,
        "message_id": "<1@example.com>",
    }
    args.update(kwargs)
    return Message(**args)


def split_message(data):
    """Return (header lines with folding undone, body bytes)."""
    end = data.find(b"\r\n\r\n")
    assert end > 0
    head = data[:end].replace(b"\r\n ", b" ").decode("utf-8")
    return head.split("\r\n"), data[end + 4 :]


def header(data, name):
    prefix = name.lower() + ":"
    for line in split_message(data)[0]:
        if line.lower().startswith(prefix):
            return line[len(prefix) :].strip()
    return None


def physical_lines(data):
    assert data.endswith(b"\r\n")
    return data[:-2].split(b"\r\n")


def check_wire_form(data, allow_utf8=False):
    """Check CRLF-only line ends, the 998-octet line limit and ASCII-only output."""
    for line in physical_lines(data):
        assert b"\r" not in line
        assert b"\n" not in line
        assert len(line) <= 998
    if not allow_utf8:
        for byte in data:
            assert byte < 128


def check_header_lines(data, limit=76):
    head = data[: data.find(b"\r\n\r\n")]
    for line in head.split(b"\r\n"):
        assert len(line) <= limit, line


def encoded_words(line):
    """Return the RFC 2047 encoded words in a header line."""
    words = []
    start = line.find("=?")
    while start >= 0:
        end = line.find("?=", start + 10)
        assert end > 0
        words.append(line[start : end + 2])
        start = line.find("=?", end + 2)
    return words


# Whole messages


def test_simple_message_exact_bytes():
    msg = Message(
        "Ann <ann@example.com>", "bob@example.org", "Hello", "Hi Bob,\nbye\n", date=DATE, message_id="<1@example.com>"
    )
    expected = (
        b"Date: Fri, 04 Dec 2026 20:10:26 +0000\r\n"
        b"From: Ann <ann@example.com>\r\n"
        b"To: bob@example.org\r\n"
        b"Subject: Hello\r\n"
        b"Message-ID: <1@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n"
        b"Hi Bob,\r\n"
        b"bye\r\n"
    )
    assert msg.to_bytes() == expected
    assert b"".join(list(msg.chunks())) == expected


def test_full_header_set_exact():
    msg = Message(
        ("Ann", "ann@example.com"),
        ["b@example.org", "Carl <c@example.org>"],
        "Report",
        "x",
        cc="d@example.org",
        bcc="e@example.org",
        reply_to="replies@example.com",
        date=DATE,
        message_id="m@example.com",
        headers=[("X-Mailer", "microsmtp"), ("Importance", "high")],
    )
    head, body = split_message(msg.to_bytes())
    assert head == [
        "Date: Fri, 04 Dec 2026 20:10:26 +0000",
        "From: Ann <ann@example.com>",
        "Reply-To: replies@example.com",
        "To: b@example.org, Carl <c@example.org>",
        "Cc: d@example.org",
        "Subject: Report",
        "Message-ID: <m@example.com>",
        "X-Mailer: microsmtp",
        "Importance: high",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 7bit",
    ]
    assert body == b"x\r\n"


def test_bcc_not_in_headers():
    data = build(bcc=["hidden@example.net"]).to_bytes()
    assert b"hidden" not in data
    assert b"Bcc" not in data


def test_recipients_deduplicated_in_order():
    msg = build(
        to=["a@example.com", "b@EXAMPLE.com"],
        cc=["b@example.com", "A@example.com"],
        bcc=("c@example.com", "a@Example.COM"),
    )
    assert msg.recipients == ["a@example.com", "b@EXAMPLE.com", "A@example.com", "c@example.com"]


def test_sender_address_bare():
    assert build(sender='"Doe, Ann" <ann@example.com>').sender_address == "ann@example.com"


def test_only_bcc_writes_no_to():
    msg = build(to=(), bcc="b@example.com")
    assert msg.recipients == ["b@example.com"]
    assert header(msg.to_bytes(), "To") is None


def test_no_recipients_rejected():
    exc = raises(InvalidInputError, build, to=[])
    assert "recipient" in str(exc)


def test_empty_subject_omitted():
    assert header(build(subject="").to_bytes(), "Subject") is None


def test_empty_text_body():
    data = build(text="").to_bytes()
    assert data.endswith(b"Content-Transfer-Encoding: 7bit\r\n\r\n")


def test_to_bytes_repeatable():
    msg = build(attachments=Attachment("a.bin", b"\x00\x01"))
    assert msg.to_bytes() == msg.to_bytes()
    assert b'filename="a.bin"' in msg.to_bytes()


# Addresses


def test_parse_address_forms():
    assert parse_address("a@example.com") == ("", "a@example.com")
    assert parse_address(" <a@example.com> ") == ("", "a@example.com")
    assert parse_address("Ann Lee <a@example.com>") == ("Ann Lee", "a@example.com")
    assert parse_address("Ann<a@example.com>") == ("Ann", "a@example.com")
    assert parse_address('"Lee, Ann" <a@example.com>') == ("Lee, Ann", "a@example.com")
    assert parse_address('"A \\"B\\" \\\\C" <a@x.org>') == ('A "B" \\C', "a@x.org")
    assert parse_address(("Ann", "a@example.com")) == ("Ann", "a@example.com")
    assert parse_address((None, "<a@example.com>")) == ("", "a@example.com")
    assert parse_address('"a b"@example.com') == ("", '"a b"@example.com')
    assert parse_address('Ann <"<x>"@example.com>') == ("Ann", '"<x>"@example.com')
    assert parse_address('"a<b" <x@example.org>') == ("a<b", "x@example.org")
    assert parse_address('"a\\"<b" <x@example.org>') == ('a"<b', "x@example.org")
    assert parse_address("x+tag@[192.0.2.1]") == ("", "x+tag@[192.0.2.1]")
    assert parse_address("j\u00f6rg@b\u00fccher.example") == ("", "j\u00f6rg@b\u00fccher.example")


def test_parse_address_length_limits():
    local = "l" * 64
    assert parse_address(local + "@example.com") == ("", local + "@example.com")
    longest = "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 60
    assert len(longest) == 254
    assert parse_address(longest) == ("", longest)
    exc = raises(InvalidInputError, parse_address, longest + "e")
    assert "exceeds 254 octets" in str(exc)
    exc = raises(InvalidInputError, parse_address, "\u00e9" * 33 + "@example.com")
    assert "exceeds 64 octets" in str(exc)


def test_parse_address_error_messages():
    cases = [
        ("a..b@example.com", "the local part has a leading, trailing or double dot"),
        ("a b@example.com", "' ' is not allowed in the local part unless it is quoted"),
        ("a@exa_mple.com", "'_' is not allowed in a domain name"),
        ("a@-example.com", "the domain has an empty label or a label starting or ending with '-'"),
        ('"a"b"@example.com', "the quoted local part contains an unescaped '\"'"),
        ("a@[1.2.3.4\\]", "the address literal contains '\\\\'"),
    ]
    for value, reason in cases:
        exc = raises(InvalidInputError, parse_address, value)
        assert str(exc) == "address %r is not a valid address: %s" % (value, reason)


def test_parse_address_rejects_invalid():
    bad = [
        "",
        "   ",
        "no-at-sign",
        "a b@example.com",
        "a,b@example.com",
        "<a@example.com",
        "a@example.com>",
        "a@",
        "@example.com",
        "a..b@example.com",
        ".a@example.com",
        "a.@example.com",
        "a@example..com",
        "a@-example.com",
        "a@example-.com",
        "a@exa_mple.com",
        "a@exa mple.com",
        "a<b@example.com",
        '"ab@example.com',
        '"a"b"@example.com',
        "a@[]",
        "a@[1.2.3.4\\]",
        "x" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
        "a@b@example.com",
        "a;b@example.com",
        'Ann "x <a@example.com>',
        '"a\\"@example.com',
        '"a\x01"@example.com',
        '"@x.org',
    ]
    for value in bad:
        raises(InvalidInputError, parse_address, value)
    raises(InvalidInputError, parse_address, ("only-one",))
    raises(InvalidInputError, parse_address, 42)


def test_address_unicode_separators_rejected():
    for char in ("\x85", "\u2028", "\u2029", "\x9f", "\x7f"):
        exc = raises(InvalidInputError, parse_address, "a" + char + "b@example.com")
        assert "line separator" in str(exc)
        raises(InvalidInputError, parse_address, "ab@exa" + char + "mple.com")


def test_address_error_names_field():
    exc = raises(InvalidInputError, build, to="bob")
    assert "to" in str(exc)
    assert "'@' is missing" in str(exc)
    exc = raises(InvalidInputError, build, sender="")
    assert "sender" in str(exc)
    assert "empty" in str(exc)


def test_pair_versus_list_of_two():
    assert build(to=("Bob", "b@example.com")).recipients == ["b@example.com"]
    pair_of_addresses = ("a@example.com", "b@example.com")
    assert build(to=pair_of_addresses).recipients == ["a@example.com", "b@example.com"]
    assert build(to=[("Bob", "b@example.com")]).recipients == ["b@example.com"]
    data = build(to=("Bob", "b@example.com")).to_bytes()
    assert header(data, "To") == "Bob <b@example.com>"


def test_pair_name_with_at_sign():
    msg = build(to=("Ops @ site", "ops@example.com"))
    assert msg.recipients == ["ops@example.com"]
    assert header(msg.to_bytes(), "To") == '"Ops @ site" <ops@example.com>'
    exc = raises(InvalidInputError, build, to=(("Ann", "a@example.com"), "b"))
    assert "'@' is missing" in str(exc)


def test_display_name_quoting():
    cases = [
        ("Lee, Ann", '"Lee, Ann" <a@example.com>'),
        ("John Q. Public", '"John Q. Public" <a@example.com>'),
        ('Say "hi"', '"Say \\"hi\\"" <a@example.com>'),
        ("back\\slash", '"back\\\\slash" <a@example.com>'),
        ("a@b", '"a@b" <a@example.com>'),
        ("O'Brien", "O'Brien <a@example.com>"),
        # A quoted "=?...?=" is decoded by some readers, so it is sent as an encoded word.
        ("=?utf-8?q?x?=", "=?utf-8?b?PT91dGYtOD9xP3g/PQ==?= <a@example.com>"),
    ]
    for name, expected in cases:
        assert header(build(to=[(name, "a@example.com")]).to_bytes(), "To") == expected


def test_display_name_non_ascii_encoded():
    data = build(sender=("J\u00f6rg M\u00fcller", "j@example.com")).to_bytes()
    check_wire_form(data)
    value = header(data, "From")
    assert value.startswith("=?utf-8?")
    assert value.endswith("?= <j@example.com>")


def test_long_display_names_folded():
    names = ["\u00e9t\u00e9 " * 30, "x" * 200, "Name, With Comma " * 6]
    for name in names:
        data = build(to=[(name, "a@example.com"), (name, "b@example.com")]).to_bytes()
        check_wire_form(data)
        check_header_lines(data)
        for line in split_message(data)[0]:
            for word in encoded_words(line):
                assert len(word) <= 75


def test_many_recipients_folded():
    to = ["user%d@example.com" % i for i in range(40)]
    data = build(to=to).to_bytes()
    check_header_lines(data)
    assert header(data, "To") == ", ".join(to)


def test_smtputf8_only_for_addresses():
    assert not build(subject="\u00fcber", text="\u00fcber", to=("M\u00fcller", "m@example.com")).needs_smtputf8
    msg = build(to="j\u00f6rg@example.com")
    assert msg.needs_smtputf8
    data = msg.to_bytes()
    check_wire_form(data, allow_utf8=True)
    assert "j\u00f6rg@example.com".encode("utf-8") in data
    assert build(reply_to="r\u00e9@example.com").needs_smtputf8
    assert build(bcc="b@\u00e9xample.com").needs_smtputf8


# Injection


def check_rejected(field_hint, **kwargs):
    for bad in ("\r", "\n", "\x00", "\r\nBcc: evil@example.net"):
        values = {}
        for key, value in kwargs.items():
            values[key] = value.replace("BAD", bad) if isinstance(value, str) else value(bad)
        exc = raises(InvalidInputError, build, **values)
        assert field_hint in str(exc), str(exc)


def test_injection_in_addresses_rejected():
    check_rejected("sender", sender="ann@example.comBAD")
    check_rejected("sender", sender="AnnBAD <ann@example.com>")
    check_rejected("to", to="bob@example.orgBAD")
    check_rejected("cc", cc="c@example.orgBAD")
    check_rejected("bcc", bcc="d@example.orgBAD")
    check_rejected("reply_to", reply_to="r@example.orgBAD")
    check_rejected("display name of to", to=lambda bad: ("Bob" + bad, "b@example.com"))
    check_rejected("to", to=lambda bad: ("Bob", "b@example.com" + bad))
    check_rejected("cc", cc=lambda bad: ["ok@example.com", "Eve" + bad + " <e@example.com>"])


def test_injection_in_headers_rejected():
    check_rejected("subject", subject="HelloBAD")
    check_rejected("message_id", message_id="<1@example.comBAD>")
    check_rejected("header name", headers=lambda bad: [("X-Test" + bad, "v")])
    check_rejected("X-Test", headers=lambda bad: [("X-Test", "v" + bad)])
    check_rejected("X-Test", headers=lambda bad: {"X-Test": bad + "v"})


def test_injection_in_attachments_rejected():
    check_rejected("filename", attachments=lambda bad: [("a" + bad + ".txt", b"x")])
    check_rejected("content type", attachments=lambda bad: [("a.txt", b"x", "text/plain" + bad)])
    exc = raises(InvalidInputError, Attachment, "a\r\n.txt", b"x")
    assert "filename" in str(exc)


def test_injection_error_says_what_to_do():
    exc = raises(InvalidInputError, build, subject="a\r\nBcc: x@example.com")
    assert "subject" in str(exc)
    assert "remove" in str(exc)


def test_invalid_header_names_rejected():
    for name in ("", "X Test", "X:Test", "X-T\u00e9st", "X-\x01"):
        raises(InvalidInputError, build, headers=[(name, "v")])
    for name in ("From", "to", "BCC", "Subject", "Content-Type", "MIME-Version", "Message-ID"):
        exc = raises(InvalidInputError, build, headers=[(name, "v")])
        assert "Message argument" in str(exc)
    raises(InvalidInputError, build, headers=[("X-Test", 5)])
    raises(InvalidInputError, build, headers=["X-Test: v"])


def test_non_str_values_rejected():
    raises(InvalidInputError, build, subject=b"bytes")
    raises(InvalidInputError, build, text=b"bytes")
    raises(InvalidInputError, build, sender=None)
    raises(InvalidInputError, build, to=5)


# Header encoding


def test_subject_ascii_folded_at_spaces():
    subject = " ".join(["word%d" % i for i in range(40)])
    data = build(subject=subject).to_bytes()
    check_header_lines(data)
    assert header(data, "Subject") == subject
    assert b"=?" not in data


def test_subject_keeps_inner_spaces():
    data = build(subject="a  b   c").to_bytes()
    assert header(data, "Subject") == "a  b   c"


def test_subject_non_ascii_encoded_words():
    subject = "\u00c4rger \u00fcber \u00d6l, \u65e5\u672c\u8a9e and \U0001f600 " * 8
    data = build(subject=subject).to_bytes()
    check_wire_form(data)
    check_header_lines(data)
    head = data[: data.find(b"\r\n\r\n")].decode()
    words = encoded_words(head)
    assert len(words) > 3
    for word in words:
        assert len(word) <= 75
        assert word.startswith("=?utf-8?q?") or word.startswith("=?utf-8?b?")


def decode_q(payload):
    out = bytearray()
    index = 0
    while index < len(payload):
        if payload[index] == "=":
            out.append(int(payload[index + 1 : index + 3], 16))
            index += 3
        else:
            out.append(ord(" " if payload[index] == "_" else payload[index]))
            index += 1
    return bytes(out)


def test_subject_words_keep_whole_characters():
    # Astral characters favour B encoding and two-octet ones with ASCII favour Q.
    for subject in ("\U0001f600" * 40, ("a\u00e9" * 3 + "\u65e5 ") * 12):
        head = build(subject=subject).to_bytes().split(b"\r\n\r\n")[0].decode()
        decoded = []
        for word in encoded_words(head):
            payload = word[10:-2]
            raw = binascii.a2b_base64(payload) if word[8] == "b" else decode_q(payload)
            decoded.append(raw.decode("utf-8"))  # raises if a character was split
        assert "".join(decoded) == subject


def test_subject_encoding_shorter_of_q_and_b():
    data = build(subject="Meeting at the caf\u00e9 = 1? ok_").to_bytes()
    assert header(data, "Subject") == "=?utf-8?q?Meeting_at_the_caf=C3=A9_=3D_1=3F_ok=5F?="
    data = build(subject="\u00c4rger \u00fcber \u00d6l").to_bytes()
    assert header(data, "Subject") == "=?utf-8?b?w4RyZ2VyIMO8YmVyIMOWbA==?="


def test_subject_encoded_word_lookalike_encoded():
    data = build(subject="=?utf-8?q?hidden?=").to_bytes()
    value = header(data, "Subject")
    assert value != "=?utf-8?q?hidden?="
    assert value.startswith("=?utf-8?")


def test_subject_long_word_encoded():
    data = build(subject="x" * 300).to_bytes()
    check_header_lines(data)
    assert len(encoded_words(header(data, "Subject"))) >= 5


def test_subject_control_and_edge_spaces_encoded():
    for subject in ("tab\there", " leading", "trailing ", "bell\x07"):
        data = build(subject=subject).to_bytes()
        check_wire_form(data)
        assert header(data, "Subject").startswith("=?utf-8?")


def test_extra_header_values():
    data = build(headers=[("X-Note", "caf\u00e9 open"), ("X-Url", "https://e.com/" + "a" * 200)])
    data = data.to_bytes()
    check_wire_form(data)
    assert header(data, "X-Note") == "=?utf-8?q?caf=C3=A9_open?="
    assert header(data, "X-Url") == "https://e.com/" + "a" * 200


def test_extra_header_word_over_998_encoded():
    data = build(headers={"X-Long": "y" * 2000}).to_bytes()
    check_wire_form(data)
    assert header(data, "X-Long").startswith("=?utf-8?q?")


def test_message_id_generated():
    msg = build(message_id=None, sender="a@Mail.Example.com")
    assert msg.message_id.startswith("<")
    assert msg.message_id.endswith("@Mail.Example.com>")
    left = msg.message_id[1 : msg.message_id.find("@")]
    random_part, seconds = left.split(".")
    assert len(random_part) == 24
    assert int(seconds) >= 0
    assert msg.message_id != build(message_id=None).message_id
    assert header(msg.to_bytes(), "Message-ID") == msg.message_id


def test_message_id_for_utf8_sender_domain():
    msg = build(message_id=None, sender="a@b\u00fccher.example")
    assert msg.message_id.endswith("@localhost>")


def test_message_id_given():
    assert build(message_id="abc@example.com").message_id == "<abc@example.com>"
    for bad in ("", "<>", "no-at", "<a b@example.com>", "<a@b@c>", "<@x>", "<x@>", "<\u00e9@x>", "<a<b@x>"):
        exc = raises(InvalidInputError, build, message_id=bad)
        assert "message_id" in str(exc)


# Bodies


def body_of(msg):
    data = msg.to_bytes()
    return header(data, "Content-Transfer-Encoding"), split_message(data)[1]


def test_body_seven_bit():
    assert body_of(build(text="plain\n.dot\nend")) == ("7bit", b"plain\r\n.dot\r\nend\r\n")


def test_body_line_endings_normalised():
    text = "a\rb\nc\r\nd\r\r\ne\n\rf"
    assert body_of(build(text=text)) == ("7bit", b"a\r\nb\r\nc\r\nd\r\n\r\ne\r\n\r\nf\r\n")


def test_body_nul_rejected():
    exc = raises(InvalidInputError, build, text="a\x00b")
    assert "NUL" in str(exc)


def test_body_quoted_printable():
    encoding, body = body_of(build(text="Gr\u00fc\u00dfe = 100% from all of us\nend  \ntab\t\n"))
    assert encoding == "quoted-printable"
    assert body == b"Gr=C3=BC=C3=9Fe =3D 100% from all of us\r\nend =20\r\ntab=09\r\n"


def test_body_quoted_printable_soft_breaks():
    text = ("\u00e9" + "a" * 30) * 40 + "\n" + "b" * 3000 + "\n"
    encoding, body = body_of(build(text=text))
    assert encoding == "quoted-printable"
    for line in physical_lines(body):
        assert len(line) <= 76
    assert body.replace(b"=\r\n", b"").count(b"\r\n") == 2


def test_body_quoted_printable_from_line():
    encoding, body = body_of(build(text="\u00e9\nFrom me\n"))
    assert encoding == "quoted-printable"
    assert b"\r\n=46rom me\r\n" in body


def test_body_long_ascii_line_not_seven_bit():
    encoding, body = body_of(build(text="x" * 999))
    assert encoding == "quoted-printable"
    check_wire_form(body)
    assert body_of(build(text="x" * 998))[0] == "7bit"


def test_body_long_later_line_not_seven_bit():
    encoding, body = body_of(build(text="short\r\n" + "x" * 998 + "\r" + "y" * 999))
    assert encoding == "quoted-printable"
    check_wire_form(body)
    assert body.startswith(b"short\r\n" + b"x" * 75 + b"=\r\n")
    assert body_of(build(text="short\r\n" + "x" * 998 + "\r" + "y" * 998))[0] == "7bit"


def test_body_base64_when_shorter():
    text = "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\n" * 20
    encoding, body = body_of(build(text=text))
    assert encoding == "base64"
    for line in physical_lines(body):
        assert len(line) <= 76
    decoded = binascii.a2b_base64(body.replace(b"\r\n", b""))
    assert decoded == text.replace("\n", "\r\n").encode("utf-8")


def test_body_lone_surrogate_rejected():
    # CPython strings can hold a lone surrogate, which UTF-8 cannot encode. MicroPython
    # stores "\ud800" as the octets ED A0 80 and encodes it without error, so this test
    # checks nothing there.
    text = "a\ud800b"
    try:
        text.encode("utf-8")
    except UnicodeError:
        raises(InvalidInputError, build, text=text)
        raises(InvalidInputError, build, subject=text)
        raises(InvalidInputError, build, to=("\ud800", "a@example.com"))


# Dates


def test_format_date_exact():
    assert format_date(DATE) == "Fri, 04 Dec 2026 20:10:26 +0000"
    assert format_date((2026, 1, 2, 3, 4, 5)) == "Fri, 02 Jan 2026 03:04:05 +0000"
    assert format_date((1999, 12, 31, 23, 59, 60, 0, 0, 0)) == "Fri, 31 Dec 1999 23:59:60 +0000"


def test_date_on_2000_epoch_path():
    # time.gmtime(0) on an ESP32, whose epoch is 2000-01-01; MicroPython tuples have 8 items.
    assert format_date((2000, 1, 1, 0, 0, 0, 5, 1)) == "Sat, 01 Jan 2000 00:00:00 +0000"
    # time.gmtime(86400 * 366) on an ESP32: 2000 is a leap year.
    assert format_date((2001, 1, 1, 0, 0, 0, 0, 1)) == "Mon, 01 Jan 2001 00:00:00 +0000"


def test_date_seconds_use_platform_gmtime():
    for seconds in (0, 86399, 951782400, 1796415167):
        assert format_date(seconds) == format_date(time.gmtime(seconds))
    now = format_date()
    assert now.endswith(" +0000")
    assert len(now) == 31


def test_weekday_known_dates():
    cases = [
        ((1970, 1, 1), "Thu"),
        ((2000, 1, 1), "Sat"),
        ((2000, 2, 29), "Tue"),
        ((2024, 2, 29), "Thu"),
        ((1900, 1, 1), "Mon"),
        ((1900, 3, 1), "Thu"),
        ((2100, 3, 1), "Mon"),
        ((1999, 12, 31), "Fri"),
        ((2038, 1, 19), "Tue"),
        ((9999, 12, 31), "Fri"),
    ]
    for (year, month, day), name in cases:
        assert format_date((year, month, day, 12, 0, 0)).startswith(name + ", ")


def test_weekday_ignores_tuple_weekday():
    assert format_date((2024, 2, 29, 0, 0, 0, 6, 60)).startswith("Thu, ")


def test_leap_years():
    assert format_date((2000, 2, 29, 0, 0, 0)) == "Tue, 29 Feb 2000 00:00:00 +0000"
    assert format_date((2024, 2, 29, 0, 0, 0)) == "Thu, 29 Feb 2024 00:00:00 +0000"
    assert format_date((1904, 2, 29, 0, 0, 0)) == "Mon, 29 Feb 1904 00:00:00 +0000"
    assert format_date((2400, 2, 29, 0, 0, 0)) == "Tue, 29 Feb 2400 00:00:00 +0000"
    assert format_date((2023, 3, 1, 0, 0, 0)) == "Wed, 01 Mar 2023 00:00:00 +0000"
    for year in (1900, 2100, 2023, 2200):
        raises(InvalidInputError, format_date, (year, 2, 29, 0, 0, 0))


def test_invalid_dates_rejected():
    bad = [
        (2026, 13, 1, 0, 0, 0),
        (2026, 0, 1, 0, 0, 0),
        (2026, 4, 31, 0, 0, 0),
        (2026, 1, 0, 0, 0, 0),
        (2026, 1, 1, 24, 0, 0),
        (2026, 1, 1, 0, 60, 0),
        (2026, 1, 1, 0, 0, 61),
        (1899, 12, 31, 0, 0, 0),
        (2026, 1, 1),
        "today",
        (2026, 1, 1, 0, 0, 1.5),
    ]
    for value in bad:
        exc = raises(InvalidInputError, format_date, value)
        assert "date" in str(exc)
    raises(InvalidInputError, build, date=(2026, 2, 30, 0, 0, 0))


# Attachments


def parts_of(data):
    """Return (boundary, list of (part header lines, part body)) of a multipart message."""
    content_type = header(data, "Content-Type")
    assert content_type.startswith('multipart/mixed; boundary="')
    boundary = content_type.split('"')[1].encode()
    body = split_message(data)[1]
    assert body.startswith(b"--" + boundary + b"\r\n")
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    inner = body[len(boundary) + 4 : -(len(boundary) + 8)]
    parts = []
    for raw in inner.split(b"\r\n--" + boundary + b"\r\n"):
        parts.append(split_message(raw))
    return boundary, parts


def test_attachment_structure():
    import binascii

    payload = bytes(bytearray(range(256))) * 3
    msg = build(text="See file.\n", attachments=[("data.bin", payload), Attachment("notes.txt", b"hi\n", "text/plain")])
    data = msg.to_bytes()
    check_wire_form(data)
    check_header_lines(data)
    boundary, parts = parts_of(data)
    assert len(parts) == 3
    assert parts[0] == (
        ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 7bit"],
        b"See file.\r\n",
    )
    assert parts[1][0] == [
        'Content-Type: application/octet-stream; name="data.bin"',
        'Content-Disposition: attachment; filename="data.bin"',
        "Content-Transfer-Encoding: base64",
    ]
    for line in physical_lines(parts[1][1] + b"\r\n"):
        assert len(line) <= 76
    assert binascii.a2b_base64(parts[1][1].replace(b"\r\n", b"")) == payload
    assert parts[2][0][0] == 'Content-Type: text/plain; name="notes.txt"'
    assert binascii.a2b_base64(parts[2][1]) == b"hi\n"


def test_attachment_without_text_and_empty_data():
    data = build(text="", attachments=[("empty.bin", b"")]).to_bytes()
    boundary, parts = parts_of(data)
    assert len(parts) == 1
    assert parts[0][1] == b""


def test_attachment_filename_rfc2231():
    data = build(attachments=[("na\u00efve r\u00e9sum\u00e9.pdf", b"%PDF", "application/pdf")])
    data = data.to_bytes()
    check_wire_form(data)
    assert b"filename*=utf-8''na%C3%AFve%20r%C3%A9sum%C3%A9.pdf" in data
    assert b"name*=utf-8''na%C3%AFve%20r%C3%A9sum%C3%A9.pdf" in data


def test_attachment_long_filename_continuations():
    name = "\u00fc" * 40 + "-" + "long name" * 10 + ".txt"
    data = build(attachments=[(name, b"x")]).to_bytes()
    check_wire_form(data)
    check_header_lines(data)
    disposition = parts_of(data)[1][1][0][1]
    assert disposition.startswith("Content-Disposition: attachment; filename*0*=utf-8''%C3%BC")
    params = disposition.split("; ")[1:]
    assert len(params) >= 3
    for index in range(len(params)):
        assert params[index].startswith("filename*%d*=" % index)
    assert b" filename*=" not in data


def test_attachment_filename_quotes_percent_encoded():
    data = build(attachments=[('my "quoted" \\ file.txt', b"x")]).to_bytes()
    assert b"filename*=utf-8''my%20%22quoted%22%20%5C%20file.txt" in data


def test_attachment_content_type_parameters():
    data = build(attachments=[("a.csv", b"x", 'Text/CSV; charset=utf-8; header="present"')])
    data = data.to_bytes()
    expected = b'Content-Type: text/csv; charset="utf-8"; header="present"; name="a.csv"\r\n'
    assert expected in data


def test_attachment_invalid_inputs():
    raises(InvalidInputError, Attachment, "", b"x")
    raises(InvalidInputError, Attachment, "a.txt", "text")
    raises(InvalidInputError, Attachment, 5, b"x")
    for content_type in (
        "text",
        "text/",
        "/plain",
        "text/pl ain",
        "text/plain; x",
        "text/plain; name=a",
        "text/plain; a=b c",
        "multipart/mixed",
        "message/rfc822",
        "text/plain; =x",
    ):
        exc = raises(InvalidInputError, Attachment, "a.txt", b"x", content_type)
        assert "content type" in str(exc)
    raises(InvalidInputError, build, attachments=["a.txt"])
    raises(InvalidInputError, build, attachments=[("a.txt",)])


def test_attachment_chunks_stream_in_slices():
    size = 57 * 4 * 30 + 10
    payload = bytes(bytearray([i % 251 for i in range(size)]))
    msg = build(attachments=[("big.bin", memoryview(payload))])
    pieces = list(msg.chunks())
    assert b"".join(pieces) == msg.to_bytes()
    # The 6,850 octets go out as 31 base64 pieces of at most 4 lines (312 bytes).
    slices = pieces[-32:-1]
    assert slices[0].startswith(b"AAECAwQF")
    assert max(len(piece) for piece in slices) <= 312
    check_wire_form(msg.to_bytes())


def test_attachment_view_of_wide_items_rejected():
    # base64 slices the data by items, so only views of single bytes are accepted.
    import array

    data = bytes(bytearray(range(200)))
    exc = raises(InvalidInputError, build, attachments=[("a.bin", memoryview(array.array("H", data)))])
    assert "memoryview of items wider than one byte" in str(exc)
    assert "pass bytes(data)" in str(exc)
    msg = build(attachments=[("a.bin", memoryview(data)[10:20])])
    check_wire_form(msg.to_bytes())
    try:
        stepped = memoryview(data)[::2]
    except NotImplementedError:
        # MicroPython's memoryview takes no step.
        return
    raises(InvalidInputError, build, attachments=[("a.bin", stepped)])


def test_boundary_avoids_text():
    original = mime._random_hex
    values = ["aaaa", "bbbb"]

    def fake_random_hex(size):
        return values.pop(0) if values else original(size)

    mime._random_hex = fake_random_hex
    try:
        msg = build(text="--=_aaaa\n", attachments=[("a.bin", b"x")])
    finally:
        mime._random_hex = original
    boundary, parts = parts_of(msg.to_bytes())
    assert boundary == b"=_bbbb"
    assert parts[0][1] == b"--=_aaaa\r\n"


def test_plain_message_loads_no_rare_module():
    # The encoders, the attachment code and the full input checks are imported only when
    # a message needs them, which keeps them off a small board's heap.
    names = ("microsmtp.checks", "microsmtp.encoding", "microsmtp.mime")
    loaded = {}
    for name in names:
        if name in sys.modules:
            loaded[name] = sys.modules.pop(name)
    try:
        msg = build(
            sender="Alerts <alerts@example.com>",
            to=[("Ops", "ops@example.com")],
            cc="Lee, Ann <ann.lee@example.org>",
            subject="[gh-1] Air temperature high",
            text="Value: 36.4 C\nThreshold: > 35.0 C\n",
            headers=[("X-Alert-Kind", "threshold")],
            message_id=None,
            date=None,
        )
        msg.to_bytes()
        for name in names:
            assert name not in sys.modules, name
    finally:
        for name in loaded:
            sys.modules[name] = loaded[name]
