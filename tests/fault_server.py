"""A scriptable SMTP server that misbehaves on purpose at a chosen stage of the dialogue.

``FaultServer`` speaks enough SMTP for a client to deliver a message (greeting, EHLO,
STARTTLS with real TLS, AUTH PLAIN and LOGIN, MAIL, RCPT, DATA, BDAT, RSET, QUIT), or
implicit TLS from the first byte. ``faults`` replaces the server's behaviour at one
stage with a ``Fault``:

* ``Fault.reply(data, then="continue")``: send ``data`` (any bytes: another code, a
  malformed or oversized reply, extra or pipelined lines) instead of the normal reply,
  then continue the dialogue, ``"stall"``, ``"close"`` or ``"reset"``.
* ``Fault.drip(data, interval, then=...)``: the same, one byte per ``interval`` seconds.
* ``Fault.repeat(data)``: send ``data`` over and over until the client leaves (an
  endless ``250-`` continuation, a line that never ends).
* ``Fault.stall()``: say nothing, record what the client sends, until it leaves.
* ``Fault.close()``: close the connection (FIN) without a reply.
* ``Fault.reset()``: abort the connection with a TCP RST.
* ``Fault.partial_tls()`` (stage ``"tls"`` only): send the first half of the server's
  TLS handshake flight, then RST.

Stages: ``greeting``, ``ehlo`` (also HELO), ``starttls``, ``tls`` (the handshake, after
STARTTLS or at connect for implicit TLS), ``auth``, ``mail``, ``rcpt``, ``data``,
``message`` (after the final dot or the last BDAT chunk), ``rset``, ``quit``. A key
``"rcpt:2"`` applies to the second RCPT of a connection only.
``faulty_connections`` limits the faults to the first N connections; later ones
behave normally, so a client can retry.

Each connection is recorded in ``connections`` (``ConnectionRecord``): every byte the
client sent (after TLS decryption), the command lines, the bytes it sent after the
fault fired, the delivered contents and how the connection ended. Listens only on
127.0.0.1.
"""

import base64
import socket
import ssl
import struct
import threading
import time

from raw_server import loopback_listener

GREETING = b"220 fault.example ESMTP test server\r\n"
DEFAULT_EHLO = ("SIZE 1000000", "8BITMIME", "ENHANCEDSTATUSCODES", "AUTH PLAIN LOGIN")
USERS = {"alice": "secret"}
# Seconds a connection may stay silent before the server gives up on it. Longer than
# any client deadline used with this server, so the client always leaves first.
IDLE_TIMEOUT = 20

_REPLIES = {
    "starttls": b"220 2.0.0 Ready to start TLS\r\n",
    "auth_ok": b"235 2.7.0 Authentication successful\r\n",
    "auth_failed": b"535 5.7.8 Authentication credentials invalid\r\n",
    "mail": b"250 2.1.0 Ok\r\n",
    "rcpt": b"250 2.1.5 Ok\r\n",
    "data": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    "message": b"250 2.0.0 Ok: queued as FAULT1\r\n",
    "bdat": b"250 2.0.0 Ok: chunk received\r\n",
    "rset": b"250 2.0.0 Ok\r\n",
    "noop": b"250 2.0.0 Ok\r\n",
    "quit": b"221 2.0.0 Bye\r\n",
    "unknown": b"502 5.5.2 Error: command not recognized\r\n",
}


def read_sasl_credentials(dialogue, words):
    """Run the PLAIN or LOGIN exchange of an AUTH command; return (user, password).

    ``words`` is the AUTH line split on spaces; ``dialogue`` needs ``send()`` and
    ``read_line()``. Returns None for another mechanism, and empty credentials for a
    PLAIN response that is not valid base64 of three NUL-separated parts.
    """
    mechanism = words[1].upper() if len(words) > 1 else b""
    if mechanism == b"PLAIN":
        if len(words) > 2:
            response = words[2]
        else:
            dialogue.send(b"334 \r\n")
            response = dialogue.read_line().strip()
        try:
            parts = base64.b64decode(response, validate=True).split(b"\0")
        except ValueError:
            parts = []
        return (parts[1], parts[2]) if len(parts) == 3 else (b"", b"")
    if mechanism == b"LOGIN":
        dialogue.send(b"334 VXNlcm5hbWU6\r\n")
        user = base64.b64decode(dialogue.read_line().strip())
        dialogue.send(b"334 UGFzc3dvcmQ6\r\n")
        password = base64.b64decode(dialogue.read_line().strip())
        return user, password
    return None


class Fault:
    """What the server does at a stage instead of its normal behaviour; see the module docstring."""

    THEN = ("continue", "stall", "close", "reset")

    def __init__(self, kind, data=b"", interval=0.0, then="continue"):
        if then not in self.THEN:
            raise ValueError("then must be one of %s, not %r" % (", ".join(self.THEN), then))
        self.kind = kind
        self.data = data
        self.interval = interval
        self.then = then

    @classmethod
    def reply(cls, data, then="continue"):
        return cls("reply", data, then=then)

    @classmethod
    def drip(cls, data, interval=0.05, then="continue"):
        return cls("drip", data, interval, then)

    @classmethod
    def repeat(cls, data):
        return cls("repeat", data)

    @classmethod
    def stall(cls):
        return cls("stall")

    @classmethod
    def close(cls):
        return cls("close")

    @classmethod
    def reset(cls):
        return cls("reset")

    @classmethod
    def partial_tls(cls):
        return cls("partial_tls")

    def __repr__(self):
        return "Fault(%s, %r, then=%s)" % (self.kind, self.data[:40], self.then)


class _Finished(Exception):
    """The dialogue of one connection is over; ``how`` says who ended it."""

    def __init__(self, how):
        super().__init__(how)
        self.how = how


class ConnectionRecord:
    """What happened on one connection.

    ``received``: every byte from the client (plaintext, TLS decrypted). ``commands``:
    the command lines. ``after_fault``: bytes the client sent after the fault fired.
    ``contents``: each message's content as sent on the wire, dot-stuffing included,
    without the final ".\\r\\n". ``fault_stage``: the stage where the fault fired.
    ``ended``: "client" (the client closed or reset it), "server" (QUIT or a fault
    closed it), "timeout" (the client stayed silent for IDLE_TIMEOUT), or None while
    the connection is open. ``tls``: whether TLS was established.
    """

    def __init__(self, index):
        self.index = index
        self.received = b""
        self.commands = []
        self.after_fault = b""
        self.contents = []
        self.fault_stage = None
        self.ended = None
        self.tls = False
        self.done = threading.Event()

    def __repr__(self):
        return "<connection %d: fault at %s, ended by %s, commands %r, after fault %r>" % (
            self.index,
            self.fault_stage,
            self.ended,
            self.commands,
            self.after_fault[:200],
        )


class FaultServer:
    """A loopback SMTP server with scripted faults; see the module docstring.

    ``mode`` is "starttls", "tls" (implicit TLS) or "plain". ``cert`` is the
    trustme.LeafCert for TLS. ``ehlo`` lists the EHLO keywords before TLS (STARTTLS is
    added in "starttls" mode unless ``advertise_starttls`` is False) and ``ehlo_tls``
    those after TLS (default: ``ehlo`` without STARTTLS). ``ehlo_reply`` replaces the
    whole EHLO reply on every connection.
    """

    def __init__(
        self,
        cert=None,
        mode="starttls",
        faults=None,
        faulty_connections=None,
        ehlo=DEFAULT_EHLO,
        ehlo_tls=None,
        advertise_starttls=True,
        users=None,
    ):
        if mode not in ("starttls", "tls", "plain"):
            raise ValueError("mode must be starttls, tls or plain, not %r" % mode)
        if mode != "plain" and cert is None:
            raise ValueError("mode %r needs a certificate" % mode)
        self.mode = mode
        self.faults = dict(faults or {})
        self.faulty_connections = faulty_connections
        self.ehlo = list(ehlo)
        if mode == "starttls" and advertise_starttls:
            self.ehlo.append("STARTTLS")
        self.ehlo_tls = list(ehlo if ehlo_tls is None else ehlo_tls)
        self.users = dict(USERS if users is None else users)
        self.connections = []
        self._context = None
        if cert is not None:
            self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(self._context)
        self._listener = loopback_listener()
        self.host, self.port = self._listener.getsockname()
        self._sockets = []
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    # -- life cycle ----------------------------------------------------------------------

    def stop(self):
        self._stopping = True
        self._listener.close()
        for sock in list(self._sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def wait_ended(self, timeout=10):
        """Wait until every connection so far has ended; return the records."""
        deadline = time.monotonic() + timeout
        for record in list(self.connections):
            record.done.wait(max(0.0, deadline - time.monotonic()))
        return self.connections

    def _accept(self):
        while not self._stopping:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            record = ConnectionRecord(len(self.connections))
            self.connections.append(record)
            self._sockets.append(sock)
            threading.Thread(target=self._serve, args=(sock, record), daemon=True).start()

    def _serve(self, sock, record):
        sock.settimeout(IDLE_TIMEOUT)
        faults = self.faults
        if self.faulty_connections is not None and record.index >= self.faulty_connections:
            faults = {}
        dialogue = _Dialogue(self, sock, record, faults)
        try:
            dialogue.run()
            record.ended = "server"
        except _Finished as finished:
            record.ended = finished.how
        except TimeoutError:
            record.ended = "timeout"
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
            record.ended = "client"
        except (OSError, ssl.SSLError):
            record.ended = "client"
        finally:
            try:
                dialogue.sock.close()
            except OSError:
                pass
            record.done.set()


class _Dialogue:
    """The server side of one connection."""

    def __init__(self, server, sock, record, faults):
        self.server = server
        self.sock = sock
        self.record = record
        self.faults = faults
        self.buffer = b""
        self.counts = {}
        self.fired = False
        self.tls = False

    # -- bytes ---------------------------------------------------------------------------

    def recv(self):
        try:
            data = self.sock.recv(65536)
        except ssl.SSLZeroReturnError:
            data = b""
        if not data:
            raise _Finished("client")
        self.record.received += data
        if self.fired:
            self.record.after_fault += data
        return data

    def read_line(self):
        while b"\n" not in self.buffer:
            self.buffer += self.recv()
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line + b"\n"

    def read_exact(self, size):
        while len(self.buffer) < size:
            self.buffer += self.recv()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def send(self, data):
        self.sock.sendall(data)

    # -- faults --------------------------------------------------------------------------

    def fault_for(self, stage):
        count = self.counts.get(stage, 0) + 1
        self.counts[stage] = count
        return self.faults.get("%s:%d" % (stage, count)) or self.faults.get(stage)

    def reply(self, stage, normal):
        """Send the normal reply of ``stage``, or apply its fault; True if the normal reply went."""
        fault = self.fault_for(stage)
        if fault is None:
            self.send(normal)
            return True
        self.apply(stage, fault)
        return False

    def apply(self, stage, fault):
        self.record.fault_stage = stage
        self.fired = True
        # Bytes the client pipelined before the fault count as sent after it too,
        # unless they were already read as commands.
        self.record.after_fault += self.buffer
        if fault.kind == "reply":
            self.send(fault.data)
            self.then(fault.then)
        elif fault.kind == "drip":
            for byte in fault.data:
                self.send(bytes([byte]))
                time.sleep(fault.interval)
            self.then(fault.then)
        elif fault.kind == "repeat":
            # Ends with BrokenPipeError or ConnectionResetError once the client closes.
            while True:
                self.send(fault.data)
        elif fault.kind == "stall":
            self.then("stall")
        elif fault.kind == "close":
            self.then("close")
        elif fault.kind == "reset":
            self.then("reset")
        else:
            raise ValueError("fault %r is not possible at stage %s" % (fault, stage))

    def then(self, what):
        if what == "continue":
            return
        if what == "stall":
            while True:
                self.recv()
        if what == "close":
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            raise _Finished("server")
        if what == "reset":
            self.reset()

    def reset(self):
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        raw = self.sock
        if isinstance(raw, ssl.SSLSocket):
            raw = socket.socket(fileno=raw.detach())
            self.sock = raw
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
        raise _Finished("server")

    # -- TLS -----------------------------------------------------------------------------

    def start_tls(self):
        fault = self.fault_for("tls")
        if fault is not None:
            self.record.fault_stage = "tls"
            self.fired = True
            if fault.kind == "partial_tls":
                self.partial_tls()
            self.apply("tls", fault)
            # A "continue" fault (such as garbage instead of a handshake) still ends here:
            # the client cannot speak TLS to a server that does not.
            self.then("stall")
        self.sock = self.server._context.wrap_socket(self.sock, server_side=True)
        self.tls = True
        self.record.tls = True

    def partial_tls(self):
        incoming = ssl.MemoryBIO()
        outgoing = ssl.MemoryBIO()
        tls = self.server._context.wrap_bio(incoming, outgoing, server_side=True)
        flight = b""
        while not flight:
            data = self.sock.recv(65536)
            if not data:
                raise _Finished("client")
            incoming.write(data)
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                pass
            flight = outgoing.read()
        self.send(flight[: len(flight) // 2])
        self.reset()

    # -- the dialogue --------------------------------------------------------------------

    def run(self):
        if self.server.mode == "tls":
            self.start_tls()
        self.reply("greeting", GREETING)
        while True:
            line = self.read_line()
            self.record.commands.append(line)
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb in (b"EHLO", b"HELO"):
                self.on_ehlo(verb)
            elif verb == b"STARTTLS":
                if self.reply("starttls", _REPLIES["starttls"]):
                    if self.buffer:
                        # The client sent more after STARTTLS; a real server drops it.
                        self.record.after_fault += self.buffer
                        self.buffer = b""
                    self.start_tls()
            elif verb == b"AUTH":
                self.on_auth(line)
            elif verb == b"MAIL":
                self.reply("mail", _REPLIES["mail"])
            elif verb == b"RCPT":
                self.reply("rcpt", _REPLIES["rcpt"])
            elif verb == b"DATA":
                if self.reply("data", _REPLIES["data"]):
                    self.on_content()
            elif verb == b"BDAT":
                self.on_bdat(line)
            elif verb == b"RSET":
                self.reply("rset", _REPLIES["rset"])
            elif verb == b"NOOP":
                self.send(_REPLIES["noop"])
            elif verb == b"QUIT":
                self.reply("quit", _REPLIES["quit"])
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            else:
                self.send(_REPLIES["unknown"])

    def on_ehlo(self, verb):
        keywords = self.server.ehlo_tls if self.tls else self.server.ehlo
        if verb == b"HELO":
            keywords = []
        lines = ["fault.example"] + list(keywords)
        reply = b"".join(
            b"250" + (b" " if i == len(lines) - 1 else b"-") + line.encode() + b"\r\n" for i, line in enumerate(lines)
        )
        self.reply("ehlo", reply)

    def on_auth(self, line):
        words = line.strip().split(b" ")
        fault = self.fault_for("auth")
        if fault is not None:
            self.apply("auth", fault)
            return
        credentials = read_sasl_credentials(self, words)
        if credentials is None:
            self.send(b"504 5.5.4 Unrecognized authentication type\r\n")
            return
        self.send(_REPLIES["auth_ok"] if self.check(*credentials) else _REPLIES["auth_failed"])

    def check(self, user, password):
        name = user.decode("utf-8", "replace")
        return name in self.server.users and self.server.users[name].encode() == password

    def on_content(self):
        content = b""
        while True:
            line = self.read_line()
            if line == b".\r\n":
                break
            content += line
        self.record.contents.append(content)
        self.reply("message", _REPLIES["message"])

    def on_bdat(self, line):
        words = line.split()
        size = int(words[1])
        chunk = self.read_exact(size)
        last = len(words) > 2 and words[2].upper() == b"LAST"
        if self.counts.get("bdat_open") is None:
            self.counts["bdat_open"] = b""
        self.counts["bdat_open"] += chunk
        if not last:
            self.send(_REPLIES["bdat"])
            return
        self.record.contents.append(self.counts.pop("bdat_open"))
        self.reply("message", _REPLIES["message"])
