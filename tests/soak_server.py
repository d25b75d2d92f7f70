"""A loopback SMTP server that fails at random, for soak tests.

``SoakServer`` behaves like a correct STARTTLS + AUTH submission server: EHLO,
STARTTLS with real TLS, AUTH PLAIN and LOGIN, MAIL, RCPT, DATA, BDAT, RSET, NOOP and
QUIT, with PIPELINING and CHUNKING advertised unless turned off. But it draws a fault
from a seeded RNG once per unit of the dialogue. A unit is the set-up of a
connection (greeting up to AUTH) or one mail transaction (an optional RSET, then
MAIL, RCPT, DATA or BDAT, the content and the final reply). With probability
``transient_rate`` the unit gets a transient reply at one of its stages:

* 421 (and the server closes the connection) at any stage that has a reply;
* 451 or 452 to MAIL, RCPT, DATA (or the first BDAT) and the final dot (or BDAT LAST);
* 454 to STARTTLS and to AUTH.

With probability ``drop_rate`` the server instead drops the connection (FIN or RST,
chosen at random) at one of the unit's stages: right after accepting, instead of a
reply, before the TLS handshake, in the middle of the content, or after the whole
content arrived but before the final reply. In that last case the server keeps the
message, as a real server that crashes after queueing would, and the client cannot
know it arrived: a retry delivers a duplicate with the same Message-ID.

Every message the server took is recorded in ``deliveries`` (``Delivery``) with its
Message-ID and content, and whether the final 250 was sent. ``faults`` counts the
injected faults by label ("451 at rcpt", "drop (reset) at dot"), and ``fault_log``
lists them with the connection's number in order. Each connection draws from its own ``random.Random`` seeded
from ``seed`` and the connection's number. Listens only on 127.0.0.1.
"""

import collections
import random
import socket
import ssl
import struct
import threading

from fault_server import read_sasl_credentials
from raw_server import loopback_listener

USERS = {"alice": "secret"}
MAX_SIZE = 1000000
# Seconds a connection may stay silent before the server closes it. This is longer
# than any client deadline used with this server, so the client always leaves first.
IDLE_TIMEOUT = 60
# Seconds the server keeps reading after it sent FIN for a dropped connection.
DRAIN_TIMEOUT = 10

TRANSIENT_REPLIES = {
    421: b"421 4.3.2 Service shutting down, closing the connection\r\n",
    451: b"451 4.3.0 Local error in processing, try again later\r\n",
    452: b"452 4.3.1 Insufficient system storage, try again later\r\n",
    454: b"454 4.7.0 Temporary failure, try again later\r\n",
}

# Each stage of a unit with the transient codes possible there. A stage without codes
# can only see a dropped connection.
SETUP_STAGES = (
    ("connect", ()),
    ("greeting", (421,)),
    ("ehlo", (421,)),
    ("starttls", (421, 454)),
    ("tls", ()),
    ("ehlo_tls", (421,)),
    ("auth", (421, 454)),
)
TRANSACTION_STAGES = (
    ("rset", (421,)),
    ("mail", (421, 451, 452)),
    ("rcpt", (421, 451, 452)),
    ("data", (421, 451, 452)),
    ("content", ()),
    ("dot", (421, 451, 452)),
)

_OK = {
    "greeting": b"220 soak.example ESMTP soak test server\r\n",
    "starttls": b"220 2.0.0 Ready to start TLS\r\n",
    "auth": b"235 2.7.0 Authentication successful\r\n",
    "mail": b"250 2.1.0 Ok\r\n",
    "rcpt": b"250 2.1.5 Ok\r\n",
    "data": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    "bdat": b"250 2.0.0 Ok: chunk received\r\n",
    "dot": b"250 2.0.0 Ok: queued\r\n",
    "rset": b"250 2.0.0 Ok\r\n",
    "noop": b"250 2.0.0 Ok\r\n",
    "quit": b"221 2.0.0 Bye\r\n",
}
_ERRORS = {
    "auth_failed": b"535 5.7.8 Authentication credentials invalid\r\n",
    "auth_mechanism": b"504 5.5.4 Unrecognized authentication type\r\n",
    "auth_needs_tls": b"538 5.7.11 Encryption required for requested authentication mechanism\r\n",
    "auth_twice": b"503 5.5.1 Error: already authenticated\r\n",
    "auth_required": b"530 5.7.0 Authentication required\r\n",
    "tls_twice": b"503 5.5.1 Error: TLS already active\r\n",
    "nested_mail": b"503 5.5.1 Error: nested MAIL command\r\n",
    "too_big": b"552 5.3.4 Message size exceeds fixed limit\r\n",
    "need_mail": b"503 5.5.1 Error: need MAIL command\r\n",
    "need_rcpt": b"554 5.5.1 Error: no valid recipients\r\n",
    "bad_syntax": b"501 5.5.4 Syntax error in parameters\r\n",
    "bdat_failed": b"503 5.5.1 Error: an earlier BDAT chunk of this message failed\r\n",
    "unknown": b"502 5.5.2 Error: command not recognized\r\n",
}


_COMMANDS = (b"EHLO", b"HELO", b"STARTTLS", b"AUTH", b"MAIL", b"RCPT", b"DATA", b"BDAT", b"RSET", b"NOOP", b"QUIT")


class Delivery:
    """One copy of a message the server received in full.

    ``acknowledged`` is False when the server dropped the connection after the final
    dot (or BDAT LAST) instead of sending its 250. ``content`` is the message as the
    client meant it: dot-stuffing removed, without the final ".\\r\\n".
    """

    def __init__(self, connection, message_id, content, acknowledged, method):
        self.connection = connection
        self.message_id = message_id
        self.content = content
        self.acknowledged = acknowledged
        self.method = method

    def __repr__(self):
        return "<Delivery %s on connection %d via %s, %s>" % (
            self.message_id,
            self.connection,
            self.method,
            "acknowledged" if self.acknowledged else "dropped before the 250",
        )


def message_id_of(content):
    """Return the Message-ID header value of a message's content, or None."""
    header = content.split(b"\r\n\r\n", 1)[0]
    for line in header.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"message-id":
            return value.strip().decode("ascii", "replace")
    return None


class _Fault:
    def __init__(self, stage, kind, detail):
        self.stage = stage
        self.kind = kind  # "transient" or "drop"
        self.detail = detail  # the reply code, or "close" / "reset"

    def label(self):
        if self.kind == "transient":
            return "%d at %s" % (self.detail, self.stage)
        return "drop (%s) at %s" % (self.detail, self.stage)


class _Dropped(Exception):
    """The server dropped the connection on purpose."""


class _Closed(Exception):
    """The client closed the connection, or it ended with QUIT or a 421."""


class SoakServer:
    """A loopback SMTP server with random transient faults and dropped connections.

    ``cert`` is the trustme.LeafCert for STARTTLS. ``pipelining`` and ``chunking``
    set False leave PIPELINING and CHUNKING out of the EHLO reply (CHUNKING is only
    advertised together with PIPELINING, so ``chunking`` alone cannot turn lock-step
    off). See the module docstring for the faults.
    """

    def __init__(self, cert, seed=1, transient_rate=0.10, drop_rate=0.05, pipelining=True, chunking=True):
        if transient_rate < 0 or drop_rate < 0 or transient_rate + drop_rate > 1:
            raise ValueError("transient_rate and drop_rate must be from 0 to 1 together")
        self.seed = seed
        self.transient_rate = transient_rate
        self.drop_rate = drop_rate
        self.extensions = ["SIZE %d" % MAX_SIZE, "8BITMIME", "ENHANCEDSTATUSCODES"]
        if pipelining:
            self.extensions.append("PIPELINING")
            if chunking:
                self.extensions.append("CHUNKING")
        self.deliveries = []
        self.faults = collections.Counter()
        # (connection number, fault label) in the order the faults were injected.
        self.fault_log = []
        self.connections = 0
        self.transactions = 0
        self.errors = []
        self._lock = threading.Lock()
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self._context)
        self._listener = loopback_listener()
        self.host, self.port = self._listener.getsockname()
        self._threads = []
        self._dialogues = []
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def stop(self):
        self._stopping = True
        self._listener.close()
        for dialogue in list(self._dialogues):
            try:
                dialogue.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def summary(self):
        """Return the counts of injected faults: by label, by kind, and the total."""
        by_kind = collections.Counter()
        for label, count in self.faults.items():
            if label.startswith("drop"):
                by_kind["drop after the final dot" if label.endswith(" at dot") else "drop elsewhere"] += count
            else:
                by_kind[label.split(" ", 1)[0]] += count
        return {"by_label": dict(self.faults), "by_kind": dict(by_kind), "total": sum(self.faults.values())}

    def _accept(self):
        while not self._stopping:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                index = self.connections
                self.connections += 1
            # A string seed is hashed the same way in every run (unlike hash() of a str).
            dialogue = _Dialogue(self, sock, index, random.Random("%s/%d" % (self.seed, index)))
            self._dialogues.append(dialogue)
            thread = threading.Thread(target=self._serve, args=(dialogue,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, dialogue):
        dialogue.sock.settimeout(IDLE_TIMEOUT)
        try:
            dialogue.run()
        except (_Dropped, _Closed):
            pass
        except (OSError, ssl.SSLError):
            # The client closed or reset the connection, or broke off the handshake.
            pass
        except Exception as exc:  # a bug in this server: keep it for the test to report
            self.errors.append("connection %d: %r" % (dialogue.index, exc))
        finally:
            try:
                dialogue.sock.close()
            except OSError:
                pass

    def _record_fault(self, index, fault):
        with self._lock:
            self.faults[fault.label()] += 1
            self.fault_log.append((index, fault.label()))

    def _record_delivery(self, delivery):
        with self._lock:
            self.deliveries.append(delivery)


class _Dialogue:
    """The server side of one connection."""

    def __init__(self, server, sock, index, rng):
        self.server = server
        self.sock = sock
        self.index = index
        self.rng = rng
        self.buffer = b""
        self.tls = False
        self.authenticated = False
        self.fault = None
        self.in_transaction = False
        self.reset_transaction()

    # -- faults --------------------------------------------------------------------------

    def draw(self, stages):
        """Plan at most one fault for the unit that starts now."""
        server = self.server
        value = self.rng.random()
        if value < server.transient_rate:
            stage, codes = self.rng.choice([item for item in stages if item[1]])
            self.fault = _Fault(stage, "transient", self.rng.choice(codes))
        elif value < server.transient_rate + server.drop_rate:
            stage = self.rng.choice(stages)[0]
            self.fault = _Fault(stage, "drop", self.rng.choice(("close", "reset")))
        else:
            self.fault = None

    def fault_at(self, stage):
        """Return the planned fault if it belongs to ``stage`` (and count it), else None."""
        fault = self.fault
        if fault is None or fault.stage != stage:
            return None
        self.fault = None
        self.server._record_fault(self.index, fault)
        return fault

    def reply(self, stage, normal):
        """Send the normal reply of ``stage`` or its planned fault; True if the normal reply went."""
        fault = self.fault_at(stage)
        if fault is None:
            self.send(normal)
            return True
        self.inject(fault)
        return False

    def inject(self, fault):
        if fault.kind == "drop":
            self.drop(fault.detail)
        self.send(TRANSIENT_REPLIES[fault.detail])
        if fault.detail == 421:
            self.close()

    def drop(self, how):
        raw = self.sock
        if how == "reset":
            if isinstance(raw, ssl.SSLSocket):
                raw = socket.socket(fileno=raw.detach())
                self.sock = raw
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()
            raise _Dropped()
        # FIN without a TLS close_notify. The server then reads and discards what the
        # client still sends until it closes too: closing at once would answer those
        # bytes with an RST, which could reach the client before the FIN does.
        try:
            raw.shutdown(socket.SHUT_WR)
            raw.settimeout(DRAIN_TIMEOUT)
            while raw.recv(65536):
                pass
        except OSError:
            pass
        raise _Dropped()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _Closed()

    # -- bytes ---------------------------------------------------------------------------

    def recv(self):
        try:
            data = self.sock.recv(65536)
        except ssl.SSLZeroReturnError:
            data = b""
        if not data:
            raise _Closed()
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

    # -- the dialogue --------------------------------------------------------------------

    def run(self):
        self.draw(SETUP_STAGES)
        fault = self.fault_at("connect")
        if fault is not None:
            self.drop(fault.detail)
        self.reply("greeting", _OK["greeting"])
        while True:
            line = self.read_line()
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb in _COMMANDS:
                getattr(self, "on_" + verb.decode().lower())(line)
            else:
                self.send(_ERRORS["unknown"])

    def on_ehlo(self, line):
        stage = "ehlo_tls" if self.tls else "ehlo"
        keywords = list(self.server.extensions)
        keywords.append("AUTH PLAIN LOGIN" if self.tls else "STARTTLS")
        lines = ["soak.example"] + keywords
        reply = b"".join(
            b"250" + (b" " if i == len(lines) - 1 else b"-") + text.encode() + b"\r\n" for i, text in enumerate(lines)
        )
        self.reset_transaction()
        self.reply(stage, reply)

    def on_helo(self, line):
        self.send(b"250 soak.example\r\n")

    def on_starttls(self, line):
        if self.tls:
            self.send(_ERRORS["tls_twice"])
            return
        if not self.reply("starttls", _OK["starttls"]):
            return
        # Commands pipelined after STARTTLS must be discarded (RFC 3207 section 4.2).
        self.buffer = b""
        fault = self.fault_at("tls")
        if fault is not None:
            self.drop(fault.detail)
        self.sock = self.server._context.wrap_socket(self.sock, server_side=True)
        self.tls = True
        self.reset_transaction()

    def on_auth(self, line):
        words = line.strip().split(b" ")
        if not self.tls:
            self.send(_ERRORS["auth_needs_tls"])
            return
        if self.authenticated:
            self.send(_ERRORS["auth_twice"])
            return
        credentials = read_sasl_credentials(self, words)
        if credentials is None:
            self.send(_ERRORS["auth_mechanism"])
            return
        if not self.check(*credentials):
            self.send(_ERRORS["auth_failed"])
            return
        if self.reply("auth", _OK["auth"]):
            self.authenticated = True

    def check(self, user, password):
        name = user.decode("utf-8", "replace")
        return name in USERS and USERS[name].encode() == password

    # -- mail transactions ---------------------------------------------------------------

    def reset_transaction(self):
        self.sender = None
        self.recipients = []
        self.chunks = []
        self.chunk_failed = False

    def start_unit(self, with_rset):
        stages = TRANSACTION_STAGES if with_rset else TRANSACTION_STAGES[1:]
        self.draw(stages)
        self.in_transaction = True
        with self.server._lock:
            self.server.transactions += 1

    def end_unit(self):
        self.in_transaction = False
        self.fault = None

    def on_rset(self, line):
        self.start_unit(with_rset=True)
        self.reset_transaction()
        self.reply("rset", _OK["rset"])

    def on_noop(self, line):
        self.send(_OK["noop"])

    def on_quit(self, line):
        self.send(_OK["quit"])
        self.close()

    def on_mail(self, line):
        if not self.in_transaction:
            self.start_unit(with_rset=False)
        if not self.authenticated:
            self.send(_ERRORS["auth_required"])
            self.end_unit()
            return
        if self.sender is not None:
            self.send(_ERRORS["nested_mail"])
            return
        argument = line[len(b"MAIL FROM:") :].strip()
        if not line.upper().startswith(b"MAIL FROM:<") or b">" not in argument:
            self.send(_ERRORS["bad_syntax"])
            self.end_unit()
            return
        for parameter in argument.split(b">", 1)[1].split():
            if parameter.upper().startswith(b"SIZE=") and int(parameter[5:]) > MAX_SIZE:
                self.send(_ERRORS["too_big"])
                self.end_unit()
                return
        if self.reply("mail", _OK["mail"]):
            self.sender = argument.split(b">", 1)[0][1:]
        else:
            self.end_unit()

    def on_rcpt(self, line):
        if self.sender is None:
            self.send(_ERRORS["need_mail"])
            return
        if not line.upper().startswith(b"RCPT TO:<"):
            self.send(_ERRORS["bad_syntax"])
            return
        if self.reply("rcpt", _OK["rcpt"]):
            self.recipients.append(line[len(b"RCPT TO:<") :].split(b">", 1)[0])

    def on_data(self, line):
        if self.sender is None:
            self.send(_ERRORS["need_mail"])
            return
        if not self.recipients:
            self.send(_ERRORS["need_rcpt"])
            return
        if not self.reply("data", _OK["data"]):
            return
        content = []
        first = True
        while True:
            text = self.read_line()
            if first:
                first = False
                fault = self.fault_at("content")
                if fault is not None:
                    self.drop(fault.detail)
            if text == b".\r\n":
                break
            content.append(text[1:] if text.startswith(b".") else text)
        self.finish(b"".join(content), "DATA")

    def on_bdat(self, line):
        words = line.split()
        try:
            size = int(words[1])
        except (IndexError, ValueError):
            self.send(_ERRORS["bad_syntax"])
            return
        last = len(words) > 2 and words[2].upper() == b"LAST"
        first = not self.chunks and not self.chunk_failed
        fault = None
        if first and self.sender is not None and self.recipients:
            fault = self.fault_at("data")
            if fault is not None and fault.kind == "drop":
                self.drop(fault.detail)
            content_fault = self.fault_at("content")
            if content_fault is not None:
                self.read_exact(size // 2)
                self.drop(content_fault.detail)
        # The chunk is read in every case, so that its octets are not taken for commands.
        chunk = self.read_exact(size)
        if self.sender is None or not self.recipients or self.chunk_failed:
            if self.chunk_failed:
                self.send(_ERRORS["bdat_failed"])
            else:
                self.send(_ERRORS["need_mail"] if self.sender is None else _ERRORS["need_rcpt"])
            self.fail_chunk(last)
            return
        if fault is not None:
            self.fail_chunk(last)
            self.inject(fault)
            return
        self.chunks.append(chunk)
        if not last:
            self.send(_OK["bdat"])
            return
        self.finish(b"".join(self.chunks), "BDAT")

    def fail_chunk(self, last):
        # After a failed BDAT the server discards the rest of the message up to BDAT
        # LAST (RFC 3030 section 2); RSET or a new EHLO ends it too.
        if last:
            self.reset_transaction()
        else:
            self.chunk_failed = True

    def finish(self, content, method):
        """Take the message after the final dot or BDAT LAST, or apply the fault planned there."""
        connection = self.index
        message_id = message_id_of(content)
        self.reset_transaction()
        fault = self.fault_at("dot")
        if fault is not None and fault.kind == "drop":
            self.server._record_delivery(Delivery(connection, message_id, content, False, method))
            self.drop(fault.detail)
        self.end_unit()
        if fault is not None:
            self.inject(fault)
            return
        # Recorded before the 250 goes out, so the record exists once the client has the
        # reply. If the 250 cannot be written, the client never saw it.
        delivery = Delivery(connection, message_id, content, True, method)
        self.server._record_delivery(delivery)
        try:
            self.send(_OK["dot"])
        except OSError:
            delivery.acknowledged = False
            raise
