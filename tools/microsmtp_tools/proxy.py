"""A TCP proxy on 127.0.0.1 that adds latency and counts round trips.

Each direction's data is forwarded RTT/2 after it arrived, so a request and its
reply take one RTT more than without the proxy; the connection itself is delayed by
RTT/2 before the proxy connects upstream, and the greeting by another RTT/2.

Round trips are counted per connection as the client waits for the server:
one for the connection (TCP handshake and the server's greeting), plus one for every
burst of server-to-client data that follows client-to-server data. Commands a client
sends together (pipelining, or TLS records written back to back) and the replies to
them count once. Data the server sends without new client data (a second segment of
the same reply) continues the same burst.
"""

import asyncio
import threading
import time

READ_SIZE = 65536


class ConnectionStats:
    """Counters of one proxied connection."""

    def __init__(self):
        self.round_trips = 1  # the connection and the greeting
        self.client_bytes = 0
        self.server_bytes = 0
        self._last = "server"
        self.closed = False

    def client_data(self, size):
        self.client_bytes += size
        self._last = "client"

    def server_data(self, size):
        self.server_bytes += size
        if self._last == "client":
            self.round_trips += 1
        self._last = "server"


class LatencyProxy:
    """Runs in its own thread; use as a context manager. ``port`` is where clients connect."""

    def __init__(self, target_host, target_port, rtt_ms):
        self.target = (target_host, target_port)
        self.delay_s = rtt_ms / 2000.0
        self.connections = []
        self.port = None
        self._loop = None
        self._thread = None
        self._ready = threading.Event()
        self._tasks = set()

    # -- control from other threads ---------------------------------------------------

    def start(self):
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the latency proxy did not start within 10 s")
        return self

    def stop(self):
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def reset(self):
        """Forget the connections counted so far."""
        self.connections = []

    def wait_closed(self, timeout=10.0):
        """Wait until every counted connection has closed in both directions."""
        deadline = time.monotonic() + timeout
        while not all(stats.closed for stats in list(self.connections)):
            if time.monotonic() > deadline:
                raise TimeoutError("proxied connections still open after %g s" % timeout)
            time.sleep(0.01)

    @property
    def round_trips(self):
        return sum(stats.round_trips for stats in self.connections)

    # -- the event loop thread --------------------------------------------------------

    def _run(self):
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self):
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            # Every connection handler and the pumps they started.
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, client_reader, client_writer):
        task = asyncio.current_task()
        self._tasks.add(task)
        stats = ConnectionStats()
        self.connections.append(stats)
        server_writer = None
        try:
            await asyncio.sleep(self.delay_s)
            server_reader, server_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(
                self._pump(client_reader, server_writer, stats.client_data),
                self._pump(server_reader, client_writer, stats.server_data),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # The proxy is stopping. Returning instead of raising keeps asyncio's server
            # callback from logging the cancelled handler as an error.
            pass
        finally:
            stats.closed = True
            for writer in (client_writer, server_writer):
                if writer is not None:
                    writer.close()
            self._tasks.discard(task)

    async def _pump(self, reader, writer, count):
        """Forward reader to writer, each chunk delay_s after it arrived; count on arrival."""
        queue = asyncio.Queue()

        async def forward():
            while True:
                release, data = await queue.get()
                pause = release - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        forwarder = asyncio.ensure_future(forward())
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    queue.put_nowait((time.monotonic() + self.delay_s, None))
                    break
                count(len(data))
                queue.put_nowait((time.monotonic() + self.delay_s, data))
            await forwarder
        except BaseException:
            forwarder.cancel()
            await asyncio.gather(forwarder, return_exceptions=True)
            raise
