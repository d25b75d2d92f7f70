"""A local OAuth2 token endpoint over HTTPS for tests: the refresh-token grant, scripted.

``TokenServer(cert, client_id=..., refresh_token=...)`` listens on 127.0.0.1 at a port
the OS chose, with TLS from a trustme certificate (``servers.CertificateSet``). Each
connection reads one POST and checks it: the path, the form content type and its
fields (grant_type=refresh_token, the client_id, the current refresh token, and the
client_secret and scope when given). A request that fails a check gets 400
``invalid_grant`` (wrong refresh token) or ``invalid_request`` and is noted in
``problems``. One that passes is added to ``requests`` (its decoded form fields) and
gets the next scripted reply from ``replies``:

* ``tokens(access_token, expires_in=3600, refresh_token=None, chunked=False)``: 200
  with the tokens; a refresh_token replaces the one the server accepts from then on,
  as Microsoft's endpoint does.
* ``error(status, code, description=None)``: a JSON error reply (RFC 6749 section 5.2).
* ``status(code, body=b"")``: any other status with a raw body.
* ``raw(data)``: bytes as they are (a bad status line, JSON that does not parse).
* ``drop()``: close the connection without a reply.
* ``stall()``: send nothing until the client leaves.
* ``huge(size)``: a 200 reply whose body is ``size`` bytes long.
* ``echo(status)``: a JSON error reply whose error_description repeats the request body,
  secrets included.

``url_host`` (default "localhost") and ``query`` (default none) shape ``url``; the
request line and the Host field must match them.

Without a scripted reply left, the server replies with 500. Built on raw_server.RawServer.
"""

import json
import ssl
import threading
from urllib.parse import parse_qs

from raw_server import RawServer

PATH = "/common/oauth2/v2.0/token"


class Reply:
    def __init__(self, kind, **values):
        self.kind = kind
        self.values = values


def tokens(access_token, expires_in=3600, refresh_token=None, chunked=False):
    return Reply(
        "tokens", access_token=access_token, expires_in=expires_in, refresh_token=refresh_token, chunked=chunked
    )


def error(status, code, description=None):
    return Reply("error", status=status, code=code, description=description)


def status(code, body=b""):
    return Reply("status", code=code, body=body)


def raw(data):
    return Reply("raw", data=data)


def drop():
    return Reply("drop")


def stall():
    return Reply("stall")


def huge(size):
    return Reply("huge", size=size)


def echo(status):
    return Reply("echo", status=status)


def http_reply(code, body, content_type="application/json", chunked=False):
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 500: "Internal Server Error"}.get(code, "Status")
    head = "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nConnection: close\r\n" % (code, reason, content_type)
    if chunked:
        # Two chunks of about half the body each, then the last chunk and an empty trailer.
        half = len(body) // 2
        coded = b""
        for part in (body[:half], body[half:]):
            coded += b"%x\r\n" % len(part) + part + b"\r\n"
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + coded + b"0\r\n\r\n"
    return (head + "Content-Length: %d\r\n\r\n" % len(body)).encode() + body


class TokenServer:
    """The token endpoint of the module docstring; ``url`` is the token_url to configure (host localhost)."""

    def __init__(
        self,
        cert,
        *,
        client_id,
        refresh_token,
        client_secret=None,
        scope=None,
        replies=(),
        url_host="localhost",
        query="",
    ):
        self.client_id = client_id
        self.refresh_token = refresh_token
        self.client_secret = client_secret
        self.scope = scope
        self.replies = list(replies)
        self.requests = []
        self.problems = []
        self._lock = threading.Lock()
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self._context)
        self._server = RawServer(self._serve)
        self.port = self._server.port
        self.url_host = url_host
        self.target = PATH + ("?" + query if query else "")
        self.url = "https://%s:%d%s" % (url_host, self.port, self.target)

    def push(self, *replies):
        with self._lock:
            self.replies.extend(replies)

    def stop(self):
        self._server.stop()

    def _serve(self, connection):
        connection.start_tls(self._context)
        sock = connection.sock
        head, body = _read_request(sock)
        if head is None:
            return
        problem, form = self._check(head, body)
        if problem is not None:
            code, text = problem
            with self._lock:
                self.problems.append(text)
            sock.sendall(http_reply(400, json.dumps({"error": code, "error_description": text}).encode()))
            return
        with self._lock:
            self.requests.append(form)
            reply = self.replies.pop(0) if self.replies else status(500, b"no scripted reply left")
            if reply.kind == "tokens" and reply.values["refresh_token"] is not None:
                # The old refresh token stops working once a new one is issued.
                self.refresh_token = reply.values["refresh_token"]
        self._answer(sock, reply, body)

    def _check(self, head, body):
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()

        if lines[0] != "POST %s HTTP/1.1" % self.target:
            return ("invalid_request", "unexpected request line %r" % lines[0]), None
        if headers.get("content-type") != "application/x-www-form-urlencoded":
            return ("invalid_request", "unexpected content type %r" % headers.get("content-type")), None
        if headers.get("host") != "%s:%d" % (self.url_host, self.port) or headers.get("connection") != "close":
            return ("invalid_request", "unexpected Host or Connection header"), None

        try:
            fields = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeError, ValueError):
            return ("invalid_request", "the body is not form-encoded ASCII"), None
        form = {}
        for name, values in fields.items():
            if len(values) != 1:
                return ("invalid_request", "field %s given %d times" % (name, len(values))), None
            form[name] = values[0]

        expected = {"grant_type": "refresh_token", "client_id": self.client_id}
        if self.client_secret is not None:
            expected["client_secret"] = self.client_secret
        if self.scope is not None:
            expected["scope"] = self.scope
        if set(form) != set(expected) | {"refresh_token"}:
            return ("invalid_request", "fields %s, expected %s" % (sorted(form), sorted(expected))), None
        for name, value in expected.items():
            if form[name] != value:
                return ("invalid_request", "field %s has an unexpected value" % name), None
        if form["refresh_token"] != self.refresh_token:
            return ("invalid_grant", "the refresh token is not the current one"), None
        return None, form

    def _answer(self, sock, reply, request_body):
        values = reply.values
        if reply.kind == "tokens":
            body = {"token_type": "Bearer", "scope": "SMTP.Send", "expires_in": values["expires_in"]}
            body["access_token"] = values["access_token"]
            if values["refresh_token"] is not None:
                body["refresh_token"] = values["refresh_token"]
            sock.sendall(http_reply(200, json.dumps(body).encode(), chunked=values["chunked"]))
        elif reply.kind == "error":
            body = {"error": values["code"]}
            if values["description"]:
                body["error_description"] = values["description"]
            sock.sendall(http_reply(values["status"], json.dumps(body).encode()))
        elif reply.kind == "echo":
            text = "cannot parse " + request_body.decode("ascii")
            body = {"error": "invalid_request", "error_description": text}
            sock.sendall(http_reply(values["status"], json.dumps(body).encode()))
        elif reply.kind == "status":
            sock.sendall(http_reply(values["code"], values["body"], content_type="text/plain"))
        elif reply.kind == "raw":
            sock.sendall(values["data"])
        elif reply.kind == "huge":
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
            sock.sendall(head)
            sent = 0
            while sent < values["size"]:
                sock.sendall(b" " * 1024)
                sent += 1024
        elif reply.kind == "stall":
            sock.settimeout(30)
            while sock.recv(4096):
                pass
        # "drop": return, and RawServer closes the connection.


def _read_request(sock):
    """Return (head bytes, body bytes) of one request, or (None, None) if the client left early."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return None, None
        data += chunk
        if len(data) > 65536:
            return None, None
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            return None, None
        body += chunk
    return head, body
