"""OAuth2 token refresh on the board (alerts.oauth2): the request, reply parsing, errors, cache and flash.

No network here: tests/test_oauth2.py runs the same code against a local HTTPS endpoint.
The smtp.oauth2 checks of config.json are here too.
"""

import json
import os
import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from alerts import clock, oauth2
from alerts.config import ConfigError, validate
from alerts.oauth2 import TokenError

from helpers import fresh_directory, listdir, raises, remove_tree

HOST = "login.example.com"
REFRESH = "rt-config/with+special=chars"
SECRET = "client-secret-value"


def settings(**changes):
    values = {
        "token_url": "https://login.example.com/consumers/oauth2/v2.0/token",
        "client_id": "client-1",
        "refresh_token": REFRESH,
        "client_secret": None,
        "scope": "https://outlook.office.com/SMTP.Send offline_access",
    }
    values.update(changes)
    return values


def http(status_line, headers, body):
    head = status_line + "\r\n" + "".join([name + ": " + value + "\r\n" for name, value in headers])
    return head.encode() + b"\r\n" + body


def json_reply(status, value, reason="OK"):
    body = json.dumps(value).encode()
    return http("HTTP/1.1 %d %s" % (status, reason), [("Content-Length", str(len(body)))], body)


# -- the request ---------------------------------------------------------------------------


def test_quote_unreserved_characters():
    assert oauth2.quote("AZaz09-._~") == "AZaz09-._~"
    assert oauth2.quote("a b+c/d=e&f") == "a%20b%2Bc%2Fd%3De%26f"
    assert oauth2.quote("\u00e9") == "%C3%A9"
    assert oauth2.quote("%") == "%25"


def test_form_body_refresh_grant():
    body = oauth2.form_body(settings(), REFRESH).decode()
    assert body == (
        "grant_type=refresh_token&refresh_token=rt-config%2Fwith%2Bspecial%3Dchars&client_id=client-1"
        "&scope=https%3A%2F%2Foutlook.office.com%2FSMTP.Send%20offline_access"
    )
    body = oauth2.form_body(settings(client_secret=SECRET, scope=None), "rt-2").decode()
    assert body == "grant_type=refresh_token&refresh_token=rt-2&client_id=client-1&client_secret=client-secret-value"


def test_request_head_and_length():
    body = b"grant_type=refresh_token"
    request = oauth2.build_request(HOST, 443, "/token", body)
    head, _, rest = request.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /token HTTP/1.1"
    assert "Host: login.example.com" in lines
    assert "Content-Type: application/x-www-form-urlencoded" in lines
    assert "Content-Length: %d" % len(body) in lines
    assert "Connection: close" in lines
    assert rest == body
    assert b"Host: localhost:8443\r\n" in oauth2.build_request("localhost", 8443, "/", b"")


def test_split_url():
    assert oauth2.split_url("https://oauth2.googleapis.com/token") == ("oauth2.googleapis.com", 443, "/token")
    assert oauth2.split_url("https://localhost:8443") == ("localhost", 8443, "/")
    for url in ("http://login.example.com/token", "https://:443/x", "https://a:0/", "https://a:x/", "https://u@h/"):
        error = raises(TokenError, oauth2.split_url, url)
        assert not error.transient, url
        assert "token_url" in str(error)


# -- parsing the reply ---------------------------------------------------------------------


def test_content_length_reply():
    raw = json_reply(200, {"access_token": "at-1"}) + b"ignored after the length"
    status, body = oauth2.parse_response(raw, HOST)
    assert status == 200
    assert json.loads(body.decode()) == {"access_token": "at-1"}
    assert oauth2.reply_complete(raw)
    assert not oauth2.reply_complete(raw[:-30])
    assert not oauth2.reply_complete(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n")


def test_chunked_reply_extension_trailer():
    body = b'{"access_token": "at-1"}'
    chunked = b"5;name=value\r\n" + body[:5] + b"\r\n" + ("%x\r\n" % (len(body) - 5)).encode() + body[5:] + b"\r\n"
    raw = http("HTTP/1.1 200 OK", [("Transfer-Encoding", "chunked")], chunked + b"0\r\nX-Trailer: 1\r\n\r\n")
    assert oauth2.reply_complete(raw)
    assert not oauth2.reply_complete(raw[:-2])
    assert oauth2.parse_response(raw, HOST) == (200, body)
    assert oauth2.dechunk(b"4\r\nabcd\r\n0\r\n\r\n") == b"abcd"
    assert oauth2.dechunk(b"4\r\nab") is None


def test_malformed_replies_are_transient():
    cases = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5",
        b"SMTP 220 hello\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
    ]
    for raw in cases:
        error = raises(TokenError, oauth2.parse_response, raw, HOST)
        assert error.transient, raw
        assert error.stage == "token"
        assert "malformed HTTP reply" in str(error), str(error)
        assert HOST in str(error)


def test_success_reply_token_fields():
    reply = oauth2.reply_json(200, b'{"access_token": "at-1", "token_type": "Bearer", "expires_in": 3599}', HOST)
    assert oauth2.token_from_reply(reply, HOST) == ("at-1", 3599, None)
    reply = {"access_token": "at-2", "token_type": "bearer", "expires_in": "3600", "refresh_token": "rt-2"}
    assert oauth2.token_from_reply(reply, HOST) == ("at-2", 3600, "rt-2")
    # Without a lifetime the token is not kept for later rounds.
    assert oauth2.token_from_reply({"access_token": "at-3"}, HOST) == ("at-3", 0, None)


def test_invalid_success_replies():
    error = raises(TokenError, oauth2.reply_json, 200, b"<html>not json</html>", HOST)
    assert error.transient
    assert "not JSON" in str(error)
    for reply in ([1, 2], {"token_type": "Bearer"}, {"access_token": ""}, {"access_token": "a b"}):
        error = raises(TokenError, oauth2.token_from_reply, reply, HOST)
        assert error.transient, reply
    error = raises(TokenError, oauth2.token_from_reply, {"access_token": "x", "token_type": "mac"}, HOST)
    assert not error.transient
    assert "Bearer" in str(error)


def error_reply(status, body):
    return raises(TokenError, oauth2.reply_json, status, body, HOST)


def test_rejected_refresh_token_permanent():
    for status, code in ((400, "invalid_grant"), (401, "invalid_client"), (400, "unauthorized_client")):
        body = json.dumps({"error": code, "error_description": "AADSTS70000: grant expired\r\nTrace ID: 1"})
        error = error_reply(status, body.encode())
        assert not error.transient, code
        assert error.status == status
        assert error.stage == "token"
        text = str(error)
        assert HOST in text
        assert "HTTP %d %s: AADSTS70000: grant expired" % (status, code) in text, text
        assert "Trace ID" not in text
        assert "authorize the board again and put the new refresh token in config.json" in text


def test_other_client_errors_are_permanent():
    error = error_reply(400, b'{"error": "invalid_scope"}')
    assert not error.transient
    assert "check smtp.oauth2" in str(error)
    error = error_reply(404, b"not found")
    assert not error.transient
    assert "HTTP 404" in str(error)
    error = error_reply(302, b"")
    assert not error.transient
    assert "token_url" in str(error)


def test_server_errors_are_transient():
    for status, body in ((500, b"oops"), (503, b'{"error": "temporarily_unavailable"}'), (429, b""), (408, b"")):
        error = error_reply(status, body)
        assert error.transient, status
        assert "retry later" in str(error)
        assert "HTTP %d" % status in str(error)


def test_error_text_printable_short():
    body = json.dumps({"error": "invalid_grant", "error_description": "\x1b[31m" + "x" * 500})
    text = str(error_reply(400, body.encode()))
    assert "\x1b" not in text
    assert len(text) < 400


# -- the cache and the refresh token on flash ----------------------------------------------


def new_cache(refresh=None):
    return {"token": None, "ticks": 0, "life": 0, "refresh": refresh, "expires": None, "issued": None, "unsaved": 0}


def load_refresh(configured, path):
    """Return the refresh token that a board with config.json's token ``configured`` uses after a reset."""
    cache = new_cache()
    oauth2._load_state(settings(refresh_token=configured), cache, path, False)
    return cache["refresh"]


def save_refresh(configured, refresh, path):
    oauth2._save_state(settings(refresh_token=configured), new_cache(refresh), path)


def test_cached_token_until_margin():
    values = settings()
    assert oauth2.cached_token(values) is None
    values["cache"] = {"token": "at-1", "ticks": clock.ticks_ms(), "life": 3600, "refresh": REFRESH}
    assert oauth2.cached_token(values) == "at-1"
    token, fetched = asyncio.run(oauth2.access_token(values, None, 5, "/nonexistent/state.json"))
    assert (token, fetched) == ("at-1", False)
    values["cache"]["life"] = oauth2.MARGIN_S
    assert oauth2.cached_token(values) is None
    values["cache"]["life"] = 3600
    values["cache"]["ticks"] = clock.ticks_ms() - (3600 - oauth2.MARGIN_S + 1) * 1000
    assert oauth2.cached_token(values) is None
    values["cache"]["ticks"] = clock.ticks_ms()
    oauth2.forget(values)
    assert oauth2.cached_token(values) is None


def test_saved_refresh_token_until_config_changes():
    directory, path = state_file()
    try:
        assert load_refresh(REFRESH, path) == REFRESH
        save_refresh(REFRESH, "rt-2", path)
        with open(path) as file:
            text = file.read()
        assert "rt-2" in text
        # Only a digest of the configured token is stored, never the token itself.
        assert REFRESH not in text
        assert load_refresh(REFRESH, path) == "rt-2"
        # The user authorized again and put a new token in config.json.
        assert load_refresh("rt-new", path) == "rt-new"
        with open(path, "w") as file:
            file.write("{broken")
        assert load_refresh(REFRESH, path) == REFRESH
        assert listdir(directory) == ["oauth2_token.json"]
    finally:
        remove_tree(directory)


# -- smtp.oauth2 in config.json ------------------------------------------------------------


def base_config(**oauth2_settings):
    config = {
        "device": "board-1",
        "wifi": {"ssid": "home"},
        "smtp": {
            "host": "smtp.office365.com",
            "user": "alerts@example.com",
            "from": "alerts@example.com",
            "to": ["you@example.com"],
            "oauth2": {
                "token_url": "https://login.microsoftonline.com/organizations/oauth2/v2.0/token",
                "client_id": "client-1",
                "refresh_token": "refresh-secret",
                "scope": "https://outlook.office.com/SMTP.Send offline_access",
            },
        },
        "ntp": {"host": "pool.ntp.org"},
        "sensors": [{"name": "board", "type": "mcu_temperature"}],
    }
    config["smtp"]["oauth2"].update(oauth2_settings)
    return config


def config_error(config):
    error = raises(ConfigError, validate, config)
    assert "refresh-secret" not in str(error)
    assert "secret-2" not in str(error)
    return error


def test_oauth2_config_defaults():
    config = validate(base_config())
    oauth2_settings = config["smtp"]["oauth2"]
    assert oauth2_settings["client_secret"] is None
    assert config["smtp"]["password"] is None
    assert config["smtp"]["oauth2_token"] is None
    config = validate(base_config(token_url="https://oauth2.googleapis.com/token", client_secret="secret-2"))
    assert config["smtp"]["oauth2"]["client_secret"] == "secret-2"
    from alerts.config import describe

    text = describe(config)
    assert "oauth2.googleapis.com" in text
    assert "secret-2" not in text
    assert "refresh-secret" not in text


def test_oauth2_config_errors_name_key():
    cases = [
        ("token_url", "http://login.example.com/token", "smtp.oauth2.token_url is invalid: expected an https URL"),
        ("token_url", "https://login.example.com:99999/token", "smtp.oauth2.token_url is invalid"),
        ("token_url", "https:///token", "smtp.oauth2.token_url is invalid"),
        ("client_id", "id with space", "smtp.oauth2.client_id is invalid: expected a string without spaces"),
        ("client_id", 12, "smtp.oauth2.client_id is invalid"),
        ("refresh_token", "line\nbreak", "smtp.oauth2.refresh_token is invalid"),
        ("refresh_token", "with space", "smtp.oauth2.refresh_token is invalid"),
        ("client_secret", "nul\x00", "smtp.oauth2.client_secret is invalid"),
        ("scope", " leading", "smtp.oauth2.scope is invalid: expected scopes separated by single spaces"),
        ("scope", "a\r\nb", "smtp.oauth2.scope is invalid"),
        ("extra", "x", "unknown key smtp.oauth2.extra"),
    ]
    for key, value, expected in cases:
        error = config_error(base_config(**{key: value}))
        assert expected in str(error), (key, str(error))
        assert error.key.startswith("smtp.oauth2."), error.key
    for key in ("token_url", "client_id", "refresh_token"):
        config = base_config()
        del config["smtp"]["oauth2"][key]
        error = config_error(config)
        assert "smtp.oauth2.%s is missing" % key in str(error), str(error)


def test_oauth2_secrets_not_shown():
    for key in ("refresh_token", "client_secret"):
        error = config_error(base_config(**{key: "secret-2 with space"}))
        assert "not shown because it is secret" in str(error), str(error)
    config = base_config()
    config["smtp"]["oauth2"] = "refresh-secret"
    error = config_error(config)
    assert "smtp.oauth2 is invalid: expected an object" in str(error)


def test_oauth2_with_password_rejected():
    for key in ("password", "oauth2_token"):
        config = base_config()
        config["smtp"][key] = "secret-2"
        error = config_error(config)
        assert "smtp.oauth2 and smtp.%s are both set" % key in str(error), str(error)
    config = base_config()
    del config["smtp"]["user"]
    assert "smtp.user is missing" in str(config_error(config))


# -- hostile replies, damaged state, token_url forms ---------------------------------------


def test_chunk_size_hex_digits_only():
    # A negative size once moved back in the body, so the same lines were parsed forever.
    for body in (b"1\r\nA\r\n-6\r\n", b"-2\r\n0\r\n\r\n", b"+2\r\nab\r\n0\r\n\r\n", b"0x2\r\nab\r\n0\r\n\r\n"):
        raises(ValueError, oauth2.dechunk, body)
        raw = http("HTTP/1.1 200 OK", [("Transfer-Encoding", "chunked")], body)
        # The reply counts as complete, so reading stops, and as malformed.
        assert oauth2.reply_complete(raw), body
        error = raises(TokenError, oauth2.parse_response, raw, HOST)
        assert error.transient
        assert "bad chunk size" in str(error), str(error)
    assert oauth2.dechunk(b"A\r\n0123456789\r\n0\r\n\r\n") == b"0123456789"


def _token_from_body(status, body):
    """Return the TokenError of a reply, or None when MicroPython ran out of memory parsing it."""
    try:
        oauth2.token_from_reply(oauth2.reply_json(status, body, HOST), HOST)
    except TokenError as exc:
        return exc
    except MemoryError:
        # The sender keeps the alerts after a MemoryError, like after a transient failure.
        assert sys.implementation.name == "micropython"
        return None
    raise AssertionError("expected TokenError for HTTP %d" % status)


def test_deeply_nested_json_is_not_json():
    # The deepest nesting a reply within MAX_REPLY can hold. CPython raised RecursionError,
    # which ended the delivery round and reset the board.
    depth = oauth2.MAX_REPLY // 2
    body = b"[" * depth + b"]" * depth
    error = _token_from_body(200, body)
    if error is not None:
        assert error.transient
        assert "JSON" in str(error), str(error)
    error = _token_from_body(400, body)
    if error is not None:
        assert error.status == 400
        assert not error.transient
    # A state file nested deeper than CPython's recursion limit (MicroPython parses it).
    directory, path = state_file()
    try:
        with open(path, "wb") as file:
            file.write(b"[" * 3000 + b"]" * 3000)
        assert load_refresh(REFRESH, path) == REFRESH
    finally:
        remove_tree(directory)


def test_secrets_repeated_by_reply_hidden():
    hidden = [REFRESH, SECRET]
    sent = oauth2.form_body(settings(client_secret=SECRET), REFRESH).decode()
    # The secrets as sent (form-encoded), as plain text, and cut at the 120-character limit.
    descriptions = ["cannot parse " + sent, "token %s secret %s" % (REFRESH, SECRET), "x" * 110 + SECRET]
    for description in descriptions:
        body = json.dumps({"error": "invalid_request " + SECRET, "error_description": description}).encode()
        text = str(raises(TokenError, oauth2.reply_json, 400, body, HOST, hidden))
        assert "[hidden]" in text, text
        for secret in (REFRESH, oauth2.quote(REFRESH), SECRET, SECRET[:8], "rt-config%2F"):
            assert secret not in text, (secret, text)
    text = str(raises(TokenError, oauth2.parse_response, b"HTTP/1.1 " + SECRET.encode() + b"\r\n\r\n", HOST, hidden))
    assert SECRET not in text
    reply = {"access_token": "at-1", "token_type": REFRESH}
    assert REFRESH not in str(raises(TokenError, oauth2.token_from_reply, reply, HOST, hidden))


def test_damaged_state_files_ignored():
    directory, path = state_file()
    fingerprint = oauth2._fingerprint(REFRESH)
    large = json.dumps({"refresh_token": "rt-saved", "configured": fingerprint, "pad": "x" * oauth2.MAX_REPLY})
    cases = [
        b"",
        b"\xff\xfe{",
        b"[1, 2]",
        json.dumps({"refresh_token": 5, "configured": fingerprint}).encode(),
        json.dumps({"refresh_token": "a b", "configured": fingerprint}).encode(),
        # Larger than any token file: not read whole.
        large.encode(),
    ]
    try:
        for data in cases:
            with open(path, "wb") as file:
                file.write(data)
            assert load_refresh(REFRESH, path) == REFRESH, data[:40]
    finally:
        remove_tree(directory)


def test_interrupted_save_keeps_newest_refresh_token():
    directory, path = state_file()
    try:
        save_refresh(REFRESH, "rt-2", path)
        # A reset after the .tmp copy was written, before the rename (on FAT after the
        # old file was removed): the .tmp copy contains the newest token.
        os.rename(path, path + ".tmp")
        assert load_refresh(REFRESH, path) == "rt-2"
        save_refresh(REFRESH, "rt-1", path)
        os.rename(path, path + ".keep")
        save_refresh(REFRESH, "rt-3", path)
        os.rename(path, path + ".tmp")
        os.rename(path + ".keep", path)
        assert load_refresh(REFRESH, path) == "rt-3"
        # A reset while the .tmp copy was written: it is partial, the older file counts.
        with open(path + ".tmp", "w") as file:
            file.write('{"refresh_token": "rt-4", "config')
        assert load_refresh(REFRESH, path) == "rt-1"
        # The next save completes normally.
        save_refresh(REFRESH, "rt-5", path)
        assert load_refresh(REFRESH, path) == "rt-5"
        assert listdir(directory) == ["oauth2_token.json"]
    finally:
        remove_tree(directory)


class _SlowWriter:
    """A connection whose peer never confirms the close."""

    def __init__(self):
        self.closed = False
        self.aborted = False
        self.transport = self

    def close(self):
        self.closed = True

    async def wait_closed(self):
        await asyncio.sleep(3600)

    def abort(self):
        self.aborted = True


def test_close_after_deadline_aborts():
    # After a timeout nothing is left of the budget: the connection is aborted, not
    # waited for (CPython waited up to 2 s more for the peer's TLS close).
    writer = _SlowWriter()
    deadline = oauth2._Deadline(0, HOST)
    asyncio.run(oauth2._close(writer, deadline))
    assert writer.closed
    assert writer.aborted


# (URL, (host, port, path)) or (URL, None) for a URL that config.json and the request reject.
TOKEN_URLS = [
    ("https://login.example.com/t?tenant=a%20b", ("login.example.com", 443, "/t?tenant=a%20b")),
    ("https://login.example.com?tenant=a", ("login.example.com", 443, "/?tenant=a")),
    ("https://login.example.com/t#part", ("login.example.com", 443, "/t")),
    ("https://login.example.com#part", ("login.example.com", 443, "/")),
    ("https://127.0.0.1:8443/token", ("127.0.0.1", 8443, "/token")),
    ("https://[::1]:8443/token", ("::1", 8443, "/token")),
    ("https://[2001:db8::5]/token", ("2001:db8::5", 443, "/token")),
    ("https://login.example.com:/token", None),
    ("https://[::1/token", None),
    ("https://[::1]8443/token", None),
    ("https://[example.com]/token", None),
    ("https://a:b:443/token", None),
    ("https://login.example.com\x01/token", None),
    ("https://login.example.com/t\x7f", None),
    ("https://l\u00f6gin.example.com/token", None),
    ("https://login.example.com\\@evil/token", None),
    ("https://user@login.example.com/token", None),
]


def test_token_url_forms_match_config():
    for url, expected in TOKEN_URLS:
        if expected is None:
            assert not raises(TokenError, oauth2.split_url, url).transient, url
            assert "token_url is invalid" in str(config_error(base_config(token_url=url))), url
        else:
            assert oauth2.split_url(url) == expected, url
            validate(base_config(token_url=url))
    request = oauth2.build_request("::1", 8443, "/t", b"")
    assert b"\r\nHost: [::1]:8443\r\n" in request
    assert b"\r\nHost: [::1]\r\n" in oauth2.build_request("::1", 443, "/t", b"")


def connect_failing(code):
    """Return a stand-in for microsmtp.client.open_stream() that raises OSError(code)."""

    async def connect(*args, **kwargs):
        raise OSError(code, "connection failed")

    return connect


def test_out_of_memory_in_token_request():
    # With mbedTLS on the GC heap (Pico W), a short heap fails the connection with ENOMEM
    # or an mbedTLS ALLOC_FAILED code. That is a lack of memory, which the sender
    # handles by keeping the alerts and collecting the heap, not a network failure.
    import microsmtp.client

    saved = (microsmtp.client.make_ssl_context, microsmtp.client.open_stream)
    microsmtp.client.make_ssl_context = lambda roots: None
    try:
        for code in (12, -0x7F00):
            microsmtp.client.open_stream = connect_failing(code)
            error = raises(MemoryError, asyncio.run, oauth2.exchange(HOST, 443, b"", [b"root"], 5))
            assert "token request ran out of memory" in str(error), code

        microsmtp.client.open_stream = connect_failing(111)
        error = raises(TokenError, asyncio.run, oauth2.exchange(HOST, 443, b"", [b"root"], 5))
        assert error.transient
    finally:
        microsmtp.client.make_ssl_context, microsmtp.client.open_stream = saved


# -- saves that fail, the access token across deep sleep -----------------------------------

# 2026-01-01 00:00:00 UTC, a time the clock may show once NTP set it.
NOW = 1767225600
UNSET = 946684800 + 120


class Recorder:
    """Stand-in for alerts.log that keeps the lines."""

    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append("INFO " + message)

    def warning(self, message):
        self.lines.append("WARN " + message)

    def error(self, message):
        self.lines.append("ERROR " + message)

    def count(self, text):
        return len([line for line in self.lines if text in line])


class Endpoint:
    """Replaces alerts.oauth2.request_token() and the clock and log: each request gets the next reply."""

    def __init__(self, *replies):
        self.replies = list(replies)
        self.requests = []
        self.log = Recorder()
        self.now = NOW

    async def request_token(self, values, refresh_token, ca_roots, timeout_s):
        self.requests.append(refresh_token)
        return self.replies.pop(0)

    def __enter__(self):
        self._saved = (oauth2.request_token, oauth2.log, clock.now)
        oauth2.request_token = self.request_token
        oauth2.log = self.log
        clock.now = lambda: self.now
        return self

    def __exit__(self, *exc):
        oauth2.request_token, oauth2.log, clock.now = self._saved


def tokens(access_token, expires_in=3600, refresh_token=None):
    reply = {"access_token": access_token, "token_type": "Bearer", "expires_in": expires_in}
    if refresh_token is not None:
        reply["refresh_token"] = refresh_token
    return reply


def get_token(values, path, keep=False):
    if keep:
        return asyncio.run(oauth2.access_token(values, None, 5, path, keep=True))
    return asyncio.run(oauth2.access_token(values, None, 5, path))


def state_file():
    """Return a fresh directory and the path of oauth2_token.json in it."""
    directory = fresh_directory("alerts-oauth2-test")
    return directory, directory + "/oauth2_token.json"


def read_state(path):
    with open(path) as file:
        return json.loads(file.read())


def test_failed_save_retried_until_it_succeeds():
    directory, path = state_file()
    # A directory where the file belongs: every write of the file fails.
    os.mkdir(path)
    values = settings()
    try:
        with Endpoint(tokens("at-1", refresh_token="rt-2")) as endpoint:
            assert get_token(values, path) == ("at-1", True)
            assert endpoint.log.count("could not be written") == 1
            assert "the new refresh token" in endpoint.log.lines[-1], endpoint.log.lines
            assert values["cache"]["unsaved"]
            # Each later call tries again, with the token from the cache. The error is logged once.
            assert get_token(values, path) == ("at-1", False)
            assert get_token(values, path) == ("at-1", False)
            assert endpoint.log.count("could not be written") == 1
            os.rmdir(path)
            assert get_token(values, path) == ("at-1", False)
            assert endpoint.log.count("written at last") == 1
            assert read_state(path)["refresh_token"] == "rt-2"
            assert load_refresh(REFRESH, path) == "rt-2"
            assert not values["cache"]["unsaved"]
            assert get_token(values, path) == ("at-1", False)
            assert endpoint.log.count("written at last") == 1
            assert len(endpoint.requests) == 1
            # Outside deep sleep, the access token stays in RAM.
            assert "access_token" not in read_state(path)
    finally:
        remove_tree(directory)


def test_failed_save_retried_before_next_request():
    directory, path = state_file()
    os.mkdir(path)
    values = settings()
    try:
        # A token without a lifetime is not cached, so the next call requests again.
        with Endpoint(tokens("at-1", expires_in=0, refresh_token="rt-2"), tokens("at-2", expires_in=0)) as endpoint:
            assert get_token(values, path) == ("at-1", True)
            os.rmdir(path)
            assert get_token(values, path) == ("at-2", True)
            assert endpoint.requests == [REFRESH, "rt-2"]
            assert read_state(path)["refresh_token"] == "rt-2"
            assert endpoint.log.count("written at last") == 1
    finally:
        remove_tree(directory)


def wake(path, **changes):
    """Return (token, fetched) of the first token use after a wake: nothing of the last wake is in RAM."""
    return get_token(settings(**changes), path, keep=True)


def test_access_token_kept_across_wakes():
    directory, path = state_file()
    try:
        with Endpoint(tokens("at-1"), tokens("at-2")) as endpoint:
            assert wake(path) == ("at-1", True)
            state = read_state(path)
            assert state["access_token"] == "at-1"
            assert state["issued"] == NOW
            assert state["expires"] == NOW + 3600
            # The refresh token did not change: config.json contains it, the file only its digest.
            assert "refresh_token" not in state
            assert REFRESH not in json.dumps(state)
            endpoint.now = NOW + 1200
            assert wake(path) == ("at-1", False)
            assert wake(path) == ("at-1", False)
            assert len(endpoint.requests) == 1
            assert endpoint.log.count("access token from %s, valid for 2400 s more" % path) == 2
            # Within a wake the token then comes from the cache in RAM.
            values = settings()
            assert get_token(values, path, keep=True) == ("at-1", False)
            assert values["cache"]["life"] == 2400
            assert get_token(values, path, keep=True) == ("at-1", False)
            # Without deep sleep the saved token is not used, and the new one not saved.
            # test_leaving_deep_sleep_removes_kept_token() covers the kept one.
            assert get_token(settings(), path) == ("at-2", True)
            assert "at-2" not in json.dumps(read_state(path))
            assert listdir(directory) == ["oauth2_token.json"]
    finally:
        remove_tree(directory)


def test_rotation_and_token_one_write():
    directory, path = state_file()
    try:
        with Endpoint(tokens("at-1", refresh_token="rt-2"), tokens("at-2", refresh_token="rt-3")) as endpoint:
            assert wake(path) == ("at-1", True)
            state = read_state(path)
            assert state["refresh_token"] == "rt-2"
            assert state["access_token"] == "at-1"
            assert endpoint.log.count("saved to") == 1
            endpoint.now = NOW + 3600
            assert wake(path) == ("at-2", True)
            assert endpoint.requests == [REFRESH, "rt-2"]
            state = read_state(path)
            assert state["refresh_token"] == "rt-3"
            assert state["access_token"] == "at-2"
            assert state["issued"] == NOW + 3600
    finally:
        remove_tree(directory)


def test_kept_token_not_reused():
    # (case, clock at the next wake, changes to config.json), for a token saved at NOW.
    cases = [
        ("expired", NOW + 3600 - oauth2.MARGIN_S, {}),
        ("clock unset", UNSET, {}),
        ("clock moved back", NOW - 60, {}),
        ("new refresh token in config.json", NOW + 60, {"refresh_token": "rt-new"}),
        ("other client_id", NOW + 60, {"client_id": "client-2"}),
        ("other token_url", NOW + 60, {"token_url": "https://login.example.com/organizations/oauth2/v2.0/token"}),
        ("other scope", NOW + 60, {"scope": "https://outlook.office.com/SMTP.Send"}),
        ("scope removed", NOW + 60, {"scope": None}),
    ]
    for case, now, changes in cases:
        directory, path = state_file()
        try:
            with Endpoint(tokens("at-1"), tokens("at-2")) as endpoint:
                assert wake(path) == ("at-1", True)
                endpoint.now = now
                assert wake(path, **changes) == ("at-2", True), case
                assert endpoint.requests == [REFRESH, changes.get("refresh_token", REFRESH)], case
                if case == "clock moved back":
                    assert endpoint.log.count("was issued after the current time") == 1
                state = read_state(path)
                if case == "clock unset":
                    # Without a set clock no expiry can be dated: the file keeps the earlier token.
                    assert state["access_token"] == "at-1"
                else:
                    assert state["access_token"] == "at-2", case
                    assert state["issued"] == now, case
        finally:
            remove_tree(directory)


def test_settings_change_keeps_rotated_token():
    # A new client_id, token_url or scope drops the kept access token but not the rotated
    # refresh token, because the endpoint may have revoked the one in config.json.
    for changes in ({"scope": "https://outlook.office.com/SMTP.Send"}, {"client_id": "client-2"}):
        directory, path = state_file()
        try:
            with Endpoint(tokens("at-1", refresh_token="rt-2"), tokens("at-2")) as endpoint:
                assert wake(path) == ("at-1", True)
                endpoint.now = NOW + 60
                assert wake(path, **changes) == ("at-2", True), changes
                assert endpoint.requests == [REFRESH, "rt-2"], changes
                state = read_state(path)
                assert state["refresh_token"] == "rt-2", changes
                assert state["access_token"] == "at-2", changes
                # The new token is kept for the new settings, and not for the old ones.
                assert wake(path, **changes) == ("at-2", False), changes
                endpoint.replies.append(tokens("at-3"))
                assert wake(path) == ("at-3", True), changes
                assert endpoint.requests == [REFRESH, "rt-2", "rt-2"], changes
        finally:
            remove_tree(directory)


def test_leaving_deep_sleep_removes_kept_token():
    from alerts import outbox

    directory, path = state_file()
    saved = outbox.write_atomic
    writes = []

    def counting(path, data):
        writes.append(data)
        saved(path, data)

    outbox.write_atomic = counting
    try:
        with Endpoint(tokens("at-1", refresh_token="rt-2"), tokens("at-2")) as endpoint:
            assert wake(path) == ("at-1", True)
            before = read_state(path)
            assert before["access_token"] == "at-1"
            del writes[:]
            # Deep-sleep mode is off now: one token use rewrites the file without the access token.
            endpoint.now = NOW + 60
            values = settings()
            assert get_token(values, path) == ("at-2", True)
            assert endpoint.requests == [REFRESH, "rt-2"]
            state = read_state(path)
            assert state == {"configured": before["configured"], "refresh_token": "rt-2"}, state
            assert len(writes) == 1
            assert endpoint.log.count("deep-sleep mode is off") == 1
            # No further write: neither within this boot nor after a reset.
            assert get_token(values, path) == ("at-2", False)
            endpoint.replies.append(tokens("at-3"))
            assert get_token(settings(), path) == ("at-3", True)
            assert len(writes) == 1
            assert endpoint.log.count("deep-sleep mode is off") == 1
    finally:
        outbox.write_atomic = saved
        remove_tree(directory)


def test_leaving_deep_sleep_removal_retried():
    # The token request fails, or the write does: the next token use writes the file.
    from alerts import outbox

    directory, path = state_file()
    saved = outbox.write_atomic

    def failing(path, data):
        raise OSError(28, "no space left")

    try:
        with Endpoint(tokens("at-1"), {}, tokens("at-2")) as endpoint:
            assert wake(path) == ("at-1", True)
            endpoint.now = NOW + 60
            values = settings()
            assert raises(TokenError, get_token, values, path).transient
            assert "access_token" in read_state(path)
            outbox.write_atomic = failing
            assert get_token(values, path) == ("at-2", True)
            assert endpoint.log.count("could not be written") == 1
            assert endpoint.log.count("a reset before then loses the removal of the access token") == 1
            outbox.write_atomic = saved
            assert "access_token" in read_state(path)
            assert get_token(values, path) == ("at-2", False)
            assert "access_token" not in read_state(path)
            assert endpoint.log.count("written at last") == 1
            assert endpoint.log.count("deep-sleep mode is off") == 1
    finally:
        outbox.write_atomic = saved
        remove_tree(directory)


def test_damaged_kept_token_ignored():
    directory, path = state_file()
    fingerprint = oauth2._fingerprint(REFRESH)
    cases = [
        {"configured": fingerprint, "access_token": "a b", "issued": NOW, "expires": NOW + 3600},
        {"configured": fingerprint, "access_token": "at-1", "issued": "0", "expires": NOW + 3600},
        {"configured": fingerprint, "access_token": "at-1", "issued": NOW, "expires": None},
        {"configured": fingerprint, "access_token": "at-1", "issued": NOW},
    ]
    try:
        assert_each_state_requests_new_token(path, cases)
    finally:
        remove_tree(directory)


def assert_each_state_requests_new_token(path, states):
    """Write each state to path; a wake must then request a new token instead of reusing the kept one."""
    for state in states:
        with open(path, "w") as file:
            file.write(json.dumps(state))
        with Endpoint(tokens("at-2")):
            assert wake(path) == ("at-2", True), state


def test_kept_token_life_bounded():
    # A damaged or forged file must not keep a token in use indefinitely. A kept token
    # is used at most MAX_LIFE_S after its issue time, whatever expiry the file contains.
    directory, path = state_file()
    fingerprint = oauth2._fingerprint(REFRESH)
    cases = [
        {"configured": fingerprint, "access_token": "at-1", "issued": NOW, "expires": NOW + 10**12},
        {"configured": fingerprint, "access_token": "at-1", "issued": NOW - 30 * 86400, "expires": NOW + 3600},
        # JSON true is an int to isinstance(): issued 1970-01-01.
        {"configured": fingerprint, "access_token": "at-1", "issued": True, "expires": NOW + 3600},
    ]
    try:
        assert_each_state_requests_new_token(path, cases)
        # A lifetime sent by the endpoint is bounded the same way, in RAM and on flash.
        os.remove(path)
        with Endpoint(tokens("at-3", expires_in=10**12)) as endpoint:
            values = settings()
            assert get_token(values, path, keep=True) == ("at-3", True)
            assert values["cache"]["life"] == oauth2.MAX_LIFE_S
            assert read_state(path)["expires"] == NOW + oauth2.MAX_LIFE_S
        with Endpoint(tokens("at-4")) as endpoint:
            endpoint.now = NOW + oauth2.MAX_LIFE_S - oauth2.MARGIN_S
            assert wake(path) == ("at-4", True)
    finally:
        remove_tree(directory)


def test_capped_life_logged():
    directory, path = state_file()
    try:
        with Endpoint(tokens("at-1", expires_in=10**12), tokens("at-2", expires_in=oauth2.MAX_LIFE_S)) as endpoint:
            assert get_token(settings(), path) == ("at-1", True)
            assert endpoint.log.count("expires_in") == 1
            assert endpoint.log.count("expires_in 1000000000000 s capped at 86400 s") == 1, endpoint.log.lines
            # A life within the cap is not reported.
            assert get_token(settings(), path) == ("at-2", True)
            assert endpoint.log.count("expires_in") == 1
    finally:
        remove_tree(directory)


def test_save_out_of_memory_retried():
    # A MemoryError while writing the file (json.dump on a short heap) reaches the sender
    # as out of memory. The new refresh token must still be written at a later token use.
    from alerts import outbox

    directory, path = state_file()
    saved = outbox.write_atomic

    def failing(path, data):
        raise MemoryError("memory allocation failed")

    values = settings()
    try:
        with Endpoint(tokens("at-1", refresh_token="rt-2")) as endpoint:
            outbox.write_atomic = failing
            raises(MemoryError, get_token, values, path)
            outbox.write_atomic = saved
            assert values["cache"]["unsaved"]
            assert get_token(values, path) == ("at-1", False)
            assert read_state(path)["refresh_token"] == "rt-2"
            assert not values["cache"]["unsaved"]
            assert len(endpoint.requests) == 1
    finally:
        outbox.write_atomic = saved
        remove_tree(directory)


class _FakeGC:
    """Stand-in for the gc module of alerts.oauth2: mem_free() gives the free heap before and after the wrap."""

    def __init__(self, free, left):
        self.values = [free, left]

    def collect(self):
        pass

    def mem_free(self):
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


class _FailingStream:
    """A connection whose handshake fails at the first read with ``error``, as MicroPython's does."""

    def __init__(self, error):
        self.error = error

    def write(self, data):
        pass

    async def drain(self):
        pass

    async def read(self, size):
        raise self.error

    def close(self):
        pass

    async def wait_closed(self):
        pass


def connect_to(stream):
    """Return a stand-in for microsmtp.client.open_stream() that returns stream as reader and writer."""

    async def connect(*args, **kwargs):
        return stream, stream

    return connect


def test_cert_check_low_heap():
    # mbedTLS reports a failed allocation during the signature check as an untrusted
    # certificate. With its buffers on the GC heap (a drop of more than 16 KB across
    # the wrap) and less than 24 KB left, the token request counts as out of memory.
    import gc

    import microsmtp.client

    untrusted = "The certificate is not correctly signed by the trusted CA"
    cases = [
        (60000, 20000, untrusted, MemoryError),
        (60000, 40000, untrusted, TokenError),
        # mbedTLS took its buffers from elsewhere (ESP32): the heap did not drop.
        (22000, 20000, untrusted, TokenError),
        (60000, 20000, untrusted + "\nThe certificate Common Name (CN) does not match", TokenError),
        (60000, 20000, "The certificate validity has expired", TokenError),
        # The real gc module: on CPython it has no mem_free(), under MicroPython the stand-in
        # connection takes no 16 KB.
        (None, None, untrusted, TokenError),
    ]
    saved = (microsmtp.client.make_ssl_context, microsmtp.client.open_stream, oauth2.gc)
    microsmtp.client.make_ssl_context = lambda roots: None
    try:
        for free, left, text, expected in cases:
            microsmtp.client.open_stream = connect_to(_FailingStream(ValueError(text)))
            oauth2.gc = gc if free is None else _FakeGC(free, left)
            error = raises(expected, asyncio.run, oauth2.exchange(HOST, 443, b"", [b"root"], 5))
            if expected is MemoryError:
                assert "token request ran out of memory" in str(error), str(error)
                assert "20000 bytes were left for the certificate check" in str(error), str(error)
                assert "ca_roots lack the root of login.example.com" in str(error), str(error)
            else:
                assert not error.transient, (free, left, text)
                assert "TLS certificate verification failed" in str(error), str(error)
    finally:
        microsmtp.client.make_ssl_context, microsmtp.client.open_stream, oauth2.gc = saved


def test_leaving_deep_sleep_new_authorization():
    # After deep-sleep mode is switched off, the first token use removes a kept access
    # token from the file, also when the user authorized the board again at the same
    # time (a new refresh_token in config.json).
    directory, path = state_file()
    try:
        with Endpoint(tokens("at-1", refresh_token="rt-2"), tokens("at-2")) as endpoint:
            assert wake(path) == ("at-1", True)
            assert read_state(path)["access_token"] == "at-1"
            endpoint.now += 60
            values = settings(refresh_token="rt-config-new")
            assert get_token(values, path) == ("at-2", True)
            assert endpoint.requests[-1] == "rt-config-new"
            text = json.dumps(read_state(path))
            assert "at-1" not in text, text
    finally:
        remove_tree(directory)


def test_hostile_request_values_not_reused():
    # "request" of another type, or huge, never matches and never raises.
    for request in ([1, 2], {"a": 1}, 10**40, "x" * 5000, None, True):
        directory, path = state_file()
        try:
            with Endpoint(tokens("at-1"), tokens("at-2")) as endpoint:
                assert wake(path) == ("at-1", True)
                state = read_state(path)
                state["request"] = request
                with open(path, "w") as file:
                    file.write(json.dumps(state))
                endpoint.now += 60
                assert wake(path) == ("at-2", True), request
                assert read_state(path)["request"] == oauth2._request_print(settings())
        finally:
            remove_tree(directory)
