"""Reply parser: framing, multi-line replies, enhanced codes, bounds, malformed input."""

from helpers import raises, splits
from microsmtp.errors import ProtocolError
from microsmtp.reply import ReplyParser


def parse_all(chunks, **kwargs):
    parser = ReplyParser(**kwargs)
    replies = []
    for chunk in chunks:
        parser.feed(chunk)
        while True:
            reply = parser.next_reply()
            if reply is None:
                break
            replies.append(reply)
    return parser, replies


def check_every_split(data, check, **kwargs):
    for chunks in splits(data):
        parser, replies = parse_all(chunks, **kwargs)
        check(replies)
        assert parser.buffered == 0


def test_single_line_reply():
    def check(replies):
        assert len(replies) == 1
        assert replies[0].code == 250
        assert replies[0].lines == ["OK"]
        assert replies[0].enhanced is None

    check_every_split(b"250 OK\r\n", check)


def test_multiline_greeting():
    data = b"220-mail.example.com ESMTP\r\n220-Second line\r\n220 Last line\r\n"

    def check(replies):
        assert len(replies) == 1
        assert replies[0].code == 220
        assert replies[0].lines == ["mail.example.com ESMTP", "Second line", "Last line"]

    check_every_split(data, check)


def test_ehlo_reply_lines():
    data = (
        b"250-smtp.example.com at your service\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n250-STARTTLS\r\n250 SMTPUTF8\r\n"
    )

    def check(replies):
        assert replies[0].lines[1:] == ["SIZE 35882577", "8BITMIME", "STARTTLS", "SMTPUTF8"]

    check_every_split(data, check)


def test_enhanced_status_code():
    data = b"535-5.7.8 Username and Password not accepted.\r\n535 5.7.8 Learn more at example\r\n"

    def check(replies):
        reply = replies[0]
        assert reply.code == 535
        assert reply.enhanced == "5.7.8"
        assert reply.lines == ["Username and Password not accepted.", "Learn more at example"]
        assert not reply.transient

    check_every_split(data, check)


def test_enhanced_code_class_must_match():
    _, replies = parse_all([b"250 4.1.1 odd\r\n"])
    assert replies[0].enhanced is None
    assert replies[0].lines == ["4.1.1 odd"]


def test_text_starting_with_digits_kept():
    _, replies = parse_all([b"250 2.0 is not enough\r\n", b"250 2.0.0\r\n"])
    assert replies[0].enhanced is None
    assert replies[0].lines == ["2.0 is not enough"]
    assert replies[1].enhanced == "2.0.0"
    assert replies[1].lines == [""]


def test_bare_code_without_text():
    _, replies = parse_all([b"250\r\n"])
    assert replies[0].code == 250
    assert replies[0].lines == [""]


def test_several_replies_in_one_chunk():
    def check(replies):
        assert [r.code for r in replies] == [250, 354, 221]

    check_every_split(b"250 a\r\n354 b\r\n221-c\r\n221 d\r\n", check)


def test_lf_only_line_end_accepted():
    _, replies = parse_all([b"250-a\n250 b\n"])
    assert replies[0].lines == ["a", "b"]


def test_incomplete_reply_needs_data():
    parser = ReplyParser()
    parser.feed(b"250-first\r\n250 sec")
    assert parser.next_reply() is None
    assert parser.buffered == len(b"250-first\r\n250 sec")
    parser.feed(b"ond\r\n")
    assert parser.next_reply().lines == ["first", "second"]


def test_transient_and_positive_flags():
    _, replies = parse_all([b"451 later\r\n", b"354 go\r\n", b"550 no\r\n"])
    assert replies[0].transient
    assert not replies[0].positive
    assert replies[1].positive
    assert not replies[2].transient


def test_utf8_text_decoded():
    _, replies = parse_all(["250 caf\u00e9\r\n".encode("utf-8")])
    assert replies[0].lines == ["caf\u00e9"]


def test_invalid_utf8_replaced():
    _, replies = parse_all([b"250 a\xffb\r\n"])
    assert replies[0].lines == ["a?b"]


MALFORMED = (
    b"25 short\r\n",
    b"abc text\r\n",
    b"2x0 text\r\n",
    b"150 first digit 1\r\n",
    b"650 first digit 6\r\n",
    b"050 first digit 0\r\n",
    b"260 second digit 6\r\n",
    b"250_bad separator\r\n",
    b"250-first\r\n251 code changed\r\n",
    b"250 bare\rCR\r\n",
    b"250 nul\x00byte\r\n",
    b"250 escape\x1b[31m\r\n",
    b"250 del\x7f\r\n",
    b"\r\n",
)


def test_malformed_replies_rejected():
    for data in MALFORMED:
        for chunks in splits(data):
            parser = ReplyParser()
            error = None
            for chunk in chunks:
                parser.feed(chunk)
                try:
                    while parser.next_reply() is not None:
                        pass
                except ProtocolError as exc:
                    error = exc
                    break
            assert error is not None, data


def test_parser_stays_broken():
    parser = ReplyParser()
    parser.feed(b"999 no\r\n")
    raises(ProtocolError, parser.next_reply)
    parser.feed(b"250 fine\r\n")
    raises(ProtocolError, parser.next_reply)


def test_tab_allowed_in_text():
    _, replies = parse_all([b"250 a\tb\r\n"])
    assert replies[0].lines == ["a\tb"]


def test_line_over_bound_rejected():
    parser = ReplyParser(max_line=64)
    parser.feed(b"250 " + b"x" * 61 + b"\r\n")
    error = raises(ProtocolError, parser.next_reply)
    assert "64" in str(error)


def test_line_at_bound_accepted():
    parser = ReplyParser(max_line=64)
    parser.feed(b"250 " + b"x" * 58 + b"\r\n")
    assert parser.next_reply().code == 250


def test_line_without_lf_rejected_early():
    # A peer that never sends LF must not grow the buffer without bound.
    parser = ReplyParser(max_line=64)
    parser.feed(b"250 " + b"x" * 100)
    raises(ProtocolError, parser.next_reply)


def test_endless_continuation_rejected():
    parser = ReplyParser(max_reply=1000)
    error = None
    for _ in range(200):
        parser.feed(b"250-more and more\r\n")
        try:
            assert parser.next_reply() is None
        except ProtocolError as exc:
            error = exc
            break
    assert error is not None
    assert "1000" in str(error)


def test_reply_describe():
    _, replies = parse_all([b"550-5.1.1 no such user\r\n550 5.1.1 try again\r\n"])
    assert replies[0].describe() == "550 5.1.1 no such user / try again"
