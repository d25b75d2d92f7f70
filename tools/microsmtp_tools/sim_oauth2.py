"""OAuth2 for ``microsmtp sim``: a local token endpoint and the XOAUTH2 check of the SMTP server.

``TokenEndpoint`` serves the refresh-token grant (RFC 6749 section 6) over HTTPS on
127.0.0.1, with a certificate from the sim's trustme CA. A request passes when it is a
form POST to ``PATH`` with grant_type=refresh_token, the expected client_id and
client_secret and the current refresh token; it then gets a fresh random access token
and, with ``rotate``, a new refresh token that replaces the current one. Anything else
gets 400 invalid_grant, with an error_description naming the problem. After
``revoke_after`` tokens the refresh token counts as revoked, as when the user withdraws
the board's authorization.

The SMTP server passes an XOAUTH2 initial response to ``parse_xoauth2()`` and its token
to ``TokenEndpoint.token_valid()``. A token expires ``expires_in`` seconds of real time
after it was issued, as the board ages its cached token with ticks_ms(), which the sim
does not speed up. In deep-sleep mode the board dates the token it saves for the next
wake by the simulated clock, so it renews the token sooner than the endpoint needs.
"""

import json
import secrets
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

PATH = "/oauth2/v2.0/token"
CLIENT_ID = "sim-board-client"
# Seconds a request may take, so that a stuck client does not keep a thread.
REQUEST_TIMEOUT_S = 10
# A refresh-token grant is a few hundred bytes, so a larger body is not one.
MAX_BODY = 4096
DEFAULT_EXPIRES_IN = 3600
OPTION_KEYS = ("expires_in", "rotate", "revoke_after")


def options_problem(value):
    """Return what is wrong with a scenario's oauth2 value, or None when it is valid."""
    if isinstance(value, bool):
        return None
    if not isinstance(value, dict) or not set(value) <= set(OPTION_KEYS):
        return "must be true, false or an object with %s" % ", ".join(OPTION_KEYS)
    expires_in = value.get("expires_in", DEFAULT_EXPIRES_IN)
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in < 1:
        return "expires_in must be a positive number of seconds, e.g. 3600"
    if not isinstance(value.get("rotate", False), bool):
        return "rotate must be true or false"
    revoke_after = value.get("revoke_after")
    if revoke_after is not None and (
        not isinstance(revoke_after, int) or isinstance(revoke_after, bool) or revoke_after < 0
    ):
        return "revoke_after must be a number of tokens from 0, e.g. 0 to reject the first request"
    return None


def options(value):
    """Return the settings of a valid scenario oauth2 value, or None when it is off."""
    if value is False or value is None:
        return None
    value = {} if value is True else value
    return {
        "expires_in": value.get("expires_in", DEFAULT_EXPIRES_IN),
        "rotate": value.get("rotate", False),
        "revoke_after": value.get("revoke_after"),
    }


class TokenEndpoint:
    """The token endpoint of the module docstring; ``url`` is the token_url for config.json."""

    def __init__(self, ca, expires_in=DEFAULT_EXPIRES_IN, rotate=False, revoke_after=None, on_secret=None):
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(self.context)
        self.client_id = CLIENT_ID
        self.client_secret = secrets.token_urlsafe(16)
        self.refresh_token = secrets.token_urlsafe(32)
        # The refresh token config.json starts with.
        self.first_refresh_token = self.refresh_token
        self.expires_in = expires_in
        self.rotate = rotate
        self.revoke_after = revoke_after
        # Called with each new secret (access and refresh tokens), e.g. to hide it in the board's log.
        self.on_secret = on_secret or (lambda secret: None)
        self.host = "127.0.0.1"
        self.port = 0
        self.issued = 0
        self.rejected = []  # why each rejected request was rejected, in order
        # Seconds of real time. A test may replace it.
        self.clock = time.monotonic
        self._tokens = {}  # access token: self.clock() at which it expires
        self._lock = threading.Lock()
        self._server = None
        self._thread = None

    @property
    def url(self):
        # A name, not the address: the board checks the certificate against the URL's host.
        return "https://localhost:%d%s" % (self.port, PATH)

    def settings(self):
        """Return smtp.oauth2 for config.json."""
        return {
            "token_url": self.url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": self.first_refresh_token,
        }

    def start(self):
        endpoint = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request, client_address):
                # The TLS handshake runs in the request's thread, so a slow client holds up no other.
                request.settimeout(REQUEST_TIMEOUT_S)
                try:
                    request = endpoint.context.wrap_socket(request, server_side=True)
                except (OSError, ValueError):
                    return
                super().finish_request(request, client_address)

        self._server = Server((self.host, self.port), _handler_class(self))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def grant(self, fields):
        """Return (status, JSON reply) for the decoded form fields of one request."""

        def field(name):
            values = fields.get(name)
            return values[0] if values and len(values) == 1 else None

        with self._lock:
            if field("grant_type") != "refresh_token":
                return self._reject("grant_type must be refresh_token")
            if field("client_id") != self.client_id or field("client_secret") != self.client_secret:
                return self._reject("unknown client or wrong client secret")
            if field("refresh_token") != self.refresh_token:
                return self._reject("the refresh token is not valid")
            if self.revoke_after is not None and self.issued >= self.revoke_after:
                return self._reject("the authorization was revoked")
            token = secrets.token_urlsafe(32)
            self.on_secret(token)
            self._tokens[token] = self.clock() + self.expires_in
            self.issued += 1
            reply = {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
            if self.rotate:
                self.refresh_token = secrets.token_urlsafe(32)
                self.on_secret(self.refresh_token)
                reply["refresh_token"] = self.refresh_token
            return 200, reply

    def _reject(self, description):
        self.rejected.append(description)
        return 400, {"error": "invalid_grant", "error_description": description}

    def token_valid(self, token):
        with self._lock:
            expires = self._tokens.get(token)
        return expires is not None and self.clock() < expires


def _handler_class(endpoint):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = self.headers.get("Content-Length", "")
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if (
                self.path != PATH
                or content_type != "application/x-www-form-urlencoded"
                or not length.isdigit()
                or int(length) > MAX_BODY
            ):
                with endpoint._lock:
                    status, reply = endpoint._reject("expected a form POST to %s" % PATH)
            else:
                body = self.rfile.read(int(length))
                try:
                    fields = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
                except (UnicodeError, ValueError):
                    fields = {}
                status, reply = endpoint.grant(fields)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True

        def do_GET(self):
            self.send_error(405)

        def log_message(self, format, *args):
            # The sim prints the board's side of every request; the request line has no secrets,
            # but the summary counts the requests.
            pass

    return Handler


def parse_xoauth2(payload):
    """Return (user, token) from a decoded XOAUTH2 initial response, or None when it is malformed."""
    try:
        text = payload.decode("ascii")
    except UnicodeError:
        return None
    fields = {}
    parts = text.split("\x01")
    if len(parts) < 3 or parts[-2:] != ["", ""]:
        return None
    for part in parts[:-2]:
        name, sep, value = part.partition("=")
        if not sep:
            return None
        fields[name] = value
    auth = fields.get("auth", "")
    if "user" not in fields or not auth.startswith("Bearer "):
        return None
    return fields["user"], auth[len("Bearer ") :]


def xoauth2_failure_status():
    """Return the JSON status a server sends in its 334 challenge after a rejected token."""
    return json.dumps({"status": "401", "schemes": "bearer"})
