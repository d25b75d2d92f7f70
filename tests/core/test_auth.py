"""SASL mechanisms and the choice between them."""

from helpers import raises
from microsmtp import auth
from microsmtp.errors import AuthError, InvalidInputError


def test_plain_initial_response():
    mechanism = auth.Plain("alice", "secret")
    assert mechanism.initial_response() == b"AGFsaWNlAHNlY3JldA=="


def test_plain_answers_empty_challenge_only():
    mechanism = auth.Plain("alice", "secret")
    assert mechanism.respond(b"") == b"AGFsaWNlAHNlY3JldA=="
    assert mechanism.respond(b"c29tZXRoaW5n") is None


def test_plain_utf8_credentials():
    mechanism = auth.Plain("j\u00fcrgen", "p\u00e4ss")
    expected = auth.b64encode(b"\0" + "j\u00fcrgen".encode("utf-8") + b"\0" + "p\u00e4ss".encode("utf-8"))
    assert mechanism.initial_response() == expected


def test_login_answers_in_order():
    mechanism = auth.Login("alice", "secret")
    assert mechanism.initial_response() is None
    assert mechanism.respond(b"VXNlcm5hbWU6") == b"YWxpY2U="
    assert mechanism.respond(b"UGFzc3dvcmQ6") == b"c2VjcmV0"
    assert mechanism.respond(b"bW9yZT8=") is None


def test_xoauth2_initial_response():
    mechanism = auth.XOAuth2("user@example.com", "ya29.token")
    payload = auth.b64decode(mechanism.initial_response())
    assert payload == b"user=user@example.com\x01auth=Bearer ya29.token\x01\x01"


def test_xoauth2_error_challenge_answered_empty():
    mechanism = auth.XOAuth2("u", "t")
    assert mechanism.respond(b"eyJzdGF0dXMiOiI0MDEifQ==") == b""
    assert mechanism.error_status == '{"status":"401"}'


def test_choose_prefers_plain():
    assert auth.choose(["LOGIN", "PLAIN", "XOAUTH2"], "u", "p").name == "PLAIN"
    assert auth.choose(["LOGIN", "CRAM-MD5"], "u", "p").name == "LOGIN"


def test_choose_token_selects_xoauth2_only():
    assert auth.choose(["PLAIN", "XOAUTH2"], "u", oauth2_token="t").name == "XOAUTH2"
    error = raises(AuthError, auth.choose, ["PLAIN", "LOGIN"], "u", None, "t")
    assert "XOAUTH2" in str(error)
    assert not error.transient


def test_choose_nothing_usable():
    error = raises(AuthError, auth.choose, ["CRAM-MD5", "GSSAPI"], "u", "p")
    assert "CRAM-MD5" in str(error)
    error = raises(AuthError, auth.choose, [], "u", "p")
    assert "none" in str(error)


def test_credentials_checked():
    raises(InvalidInputError, auth.choose, ["PLAIN"], None, "p")
    raises(InvalidInputError, auth.choose, ["PLAIN"], "u", None)
    raises(InvalidInputError, auth.Plain, "", "p")
    raises(InvalidInputError, auth.Plain, "u", "")
    for bad in ("a\rb", "a\nb", "a\x00b"):
        raises(InvalidInputError, auth.Plain, bad, "p")
        raises(InvalidInputError, auth.Plain, "u", bad)
        raises(InvalidInputError, auth.Login, bad, "p")
        raises(InvalidInputError, auth.XOAuth2, "u", bad)


def test_error_messages_never_contain_secrets():
    for bad in ("hunter\n42", "hunter\x0042"):
        error = raises(InvalidInputError, auth.Plain, "u", bad)
        assert "hunter" not in str(error)
        assert "42" not in str(error)
