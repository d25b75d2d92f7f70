"""A sans-IO SMTP server for session tests, on both runtimes.

It parses what the client sends (command lines, DATA content up to the dot, BDAT
chunks by octet count) and answers each command from a table of replies, so a test
can run the same dialogue with and without PIPELINING and compare the outcomes.
``converse()`` drives a client Session against it and counts the client's turns
(flights of data that wait for an answer), the sans-IO measure of round trips.
"""

from microsmtp.session import CLOSED, IDLE, NEED_DATA, SEND, START_TLS


class FakeServer:
    def __init__(self, extensions=("PIPELINING", "SIZE 100000", "8BITMIME"), tls_extensions=None, replies=None):
        self.extensions = list(extensions)
        self.tls_extensions = list(tls_extensions if tls_extensions is not None else extensions)
        # Replies by command word ("MAIL", "RCPT", "DATA", "DOT", "BDAT", "AUTH", ...),
        # or by "RCPT <address>"; a list is used up one reply per command.
        self.replies = dict(replies or {})
        self.tls = False
        self.commands = []
        self.messages = []
        self._in = b""
        self._out = b""
        self._data = None
        self._bdat_left = 0
        self._bdat_last = False
        self._bdat = b""
        # Transaction state, as a real server keeps it: commands out of order get 503.
        self._mail_ok = False
        self._rcpts_ok = 0
        self.closed = False
        self._out += self._reply("GREETING", b"220 fake.example ESMTP\r\n")

    def _reply(self, key, default):
        value = self.replies.get(key)
        if isinstance(value, list):
            value = value.pop(0) if value else None
        if value is None:
            return default
        return value if value.endswith(b"\n") else value + b"\r\n"

    def receive(self, data):
        self._in += data
        while not self.closed:
            if self._bdat_left:
                take = self._in[: self._bdat_left]
                self._in = self._in[len(take) :]
                self._bdat += take
                self._bdat_left -= len(take)
                if self._bdat_left:
                    return
                self._out += self._end_chunk()
                continue
            end = self._in.find(b"\r\n")
            if end < 0:
                return
            line = self._in[:end]
            self._in = self._in[end + 2 :]
            if self._data is not None:
                if line == b".":
                    self.messages.append(b"".join(self._data))
                    self._data = None
                    self._reset()
                    self._out += self._reply("DOT", b"250 2.0.0 queued\r\n")
                else:
                    self._data.append((line[1:] if line.startswith(b".") else line) + b"\r\n")
                continue
            self._command(line)

    def _command(self, line):
        self.commands.append(line)
        word = line.split(b" ")[0].split(b":")[0].upper()
        if word == b"EHLO":
            keywords = self.tls_extensions if self.tls else self.extensions
            lines = [b"fake.example"] + [k.encode() for k in keywords]
            reply = b"".join(b"250-" + line + b"\r\n" for line in lines[:-1]) + b"250 " + lines[-1] + b"\r\n"
            self._out += self._reply("EHLO", reply)
        elif word == b"STARTTLS":
            self._out += self._reply("STARTTLS", b"220 go ahead\r\n")
        elif word == b"AUTH":
            self._out += self._reply("AUTH", b"235 2.7.0 ok\r\n")
        elif word == b"MAIL":
            reply = b"503 5.5.1 nested MAIL command\r\n" if self._mail_ok else self._reply("MAIL", b"250 2.1.0 ok\r\n")
            self._mail_ok = self._mail_ok or reply.startswith(b"250")
            self._out += reply
        elif word == b"RCPT":
            address = line[line.find(b"<") + 1 : line.find(b">")].decode()
            if not self._mail_ok:
                reply = b"503 5.5.1 need MAIL command\r\n"
            else:
                reply = self._reply("RCPT " + address, None) or self._reply("RCPT", b"250 2.1.5 ok\r\n")
            if reply.startswith(b"25"):
                self._rcpts_ok += 1
            self._out += reply
        elif word == b"DATA":
            if not self._mail_ok:
                reply = self._reply("DATA", b"503 5.5.1 need MAIL command\r\n")
            elif not self._rcpts_ok:
                reply = self._reply("DATA", b"554 5.5.1 no valid recipients\r\n")
            else:
                reply = self._reply("DATA", b"354 go ahead\r\n")
            if reply.startswith(b"354"):
                self._data = []
            else:
                self._reset()
            self._out += reply
        elif word == b"BDAT":
            parts = line.split(b" ")
            self._bdat_left = int(parts[1])
            self._bdat_last = len(parts) > 2 and parts[2].upper() == b"LAST"
            if self._bdat_left == 0:
                self._out += self._end_chunk()
        elif word == b"RSET":
            self._reset()
            self._out += self._reply("RSET", b"250 2.0.0 ok\r\n")
        elif word == b"QUIT":
            self._out += b"221 bye\r\n"
            self.closed = True
        else:
            self._out += b"500 unknown command\r\n"

    def _reset(self):
        self._mail_ok = False
        self._rcpts_ok = 0
        self._bdat = b""

    def _end_chunk(self):
        # RFC 3030: a chunk without a transaction is read and discarded with an error.
        if not self._mail_ok:
            self._bdat = b""
            return b"503 5.5.1 need MAIL command\r\n"
        if not self._rcpts_ok:
            self._bdat = b""
            return b"554 5.5.1 no valid recipients\r\n"
        reply = self._reply("BDAT", b"250 2.0.0 chunk ok\r\n")
        if not reply.startswith(b"250"):
            self._reset()
        elif self._bdat_last:
            self.messages.append(self._bdat)
            self._reset()
        return reply

    def output(self):
        out = self._out
        self._out = b""
        return out


def converse(session, server, max_turns=200):
    """Run session against server until IDLE or CLOSED; return the number of client turns.

    A turn is one wait for the server after sending: what PIPELINING reduces. Errors
    from the session propagate.
    """
    turns = 0
    sent_since_read = False
    for _ in range(100000):
        event = session.next_event()
        if event == SEND:
            server.receive(session.data_to_send())
            sent_since_read = True
        elif event == NEED_DATA:
            if sent_since_read:
                turns += 1
                sent_since_read = False
            data = server.output()
            if not data:
                data = b"" if server.closed else None
            if data is None:
                raise AssertionError("deadlock: the session waits but the server has nothing to say")
            session.receive_data(data)
        elif event == START_TLS:
            server.tls = True
            session.tls_started()
        elif event in (IDLE, CLOSED):
            return turns
        if turns > max_turns:
            raise AssertionError("too many turns")
    raise AssertionError("session did not settle")
