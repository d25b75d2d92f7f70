"""Property tests of the DATA encoder: any content survives dot-stuffing intact."""

from hypothesis import given
from hypothesis import strategies as st

from microsmtp.transaction import DataEncoder

# Bytes rich in the characters that matter on the wire.
content = st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b" ", b"\r\n", b"\r\n.", b".\r\n"]), max_size=60).map(
    b"".join
) | st.binary(max_size=200).map(lambda data: data.replace(b"\0", b""))


def normalise(data):
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def receive(wire):
    """Undo DATA transparency as a server does (RFC 5321 section 4.5.2)."""
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    body = wire[: -len(b".\r\n")]
    lines = body.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


@given(content, st.lists(st.integers(min_value=1, max_value=7), max_size=30))
def test_encoded_content_decodes_to_normalised_input(data, cuts):
    encoder = DataEncoder()
    wire = b""
    start = 0
    for size in cuts:
        wire += encoder.encode(data[start : start + size])
        start += size
    wire += encoder.encode(data[start:])
    wire += encoder.finish()

    expected = normalise(data)
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert receive(wire) == expected
    body = wire[: -len(b".\r\n")]
    assert b"\r\n.\r\n" not in b"\r\n" + body
    assert b"\r" not in body.replace(b"\r\n", b"")
    assert b"\n" not in body.replace(b"\r\n", b"")
