"""Time limits, clock checks and misbehaving servers, from both runtimes."""

import base64
import socket
import threading
import time
import types

import pytest
from raw_server import RawServer
from test_integration import message_spec, run_client

EHLO_REPLY = b"250-mx.example\r\n250 STARTTLS\r\n"


@pytest.fixture(params=["cpython", "micropython"])
def runtime(request):
    return request.param


@pytest.fixture
def raw_server():
    servers = []

    def start(handler):
        server = RawServer(handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def params_for(server, certs, **overrides):
    params = {
        "host": server.host,
        "port": server.port,
        "server_hostname": "localhost",
        "ca_roots": [base64.b64encode(certs.ca_der).decode()],
        "messages": [message_spec()],
        "timeout_ms": 1500,
    }
    params.update(overrides)
    return params


def outcome_of(runtime, params):
    result = run_client(runtime, params)
    assert len(result["outcomes"]) == 1, result
    return result["outcomes"][0]


def test_silent_server_times_out(runtime, raw_server, certs):
    server = raw_server(lambda conn: conn.stall())
    outcome = outcome_of(runtime, params_for(server, certs))
    assert outcome["error"] == "Timeout", outcome
    assert outcome["stage"] == "greeting"
    assert outcome["transient"]
    assert "timeout_ms=1500" in outcome["message"]


def test_stall_after_starttls_times_out(runtime, raw_server, certs):
    def handler(conn):
        conn.send(b"220 mx.example ESMTP\r\n")
        conn.read_line()
        conn.send(EHLO_REPLY)
        conn.read_line()
        conn.send(b"220 go ahead\r\n")
        # Accepts STARTTLS but never answers the TLS handshake.
        conn.stall()

    server = raw_server(handler)
    outcome = outcome_of(runtime, params_for(server, certs))
    assert outcome["error"] == "Timeout", outcome
    assert outcome["transient"]


def test_drip_feed_hits_overall_deadline(runtime, raw_server, certs):
    import time

    def handler(conn):
        # One byte every 200 ms: each read succeeds, but the whole greeting would take
        # far longer than the 1.5 s deadline.
        for byte in b"220-" + b"x" * 200 + b"\r\n220 done\r\n":
            conn.send(bytes([byte]))
            time.sleep(0.2)

    server = raw_server(handler)
    outcome = outcome_of(runtime, params_for(server, certs))
    assert outcome["error"] == "Timeout", outcome
    assert "timeout_ms" in outcome["message"]


def test_garbage_greeting_is_protocol_error(runtime, raw_server, certs):
    def handler(conn):
        conn.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.stall(5)

    server = raw_server(handler)
    outcome = outcome_of(runtime, params_for(server, certs))
    assert outcome["error"] == "ProtocolError", outcome
    assert outcome["stage"] == "greeting"


def test_close_after_greeting_is_connection_lost(runtime, raw_server, certs):
    def handler(conn):
        conn.send(b"220 mx.example ESMTP\r\n")
        conn.read_line()

    server = raw_server(handler)
    outcome = outcome_of(runtime, params_for(server, certs))
    assert outcome["error"] == "ConnectionLost", outcome
    assert outcome["stage"] == "ehlo"
    assert outcome["transient"]


def test_injection_after_starttls_reply(runtime, raw_server, certs):
    def handler(conn):
        conn.send(b"220 mx.example ESMTP\r\n")
        conn.read_line()
        conn.send(EHLO_REPLY)
        conn.read_line()
        conn.send(b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n")
        conn.stall(5)

    server = raw_server(handler)
    outcome = outcome_of(runtime, params_for(server, certs))
    assert outcome["error"] in ("ProtocolError", "SecurityError"), outcome
    assert "injection" in outcome["message"]
    assert not any(line.startswith(b"AUTH") for line in server.received)


def test_unset_clock_stops_before_connecting(monkeypatch, raw_server, certs):
    import scenarios

    from microsmtp import client

    server = raw_server(lambda conn: conn.send(b"220 hi\r\n"))
    monkeypatch.setattr(client, "clock_is_set", lambda: False)
    outcome = scenarios.run("deliver", params_for(server, certs))["outcomes"][0]
    assert outcome["error"] == "ClockNotSetError", outcome
    assert "clock not set" in outcome["message"]
    assert outcome["transient"]
    assert server.received == []


def still_open(sock):
    """Return True while the client has neither closed nor reset the server's socket sock."""
    # Linux's TCP_INFO starts with the state: ESTABLISHED (1) until the client's FIN
    # (then CLOSE_WAIT) or reset (then CLOSE). Unread data would hide a FIN from recv().
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 1


@pytest.mark.parametrize("stall_at", ["greeting", "tls"])
def test_timed_out_send_closes_connection(runtime, raw_server, certs, stall_at):
    first = []
    release = threading.Event()
    open_at_next_connection = []

    def handler(conn):
        if not first:
            first.append(conn)
            if stall_at == "tls":
                conn.send(b"220 mx.example ESMTP\r\n")
                conn.read_line()
                conn.send(EHLO_REPLY)
                conn.read_line()
                conn.send(b"220 go ahead\r\n")
            # Silent, and reads nothing, so that the next connection can look for the
            # client's close on this socket.
            release.wait(30)
            return
        # The client's close may take a moment to arrive, so wait up to 1 s for it. The
        # client process, whose exit would also close the socket, is still in the
        # second send then (timeout_ms is 1.5 s).
        for _ in range(100):
            if not still_open(first[0].sock):
                break
            time.sleep(0.01)
        open_at_next_connection.append(still_open(first[0].sock))
        release.set()
        conn.send(b"554 no service\r\n")

    server = raw_server(handler)
    params = params_for(server, certs, messages=[message_spec(), message_spec()], separate=True)
    result = run_client(runtime, params)
    first_outcome = result["outcomes"][0]
    assert first_outcome["error"] == "Timeout", first_outcome
    assert first_outcome["stage"] == stall_at
    assert first_outcome["transient"]
    assert open_at_next_connection == [False]


@pytest.mark.parametrize("messages", [1, 2], ids=["send", "quit"])
def test_unanswered_quit_ends_session_soon(runtime, raw_server, certs, messages):
    # One message goes through send(), two through SMTP.send_message() and quit().
    quit_seen = threading.Event()
    finished = threading.Event()
    closed_by_client = []

    def handler(conn):
        conn.send(b"220 mx.example ESMTP\r\n")
        conn.read_line()
        conn.send(b"250 mx.example\r\n")
        for number in range(messages):
            for reply in (b"250 sender ok\r\n", b"250 recipient ok\r\n", b"354 go ahead\r\n"):
                conn.read_line()
                conn.send(reply)
            while conn.read_line() != b".\r\n":
                pass
            conn.send(b"250 2.0.0 queued as %d\r\n" % number)
        if conn.read_line() == b"QUIT\r\n":
            quit_seen.set()
        # No 221. reply_timeout_ms is 40 s, and the client must not wait that long.
        conn.sock.settimeout(20)
        try:
            closed_by_client.append(conn.sock.recv(4096) == b"")
        except OSError as exc:
            closed_by_client.append(not isinstance(exc, TimeoutError))
        finally:
            finished.set()

    server = raw_server(handler)
    params = params_for(
        server,
        certs,
        security="none",
        messages=[message_spec(attachments=[])] * messages,
        timeout_ms=45000,
        reply_timeout_ms=40000,
    )
    result = run_client(runtime, params)
    assert [outcome.get("error") for outcome in result["outcomes"]] == [None] * messages, result
    assert quit_seen.is_set()
    assert finished.wait(30)
    assert closed_by_client == [True]


def client_states(port, excluded):
    """Return {local port: TCP state (hex, as in /proc/net/tcp)} of connections to 127.0.0.1:port.

    Connections from the local ports in excluded are left out.
    """
    states = {}
    with open("/proc/net/tcp") as file:
        for line in file.read().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port and local_port not in excluded:
                states[local_port] = fields[3]
    return states


def test_connect_timeouts_leave_no_socket(runtime, certs):
    # A listener whose queue is full drops further SYNs, so connects time out.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(2):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    excluded = {filler.getsockname()[1] for filler in fillers}
    max_connecting = [0]
    done = threading.Event()

    def watch():
        # /proc/net/tcp is not read in one step, so one reading can show a socket closed
        # while it was read beside the next one opened. Only a socket in SYN_SENT (state
        # 02) in two readings in a row counts; a socket left open stays for seconds.
        previous = set()
        while not done.is_set():
            states = client_states(port, excluded)
            current = {local_port for local_port in states if states[local_port] == "02"}
            max_connecting[0] = max(max_connecting[0], len(previous & current))
            previous = current
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    server = types.SimpleNamespace(host="127.0.0.1", port=port)
    params = params_for(server, certs, security="none", messages=[message_spec(), message_spec()], separate=True)
    try:
        result = run_client(runtime, params)
    finally:
        done.set()
        watcher.join()
        for sock in fillers + [listener]:
            sock.close()

    for outcome in result["outcomes"]:
        assert outcome["error"] == "Timeout", outcome
        assert outcome["stage"] == "connect"
    # The first connect's socket is closed before the second one starts.
    assert max_connecting[0] == 1
