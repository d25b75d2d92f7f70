"""A loopback TCP server driven by a script, for servers that misbehave on purpose.

Each accepted connection runs ``handler(conn)`` in its own thread with a blocking
socket. Helpers below build the usual scripts: send bytes, read a command line, stall.
The server only listens on 127.0.0.1 and stops at ``stop()``.
"""

import socket
import ssl
import threading


def loopback_listener(backlog=16):
    """Return a listening TCP socket on 127.0.0.1 at a port the OS chose."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    return listener


class RawServer:
    def __init__(self, handler):
        self._handler = handler
        self._listener = loopback_listener(8)
        self.host, self.port = self._listener.getsockname()
        self._stopping = threading.Event()
        self._connections = []
        self.received = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            self._handler(Connection(conn, self))
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def stop(self):
        self._stopping.set()
        self._listener.close()
        for conn in self._connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


class Connection:
    """The server side of one connection, with line-oriented helpers."""

    def __init__(self, sock, server):
        self.sock = sock
        self._server = server
        self._buffer = b""
        sock.settimeout(30)

    def send(self, data):
        self.sock.sendall(data)

    def read_line(self):
        while b"\n" not in self._buffer:
            data = self.sock.recv(4096)
            if not data:
                raise OSError("client closed")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        self._server.received.append(line + b"\n")
        return line + b"\n"

    def stall(self, seconds=30):
        """Keep the connection open and silent until the client leaves or time runs out."""
        self.sock.settimeout(seconds)
        try:
            while self.sock.recv(4096):
                pass
        except OSError:
            pass

    def start_tls(self, context):
        self.sock = context.wrap_socket(self.sock, server_side=True)
