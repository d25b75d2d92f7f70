"""SASL mechanisms for SMTP AUTH (RFC 4954): PLAIN, LOGIN and XOAUTH2.

Each mechanism is a small object that produces the initial response and answers the
server's 334 challenges; the session sends what it produces and decides what a reply
means. Payloads are returned base64-encoded, ready for the wire, and are never logged:
the session redacts every line it sends during AUTH.

CRAM-MD5 and SCRAM are left out on purpose: they need HMAC, which MicroPython lacks, and
AUTH is only ever sent inside TLS, where PLAIN is the usual choice of providers.

The session builds a password PLAIN exchange itself and imports this module only for
LOGIN and XOAUTH2, so that a board sending with PLAIN never loads it. ``Plain`` here
serves callers that use the mechanisms directly.
"""

import binascii

from .errors import AuthError, InvalidInputError
from .session import check_line_argument


def _credential(value, name):
    return check_line_argument(value, name, True)


def b64encode(data):
    return binascii.b2a_base64(data)[:-1]


def b64decode(data):
    try:
        return binascii.a2b_base64(data)
    except ValueError:
        return None


class Plain:
    """PLAIN (RFC 4616): one message with the identity and the password."""

    name = "PLAIN"

    def __init__(self, username, password):
        self._payload = b"\0" + _credential(username, "username") + b"\0" + _credential(password, "password")

    def initial_response(self):
        return b64encode(self._payload)

    def respond(self, challenge):
        # Servers that do not accept an initial response send an empty 334 first.
        if challenge:
            return None
        return b64encode(self._payload)


class Login:
    """LOGIN (draft-murchison-sasl-login): the username, then the password, each on request."""

    name = "LOGIN"

    def __init__(self, username, password):
        self._answers = [_credential(username, "username"), _credential(password, "password")]

    def initial_response(self):
        return None

    def respond(self, challenge):
        # The prompts ("Username:", "Password:") vary between servers, so the answers
        # are given in order instead of by matching the prompt text.
        if not self._answers:
            return None
        return b64encode(self._answers.pop(0))


class XOAuth2:
    """XOAUTH2 (Google and Microsoft): the user and an OAuth 2.0 bearer token.

    On failure the server sends a 334 with a base64 JSON status; the client must answer
    with an empty line, and the server then ends the exchange with an error reply.
    """

    name = "XOAUTH2"

    def __init__(self, username, token):
        user = _credential(username, "username")
        token = _credential(token, "OAuth2 token")
        self._payload = b"user=" + user + b"\x01auth=Bearer " + token + b"\x01\x01"
        self.error_status = None

    def initial_response(self):
        return b64encode(self._payload)

    def respond(self, challenge):
        status = b64decode(challenge) or challenge
        try:
            self.error_status = status.decode()
        except UnicodeError:
            self.error_status = repr(status)
        return b""


# Preference order when the caller's credentials allow several mechanisms. PLAIN comes
# first because it finishes in one round trip; LOGIN needs two.
_PASSWORD_MECHANISMS = ((Plain.name, Plain), (Login.name, Login))


def choose(offered, username, password=None, oauth2_token=None):
    """Return the mechanism to use, given the server's offered names (upper case).

    An OAuth2 token selects XOAUTH2 only; a password selects PLAIN, else LOGIN. Raise
    AuthError when the server offers nothing the credentials can use.
    """
    if username is None:
        raise InvalidInputError("a username is required for authentication")
    if oauth2_token is not None:
        if "XOAUTH2" in offered:
            return XOAuth2(username, oauth2_token)
        raise AuthError(
            "the server does not offer XOAUTH2 (offered: %s); use a password instead of an OAuth2 token"
            % (" ".join(offered) or "none"),
            stage="auth",
        )
    if password is None:
        raise InvalidInputError("a password or an OAuth2 token is required with a username")
    for name, mechanism in _PASSWORD_MECHANISMS:
        if name in offered:
            return mechanism(username, password)
    raise AuthError(
        "the server offers no password mechanism microsmtp supports (offered: %s; supported: PLAIN, LOGIN)"
        % (" ".join(offered) or "none"),
        stage="auth",
    )
