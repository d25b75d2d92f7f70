"""Queue alerts in the durable outbox and send them through a failing server; run
under MicroPython by tests/test_soak.py.

Usage: micropython -X heapsize=SIZE soak_harness.py OUTBOX_DIR COUNT PORT CA_DER_FILE [MAX_SESSIONS]

A producer task puts alerts named soak-0, soak-1, ... into the outbox in OUTBOX_DIR
(at most MAX_BACKLOG pending) while the sender task delivers them to the server on
127.0.0.1:PORT, as the alert firmware's tasks do. That runs in ten rounds of a
tenth of COUNT each, until the outbox is empty. The sender's backoff delays pass on
a virtual clock (a ``sim_clock`` stand-in for the board's RTC) that jumps forward
instead of waiting, so retries follow the firmware's default schedule (30 s doubling
up to 3600 s) without real sleeps.

Output lines:

* ``queued NAME MESSAGE-ID`` after each put();
* ``heap delivered=N sessions=S bytes=B`` with gc.mem_alloc() after gc.collect(),
  before the first alert and after each round;
* the sender's own log lines;
* ``done delivered=N sessions=S failed=F pending=P aside=A dropped=D leftovers=NAMES``.

Exits with status 0 only when all COUNT alerts were queued and sent, nothing was set
aside or dropped and no other file is left in OUTBOX_DIR. Otherwise the status is 1,
also when MAX_SESSIONS sessions (default 5 * COUNT + 100) did not empty the outbox.
"""

import gc
import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

# 2026-01-01 00:00:00 UTC. The virtual clock starts here.
START_EPOCH = 1767225600
# Real seconds between two alerts of the producer.
PUT_INTERVAL_S = 0.005
# The producer waits while this many alerts are pending. A board makes a few alerts
# per hour (alerts.max_per_hour, default 10), so the sender keeps up there. Without
# this bound the producer would fill the outbox faster than any server takes it.
MAX_BACKLOG = 20
# The firmware's default outbox size (outbox.max_entries); MAX_BACKLOG stays below it,
# so no alert is dropped by design.
MAX_ENTRIES = 50


class VirtualClock:
    """Stand-in for the board's RTC, read by alerts.clock as module ``sim_clock``."""

    speed = 1

    def __init__(self, start):
        self.seconds = start

    def now(self):
        return self.seconds

    def elapsed(self):
        return self.seconds - START_EPOCH

    def is_synced(self):
        return True

    def advance(self, seconds):
        # alerts.clock.now() truncates to whole seconds, so a fraction would leave an
        # entry that is due in 0.4 s still waiting at the same whole second.
        whole = int(seconds)
        self.seconds += whole if whole == seconds else whole + 1


clock = VirtualClock(START_EPOCH)
sys.modules["sim_clock"] = clock

from alerts.outbox import Outbox  # noqa: E402  (the clock stand-in must be installed first)
from alerts.sender import Sender  # noqa: E402

# The library loads the code of rare paths (failed AUTH, 452 deferrals, unsolicited
# replies, attachments) on first use and keeps it. Loading it here keeps that one-time
# step out of the heap figures, so only a leak makes them grow.
import microsmtp.auth  # noqa: E402, F401
import microsmtp.checks  # noqa: E402, F401
import microsmtp.encoding  # noqa: E402, F401
import microsmtp.mime  # noqa: E402, F401
import microsmtp.session_rare  # noqa: E402, F401


def make_config(port):
    return {
        "device": "soak-board",
        "smtp": {
            "host": "127.0.0.1",
            "port": port,
            "security": "starttls",
            "user": "alice",
            "password": "secret",
            "oauth2_token": None,
            "server_name": "localhost",
            "timeout_s": 10,
            "transcript": False,
            "from": "board@example.com",
            "to": ["ops@example.org"],
        },
        # The firmware's defaults: with the virtual clock they cost no real time.
        "outbox": {"retry_min_s": 30, "retry_max_s": 3600},
    }


def make_alert(index):
    return {
        "kind": "alert",
        "rule": "soak-%d" % index,
        "sensor": "temp",
        "value": 30 + index % 10,
        "unit": "C",
        "condition": "above",
        "threshold": 30,
        "time": START_EPOCH + index,
        "readings": [[START_EPOCH + index - 60, 29.5], [START_EPOCH + index, 30 + index % 10]],
    }


def print_heap(delivered, sessions):
    gc.collect()
    print("heap delivered=%d sessions=%d bytes=%d" % (delivered, sessions, gc.mem_alloc()))


class Soak:
    def __init__(self, directory, count, port, roots, max_sessions):
        self.count = count
        self.max_sessions = max_sessions
        self.outbox = Outbox(directory, max_entries=MAX_ENTRIES)
        self.outbox.recover()
        self.sender = Sender(make_config(port), self.outbox, roots)
        self.produced = 0
        self.sessions = 0
        self.failed = 0
        self.producing = False
        self.producer_error = None
        self.wake = None

    async def run(self, target):
        """Queue alerts up to number ``target`` while sending; return once all are sent."""
        self.wake = asyncio.Event()
        self.producing = True
        producer = asyncio.create_task(self.produce(target))
        try:
            await self.send()
        finally:
            producer.cancel()
            try:
                await producer
            except asyncio.CancelledError:
                pass

    async def produce(self, target):
        try:
            while self.produced < target:
                name = self.outbox.put(make_alert(self.produced), clock.now())
                print("queued soak-%d %s" % (self.produced, self.outbox.load(name)["id"]))
                self.produced += 1
                self.wake.set()
                await asyncio.sleep(PUT_INTERVAL_S)
                while len(self.outbox.pending()) >= MAX_BACKLOG:
                    await asyncio.sleep(PUT_INTERVAL_S)
        except Exception as exc:
            self.producer_error = exc
            print("producer failed after %d alerts: %s: %s" % (self.produced, type(exc).__name__, exc))
        finally:
            self.producing = False
            self.wake.set()

    async def send(self):
        while self.sessions < self.max_sessions:
            if not self.outbox.pending():
                if not self.producing:
                    return
                # Wait for the producer, as the firmware's sender task waits for alerts.
                self.wake.clear()
                await self.wake.wait()
                continue
            self.sessions += 1
            self.sender.last_error = None
            delay = await self.sender.run_session()
            if self.sender.last_error is not None:
                self.failed += 1
            if delay:
                clock.advance(delay)
            # Let the producer run between sessions even when nothing had to wait.
            await asyncio.sleep(0)


def leftover_files(directory):
    import os

    names = [name for name in os.listdir(directory) if name != "aside"]
    names += ["aside/" + name for name in os.listdir(directory + "/aside")]
    return names


def main():
    directory, count, port, ca_path = sys.argv[1:5]
    count = int(count)
    max_sessions = int(sys.argv[5]) if len(sys.argv) > 5 else 5 * count + 100
    with open(ca_path, "rb") as file:
        roots = [file.read()]
    soak = Soak(directory, count, int(port), roots, max_sessions)
    print_heap(0, 0)
    # Ten rounds, each queueing and sending a tenth of the alerts. The heap is measured
    # between rounds, outside the event loop, with only the outbox and the sender alive.
    # Samples taken inside the loop differed by up to 4 KB from one session to the next
    # and fell back after the loop ended, likely objects kept by stale pointers that the
    # conservative collector finds on the C stack.
    step = max(1, count // 10)
    while soak.produced < count and soak.sessions < max_sessions and soak.producer_error is None:
        asyncio.run(soak.run(min(count, soak.produced + step)))
        print_heap(soak.sender.delivered, soak.sessions)
    outbox = soak.outbox
    pending = len(outbox.pending())
    aside = len(outbox.aside())
    leftovers = leftover_files(directory)
    print(
        "done delivered=%d sessions=%d failed=%d pending=%d aside=%d dropped=%d leftovers=%s"
        % (
            soak.sender.delivered,
            soak.sessions,
            soak.failed,
            pending,
            aside,
            outbox.dropped,
            ",".join(leftovers) or "-",
        )
    )
    if pending or aside or outbox.dropped or leftovers or soak.produced != count:
        sys.exit(1)


main()
