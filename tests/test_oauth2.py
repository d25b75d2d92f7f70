"""The alert firmware gets OAuth2 access tokens itself and sends with XOAUTH2.

A board process (CPython or the MicroPython unix port) runs the firmware's Sender over
an outbox in its own directory, round by round, as the test requests. Tokens come from the
local HTTPS endpoint in tests/token_server.py, and the mail goes to a local aiosmtpd
server that accepts only the access token the test names.
"""

import base64
import json
import os
import subprocess
import sys
import threading
from urllib.parse import quote

import pytest
import token_server
from token_server import drop, echo, error, huge, raw, stall, status, tokens

import unix_port

CLIENT_ID = "board-client-1"
# Characters that form encoding must escape, so a wrong encoding shows as a rejected token.
REFRESH = "rt-1/+=&%.x"
SCOPE = "https://outlook.office.com/SMTP.Send offline_access"
CLIENT_SECRET = "client-secret-9"
RETRY_MAX = 1000
RUNTIMES = ["cpython", "micropython"]

# The board process: it reads JSON commands from stdin, one per line, and prints
# "RESULT {...}" after each. Everything else it prints is the firmware's log.
HARNESS = r"""
import json
import sys

# MicroPython 1.22's unix port closes descriptor 0 when it collects the file object of a
# failed open(), so the commands come from a second descriptor of the same pipe.
try:
    commands = open("/dev/fd/0")
except OSError:
    commands = sys.stdin

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from alerts.app import _DELIVERY_MODULES, unload
from alerts.outbox import Outbox

params = json.loads(commands.readline())
config = params["config"]
with open(params["ca"], "rb") as file:
    roots = [file.read()]
outbox = Outbox("outbox", max_entries=100)
outbox.recover()
count = 0


def result(values):
    print("RESULT " + json.dumps(values))


while True:
    line = commands.readline()
    if not line:
        break
    command = json.loads(line)
    if command["op"] == "put":
        count += 1
        alert = {"kind": "alert", "rule": "hot-%d" % count, "sensor": "air", "value": 40 + count,
                 "unit": "C", "condition": "above", "threshold": 35, "time": 1767225600 + count,
                 "readings": [[1767225600, 40]]}
        result({"name": outbox.put(alert, 1767225600)})
    elif command["op"] == "round":
        # Every entry is due, as on a board whose backoff has passed.
        from alerts.outbox import write_atomic

        for name in outbox.pending():
            entry = outbox.load(name)
            entry["next"] = 0
            write_atomic("outbox/" + name, entry)
        config["smtp"]["timeout_s"] = command.get("timeout_s", 10)
        if command.get("heap_left"):
            # mbedTLS's buffers on the GC heap, leaving heap_left bytes (tests/scenarios.py).
            sys.path.append(params["tests"])
            import microsmtp.client
            from scenarios import HeapTakingContext

            make_context = microsmtp.client.make_ssl_context
            contexts = []

            def heap_taking_context(ca_roots, left=command["heap_left"]):
                # Kept until the round ends, so that its ballast outlives the handshake.
                contexts.append(HeapTakingContext(make_context(ca_roots), left))
                return contexts[-1]

            microsmtp.client.make_ssl_context = heap_taking_context
        from alerts.sender import Sender

        sender = Sender(config, outbox, roots)
        delay = asyncio.run(sender.run_session())
        loaded = "alerts.oauth2" in sys.modules
        if config.get("deep_sleep", {}).get("enabled"):
            # As alerts.wake does after the delivery round, before deep sleep.
            from alerts.wake import save_oauth2_state

            save_oauth2_state(config["smtp"].get("oauth2"))
            loaded = loaded or "alerts.oauth2" in sys.modules
        values = {"delay": delay, "delivered": sender.delivered, "last_error": sender.last_error,
                  "oauth2_loaded": loaded}
        sender = Sender = contexts = None
        unload(_DELIVERY_MODULES)
        values["pending"] = outbox.pending()
        values["attempts"] = [outbox.load(name)["attempts"] for name in values["pending"]]
        result(values)
    else:
        break
"""


class Board:
    """One board process, started in ``directory`` (its flash), driven command by command."""

    def __init__(self, runtime, micropython, directory, config, certs):
        env = dict(os.environ)
        if runtime == "micropython":
            env["MICROPYPATH"] = ".frozen:%s" % unix_port.FIRMWARE_DIR
            command = [micropython, "-X", "heapsize=%s" % unix_port.DEFAULT_HEAP, "-c", HARNESS]
        else:
            env["PYTHONPATH"] = str(unix_port.FIRMWARE_DIR)
            command = [sys.executable, "-u", "-c", HARNESS]
        self.process = subprocess.Popen(
            command,
            cwd=directory,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # A board that hangs is killed, so a test fails instead of waiting forever.
        self._timer = threading.Timer(120, self.process.kill)
        self._timer.start()
        self.log = []
        self._write({"config": config, "ca": str(certs.ca_der_path), "tests": str(unix_port.REPO_DIR / "tests")})

    def _write(self, value):
        self.process.stdin.write(json.dumps(value) + "\n")
        self.process.stdin.flush()

    def command(self, op, **values):
        values["op"] = op
        self._write(values)
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError("the board stopped:\n" + "".join(self.log))
            if line.startswith("RESULT "):
                return json.loads(line[7:])
            self.log.append(line)

    def put(self):
        return self.command("put")["name"]

    def round(self, **values):
        result = self.command("round", **values)
        # The sender unloads alerts.oauth2 before the SMTP session, in every outcome.
        assert not result["oauth2_loaded"], result
        return result

    def text(self):
        return "".join(self.log)

    def close(self):
        if self.process.poll() is None:
            try:
                self._write({"op": "quit"})
            except OSError:
                pass
        try:
            rest = self.process.communicate(timeout=30)[0]
        finally:
            self._timer.cancel()
        self.log.append(rest or "")
        return self.process.returncode


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    return request.param


@pytest.fixture
def token_endpoint(certs):
    """Factory for token_server.TokenServer instances that stop when the test ends."""
    started = []

    def start(cert=None, **options):
        options.setdefault("client_id", CLIENT_ID)
        options.setdefault("refresh_token", REFRESH)
        options.setdefault("scope", SCOPE)
        server = token_server.TokenServer(cert or certs.server_cert, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def boards(runtime, micropython, tmp_path, certs):
    """Factory: boards(config) starts a board process on the flash directory tmp_path/flash."""
    flash = tmp_path / "flash"
    flash.mkdir()
    started = []

    def start(config):
        board = Board(runtime, micropython, flash, config, certs)
        started.append(board)
        return board

    start.flash = flash
    yield start
    for board in started:
        board.close()


def board_config(smtp_server, endpoint, **oauth2_changes):
    oauth2 = {
        "token_url": endpoint.url,
        "client_id": CLIENT_ID,
        "refresh_token": REFRESH,
        "client_secret": None,
        "scope": SCOPE,
    }
    oauth2.update(oauth2_changes)
    return {
        "device": "oauth2-board",
        "smtp": {
            "host": smtp_server.host,
            "port": smtp_server.port,
            "security": smtp_server.mode,
            "user": "alice",
            "password": None,
            "oauth2_token": None,
            "oauth2": oauth2,
            "server_name": "localhost",
            "timeout_s": 10,
            "transcript": False,
            "from": "board@example.com",
            "to": ["ops@example.org"],
        },
        "outbox": {"retry_min_s": 1, "retry_max_s": RETRY_MAX},
    }


def assert_no_secret_in(text, *secrets):
    for secret in (REFRESH, CLIENT_SECRET) + secrets:
        assert secret not in text, "a secret is in the log: %r" % secret


def test_refreshed_token_reused_next_round(boards, smtp_server, token_endpoint):
    endpoint = token_endpoint(replies=[tokens("at-first", expires_in=3600)])
    server = smtp_server("starttls", oauth2_tokens={"alice": "at-first"})
    board = boards(board_config(smtp_server=server, endpoint=endpoint))

    board.put()
    first = board.round()
    assert first["delivered"] == 1, board.text()
    assert first["pending"] == [], board.text()
    assert endpoint.problems == []
    assert endpoint.requests == [
        {"grant_type": "refresh_token", "refresh_token": REFRESH, "client_id": CLIENT_ID, "scope": SCOPE}
    ]
    assert server.wait_for_messages(1)[0].user == "alice"

    # A second send within the token's life requests no new token, although
    # the sender and alerts.oauth2 were unloaded in between.
    board.put()
    second = board.round()
    assert second["delivered"] == 1, board.text()
    assert second["pending"] == [], board.text()
    assert len(endpoint.requests) == 1
    assert len(server.wait_for_messages(2)) == 2
    assert "new access token from localhost, valid for 3600 s" in board.text()
    assert board.close() == 0
    assert_no_secret_in(board.text(), "at-first")


def test_expiring_token_refreshed(boards, smtp_server, token_endpoint):
    # 200 s is less than the margin, so the token is not reused in the next round.
    endpoint = token_endpoint(replies=[tokens("at-short-1", expires_in=200), tokens("at-short-2", expires_in=200)])
    server = smtp_server("starttls", oauth2_tokens={"alice": "at-short-1"})
    board = boards(board_config(server, endpoint))
    board.put()
    assert board.round()["delivered"] == 1, board.text()
    server.oauth2_tokens["alice"] = "at-short-2"
    board.put()
    result = board.round()
    assert result["delivered"] == 1, board.text()
    assert len(endpoint.requests) == 2
    # The new token was fetched before the session: the server rejected nothing.
    assert len(server.connections) == 2
    assert "rejected the cached" not in board.text()


def test_rejected_token_refreshed_once(boards, smtp_server, token_endpoint):
    endpoint = token_endpoint(replies=[tokens("at-a"), tokens("at-b")])
    server = smtp_server("tls", oauth2_tokens={"alice": "at-a"})
    board = boards(board_config(server, endpoint))
    board.put()
    assert board.round()["delivered"] == 1, board.text()

    # The server stops accepting the cached token (revoked, or expired early).
    server.oauth2_tokens["alice"] = "at-b"
    board.put()
    result = board.round()
    assert result["delivered"] == 1, board.text()
    assert result["pending"] == [], board.text()
    assert len(endpoint.requests) == 2
    assert len(server.connections) == 3
    assert "the server rejected the cached OAuth2 access token (535)" in board.text()

    # A new token that the server rejects too is not refreshed again in the same round.
    server.oauth2_tokens["alice"] = "at-never-issued"
    endpoint.push(tokens("at-c"), tokens("at-d"))
    board.put()
    result = board.round()
    assert result["delivered"] == 0, board.text()
    assert len(result["pending"]) == 1, board.text()
    assert result["attempts"] == [1]
    assert result["delay"] == RETRY_MAX
    assert "535" in result["last_error"]
    assert len(endpoint.requests) == 3
    # The rejected token was dropped, so the next round requests a new one first, and only once.
    connections = len(server.connections)
    result = board.round()
    assert len(endpoint.requests) == 4
    assert len(server.connections) == connections + 1
    assert result["attempts"] == [2]
    assert len(server.messages) == 2
    board.close()
    assert_no_secret_in(board.text(), "at-a", "at-b", "at-c", "at-d")


def test_rejected_refresh_token_keeps_alert(boards, smtp_server, token_endpoint):
    description = "AADSTS70008: The provided authorization code or refresh token has expired."
    endpoint = token_endpoint(replies=[error(400, "invalid_grant", description)])
    server = smtp_server("starttls", oauth2_tokens={"alice": "at-1"})
    board = boards(board_config(server, endpoint))
    name = board.put()
    result = board.round()
    assert result["pending"] == [name], board.text()
    assert result["attempts"] == [1], board.text()
    assert result["delay"] == RETRY_MAX
    assert "HTTP 400 invalid_grant: AADSTS70008" in result["last_error"]
    assert "authorize the board again and put the new refresh token in config.json" in result["last_error"]
    assert "sending failed (token, permanent): the token endpoint localhost rejected" in board.text()
    assert server.connections == []


def test_transient_failures_keep_alert(boards, smtp_server, token_endpoint):
    endpoint = token_endpoint(
        replies=[
            status(500, b"internal error"),
            drop(),
            stall(),
            huge(65536),
            raw(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{not json"),
            status(429, b""),
            tokens("at-chunked", chunked=True),
        ]
    )
    server = smtp_server("starttls", oauth2_tokens={"alice": "at-chunked"})
    board = boards(board_config(server, endpoint))
    name = board.put()

    expected = [
        "the token endpoint localhost is unavailable (HTTP 500); retry later",
        "closed the connection without a reply",
        "the token endpoint localhost timed out after 2 s (while reading the reply)",
        "the reply of the token endpoint localhost is larger than 16384 bytes",
        "the token endpoint localhost sent a reply that is not JSON",
        "the token endpoint localhost is unavailable (HTTP 429)",
    ]
    for attempt, text in enumerate(expected, 1):
        result = board.round(timeout_s=2)
        assert result["pending"] == [name], board.text()
        assert result["attempts"] == [attempt]
        assert text in result["last_error"], result["last_error"]
        assert result["delay"] < RETRY_MAX, result
        assert "(token, transient)" in board.log[-1], board.log[-1]
    assert server.connections == []

    result = board.round()
    assert result["delivered"] == 1, board.text()
    assert result["pending"] == [], board.text()
    assert endpoint.problems == []
    assert len(endpoint.requests) == len(expected) + 1


def test_untrusted_endpoint_certificate(boards, smtp_server, token_endpoint, certs):
    endpoint = token_endpoint(cert=certs.wrong_ca_cert)
    server = smtp_server("starttls", oauth2_tokens={"alice": "at-1"})
    board = boards(board_config(server, endpoint))
    board.put()
    result = board.round()
    assert len(result["pending"]) == 1
    assert result["delay"] == RETRY_MAX
    error_text = result["last_error"]
    assert "TLS certificate verification failed for the token endpoint localhost" in error_text, error_text
    assert "check that ca_roots (smtp.ca_file or ca_roots.py) contain its CA root" in error_text
    assert endpoint.requests == []
    assert server.connections == []


def test_rotated_refresh_token_survives_restart(boards, smtp_server, token_endpoint):
    endpoint = token_endpoint(
        client_secret=CLIENT_SECRET,
        scope=None,
        replies=[tokens("at-1", refresh_token="rt-2.rotated")],
    )
    server = smtp_server("starttls", oauth2_tokens={"alice": "at-1"})
    config = board_config(server, endpoint, client_secret=CLIENT_SECRET, scope=None)
    board = boards(config)
    board.put()
    assert board.round()["delivered"] == 1, board.text()
    assert board.close() == 0
    assert "saved to oauth2_token.json" in board.text()
    state = (boards.flash / "oauth2_token.json").read_text()
    assert "rt-2.rotated" in state
    assert REFRESH not in state
    assert endpoint.requests[0]["client_secret"] == CLIENT_SECRET

    # After a restart the board uses the newest refresh token, because the endpoint
    # rejects the one in config.json from now on. This time it sends the same refresh token back.
    endpoint.push(tokens("at-2", refresh_token="rt-2.rotated"))
    server.oauth2_tokens["alice"] = "at-2"
    board = boards(config)
    board.put()
    assert board.round()["delivered"] == 1, board.text()
    assert endpoint.requests[-1]["refresh_token"] == "rt-2.rotated"
    assert endpoint.problems == []
    assert board.close() == 0
    # Nothing new to save: the file is written only when the token changed.
    assert "saved to" not in board.text()
    assert (boards.flash / "oauth2_token.json").read_text() == state

    # The user authorized the board again and put the new refresh token in config.json.
    endpoint.refresh_token = "rt-new"
    endpoint.push(tokens("at-3"))
    server.oauth2_tokens["alice"] = "at-3"
    config["smtp"]["oauth2"]["refresh_token"] = "rt-new"
    board = boards(config)
    board.put()
    assert board.round()["delivered"] == 1, board.text()
    assert endpoint.requests[-1]["refresh_token"] == "rt-new"
    assert endpoint.problems == []
    board.close()
    assert_no_secret_in(board.text(), "rt-2.rotated", "rt-new", "at-3")


def test_hostile_replies_keep_alert_and_secrets(boards, smtp_server, token_endpoint):
    endpoint = token_endpoint(
        client_secret=CLIENT_SECRET,
        replies=[
            # A negative chunk size made the parser go back and read the same lines forever.
            raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n-6\r\n"),
            # Deeper than CPython's recursion limit: RecursionError ended the round.
            raw(token_server.http_reply(200, b"[" * 3000 + b"]" * 3000)),
            # An endpoint that repeats the request, secrets included, in its error text.
            echo(400),
            tokens("at-after"),
        ],
    )
    server = smtp_server("starttls", oauth2_tokens={"alice": "at-after"})
    board = boards(board_config(server, endpoint, client_secret=CLIENT_SECRET))
    name = board.put()

    expected = [
        ("the token endpoint localhost sent a malformed HTTP reply (bad chunk size)", True),
        ("JSON", True),
        ("the token endpoint localhost rejected the request (HTTP 400 invalid_request: cannot parse", False),
    ]
    for attempt, (text, transient) in enumerate(expected, 1):
        result = board.round(timeout_s=2)
        assert result["pending"] == [name], board.text()
        assert result["attempts"] == [attempt]
        assert text in result["last_error"], result["last_error"]
        assert (result["delay"] < RETRY_MAX) == transient, result
    assert "[hidden]" in result["last_error"]

    result = board.round()
    assert result["delivered"] == 1, board.text()
    assert endpoint.problems == []
    board.close()
    encoded = quote(REFRESH, safe="")
    assert_no_secret_in(board.text() + json.dumps(result), encoded, "at-after")


def test_token_url_with_address_and_query(boards, smtp_server, token_endpoint):
    # An IP address as the host and a query in the path, with the transcript on.
    endpoint = token_endpoint(url_host="127.0.0.1", query="tenant=a%20b&x=1", replies=[tokens("at-ip")])
    server = smtp_server("starttls", oauth2_tokens={"alice": "at-ip"})
    config = board_config(server, endpoint)
    config["smtp"]["transcript"] = True
    board = boards(config)
    board.put()
    result = board.round()
    assert result["delivered"] == 1, board.text()
    assert endpoint.problems == []
    assert len(endpoint.requests) == 1
    board.close()
    assert "--> AUTH XOAUTH2 <redacted>" in board.text(), board.text()
    sasl = base64.b64encode(b"user=alice\x01auth=Bearer at-ip\x01\x01").decode()
    assert_no_secret_in(board.text(), "at-ip", sasl[:20])


def deep_sleep_config(smtp_server, endpoint):
    config = board_config(smtp_server, endpoint)
    config["deep_sleep"] = {"enabled": True, "interval_s": 600}
    return config


def wake_and_send(boards, config):
    """Queue and send one alert in a new board process, as after a wake from deep sleep (RAM lost)."""
    board = boards(config)
    board.put()
    result = board.round()
    board.close()
    return board, result


def test_deep_sleep_keeps_token(boards, smtp_server, token_endpoint):
    endpoint = token_endpoint(replies=[tokens("at-1", expires_in=3600)])
    server = smtp_server("starttls", oauth2_tokens={"alice": "at-1"})
    config = deep_sleep_config(server, endpoint)
    for _ in range(3):
        board, result = wake_and_send(boards, config)
        assert result["delivered"] == 1, board.text()
    # One token request for three wakes that sent.
    assert len(endpoint.requests) == 1
    assert "access token from oauth2_token.json, valid for" in board.text()
    state = json.loads((boards.flash / "oauth2_token.json").read_text())
    assert state["access_token"] == "at-1"
    assert 3590 <= state["expires"] - state["issued"] <= 3600
    assert REFRESH not in json.dumps(state)

    # The server stops accepting the saved token: the renewal requests a new one, saved for the next wake.
    server.oauth2_tokens["alice"] = "at-2"
    endpoint.push(tokens("at-2"))
    board, result = wake_and_send(boards, config)
    assert result["delivered"] == 1, board.text()
    assert "the server rejected the cached OAuth2 access token (535)" in board.text()
    assert len(endpoint.requests) == 2
    assert json.loads((boards.flash / "oauth2_token.json").read_text())["access_token"] == "at-2"

    # Again, and this time the token request fails: the rejected token is gone from flash too.
    server.oauth2_tokens["alice"] = "at-3"
    endpoint.push(status(500, b"internal error"))
    board, result = wake_and_send(boards, config)
    assert result["delivered"] == 0, board.text()
    assert "access_token" not in json.loads((boards.flash / "oauth2_token.json").read_text())
    # So the next wake requests a token before it opens an SMTP session.
    connections = len(server.connections)
    endpoint.push(tokens("at-3"))
    board, result = wake_and_send(boards, config)
    assert result["delivered"] == 2, board.text()
    assert len(server.connections) == connections + 1
    assert len(endpoint.requests) == 4
    assert endpoint.problems == []
    assert_no_secret_in(board.text(), "at-1", "at-2", "at-3")


def test_deep_sleep_rejected_token_removed(boards, smtp_server, token_endpoint):
    # The server rejects the token the wake just requested (no renewal: it is new). The
    # next wake, with RAM lost, must not try it again but request another one.
    endpoint = token_endpoint(replies=[tokens("at-1"), tokens("at-2")])
    server = smtp_server("starttls", oauth2_tokens={"alice": "at-0"})
    config = deep_sleep_config(server, endpoint)
    board, result = wake_and_send(boards, config)
    assert result["delivered"] == 0, board.text()
    assert "access_token" not in json.loads((boards.flash / "oauth2_token.json").read_text())
    server.oauth2_tokens["alice"] = "at-2"
    board, result = wake_and_send(boards, config)
    # This wake's alert and the one the first wake kept.
    assert result["delivered"] == 2, board.text()
    assert "rejected the cached OAuth2 access token" not in board.text()
    assert len(endpoint.requests) == 2
    assert len(server.connections) == 2


def test_settings_change_and_leaving_deep_sleep(boards, smtp_server, token_endpoint):
    # The endpoint stops accepting the old refresh token once it sent a new one.
    endpoint = token_endpoint(replies=[tokens("at-1", refresh_token="rt-2.rotated")])
    server = smtp_server("starttls", oauth2_tokens={"alice": "at-1"})
    config = deep_sleep_config(server, endpoint)
    board, result = wake_and_send(boards, config)
    assert result["delivered"] == 1, board.text()

    # A new scope: the kept access token was issued for the old one, the rotated refresh token stays.
    scope = "https://outlook.office.com/SMTP.Send"
    endpoint.scope = config["smtp"]["oauth2"]["scope"] = scope
    server.oauth2_tokens["alice"] = "at-2"
    endpoint.push(tokens("at-2"))
    board, result = wake_and_send(boards, config)
    assert result["delivered"] == 1, board.text()
    assert "rejected the cached OAuth2 access token" not in board.text()
    assert [form["refresh_token"] for form in endpoint.requests] == [REFRESH, "rt-2.rotated"]
    state = json.loads((boards.flash / "oauth2_token.json").read_text())
    assert state["access_token"] == "at-2"
    assert state["refresh_token"] == "rt-2.rotated"

    # Deep-sleep mode switched off: the first token use removes the kept access token.
    del config["deep_sleep"]
    server.oauth2_tokens["alice"] = "at-3"
    endpoint.push(tokens("at-3"))
    board, result = wake_and_send(boards, config)
    assert result["delivered"] == 1, board.text()
    assert "deep-sleep mode is off; the access token is removed from oauth2_token.json" in board.text()
    state = json.loads((boards.flash / "oauth2_token.json").read_text())
    assert sorted(state) == ["configured", "refresh_token"]
    assert state["refresh_token"] == "rt-2.rotated"
    assert len(endpoint.requests) == 3
    assert endpoint.problems == []
    assert_no_secret_in(board.text(), "at-1", "at-2", "at-3", "rt-2.rotated")


def test_token_not_saved_without_deep_sleep(boards, smtp_server, token_endpoint):
    endpoint = token_endpoint(replies=[tokens("at-1"), tokens("at-2")])
    server = smtp_server("starttls", oauth2_tokens={"alice": "at-1"})
    config = board_config(server, endpoint)
    board, result = wake_and_send(boards, config)
    assert result["delivered"] == 1, board.text()
    assert not (boards.flash / "oauth2_token.json").exists()
    server.oauth2_tokens["alice"] = "at-2"
    board, result = wake_and_send(boards, config)
    assert result["delivered"] == 1, board.text()
    assert len(endpoint.requests) == 2
    assert not (boards.flash / "oauth2_token.json").exists()


# mbedTLS reports a failed allocation during the signature check as an untrusted
# certificate. The harness imitates its buffers on the GC heap, because the unix port's
# mbedTLS uses the C heap. With little heap left the token request counts as out of
# memory, which the sender retries. With enough heap left it stays a permanent error.
@pytest.mark.parametrize("left, transient", [(12288, True), (65536, False)])
def test_untrusted_endpoint_low_heap(micropython, tmp_path, smtp_server, token_endpoint, certs, left, transient):
    endpoint = token_endpoint(cert=certs.wrong_ca_cert)
    server = smtp_server("starttls", oauth2_tokens={"alice": "at-1"})
    flash = tmp_path / "flash"
    flash.mkdir()
    board = Board("micropython", micropython, flash, board_config(server, endpoint), certs)
    try:
        board.put()
        result = board.round(heap_left=left)
    finally:
        board.close()
    assert len(result["pending"]) == 1, board.text()
    assert (result["delay"] < RETRY_MAX) == transient, board.text()
    if transient:
        assert result["last_error"] == "out of memory"
        assert "bytes were left for the certificate check, or ca_roots lack the root of localhost" in board.text()
        assert "not correctly signed" in board.text()
    else:
        assert "TLS certificate verification failed for the token endpoint localhost" in result["last_error"]
    assert endpoint.requests == []
    assert server.connections == []
