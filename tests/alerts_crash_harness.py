"""Write alerts to an outbox and send them; run under MicroPython by tests/test_outbox_crash.py.

Usage: micropython alerts_crash_harness.py OUTBOX_DIR PREFIX COUNT PORT CA_DER_FILE [stall-after-dot]

Writes COUNT alerts named PREFIX-0, PREFIX-1, ... and prints "written NAME" after each
put() returns; after every second alert, and at the end, it sends what is pending
through the server on 127.0.0.1:PORT. The test kills this process at random moments.

With stall-after-dot, the process prints "stalled after the final dot and the 250"
and blocks as soon as the server's reply to a message's final dot has arrived, before
the client processes it, so the test can kill it at exactly that point.
"""

import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

import alerts.sender
from alerts.outbox import Outbox
from alerts.sender import Sender

directory, prefix, count, port, ca_path = sys.argv[1:6]
stall_after_dot = sys.argv[6:7] == ["stall-after-dot"]
count = int(count)
with open(ca_path, "rb") as file:
    roots = [file.read()]

config = {
    "device": "crash-board",
    "smtp": {
        "host": "127.0.0.1",
        "port": int(port),
        "security": "starttls",
        "user": "alice",
        "password": "secret",
        "oauth2_token": None,
        "server_name": "localhost",
        "timeout_s": 20,
        "transcript": stall_after_dot,
        "from": "board@example.com",
        "to": ["ops@example.org"],
    },
    "outbox": {"retry_min_s": 1, "retry_max_s": 2},
}


_last_line = [""]


def stall_on_final_reply(line):
    """Transcript hook: block for good once the reply to the final dot has been read."""
    import time

    if _last_line[0] == "--> ." and line.startswith("<-- "):
        print("stalled after the final dot and the 250: " + line)
        while True:
            time.sleep(1)
    _last_line[0] = line


if stall_after_dot:
    alerts.sender._transcript = stall_on_final_reply


async def main():
    outbox = Outbox(directory, max_entries=1000)
    outbox.recover()
    sender = Sender(config, outbox, roots)
    for index in range(count):
        name = "%s-%d" % (prefix, index)
        alert = {
            "kind": "alert",
            "rule": name,
            "sensor": "temp",
            "value": index,
            "unit": "C",
            "condition": "above",
            "threshold": 30,
            "time": 1767225600 + index,
            "readings": [[1767225600, index]],
        }
        outbox.put(alert, 1767225600)
        print("written " + name)
        if index % 2 == 1:
            await sender.run_session()
    while outbox.pending():
        delay = await sender.run_session()
        if delay:
            await asyncio.sleep(delay)
    print("done")


asyncio.run(main())
