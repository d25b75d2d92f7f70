"""Send one message with microsmtp under MicroPython; run by ``microsmtp send``.

This script runs in the MicroPython unix port, not in CPython. Standard input carries
one job: a line of JSON::

    {"host": "...", "transcript": true,
     "options": {<keyword options of microsmtp.send(), ca_roots as base64 DER>},
     "message": {"sender", "to", "cc", "bcc", "subject", "text",
                 "attachments": [[filename, size in octets, content type], ...]}}

followed by the raw content of each attachment, in order. Raw octets after the JSON
line need one buffer per attachment, where base64 inside the JSON would need the JSON
text, the base64 string and the decoded copy at once.

Standard output gets one JSON object per line: {"transcript": line} for each line of
the SMTP dialogue when the job's "transcript" is true, then one result line, either
{"result": {"message_id", "accepted", "refused"}} or {"error": {"type", "message",
"stage", "transient", "config", "code", "unexpected", "phase"}}. The exit status is 0
(delivered), 75 (transient failure), 69 (permanent failure) or 78 (invalid
configuration or input, or out of memory).

Secrets arrive only on standard input, never in argv or the environment.
"""

import binascii
import gc
import json
import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

EX_OK = 0
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_CONFIG = 78


def emit(record):
    sys.stdout.write(json.dumps(record))
    sys.stdout.write("\n")


def log_line(line):
    emit({"transcript": line})


# The step under way, reported with a MemoryError so the caller can say where memory ran out.
phase = "starting"


def read_exactly(stream, size):
    """Read size octets from stream into a new bytearray; raise ValueError at an early end."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    while done < size:
        count = stream.readinto(view[done:])
        if not count:
            raise ValueError("standard input ended after %d of %d attachment octets" % (done, size))
        done += count
    return buffer


def read_job(stream):
    """Read the JSON line and the attachment octets; return the job with data in place of sizes."""
    job = json.loads(stream.readline())
    attachments = []
    for name, size, content_type in job["message"].get("attachments", ()):
        attachments.append((name, read_exactly(stream, size), content_type))
    job["message"]["attachments"] = attachments
    return job


def build_message(fields):
    from microsmtp.message import Attachment, Message

    attachments = []
    for name, data, content_type in fields["attachments"]:
        attachments.append(Attachment(name, data, content_type))
    return Message(
        fields["sender"],
        fields["to"],
        subject=fields.get("subject", ""),
        text=fields.get("text", ""),
        cc=fields.get("cc", ()),
        bcc=fields.get("bcc", ()),
        attachments=attachments,
    )


def error_record(exc, config, unexpected=False):
    return {
        "error": {
            "type": type(exc).__name__,
            "message": getattr(exc, "message", None) or str(exc),
            "stage": getattr(exc, "stage", None),
            "transient": bool(getattr(exc, "transient", False)),
            "config": config,
            "code": getattr(exc, "code", None),
            "unexpected": unexpected,
            "phase": phase,
        }
    }


def send(job):
    """Send the job's message; return the exit status after writing the result line."""
    global phase
    from microsmtp import client
    from microsmtp.errors import ConfigError, InvalidInputError, SMTPError

    options = job["options"]
    roots = []
    for root in options.get("ca_roots") or ():
        roots.append(binascii.a2b_base64(root))
    options["ca_roots"] = roots
    if job.get("transcript"):
        options["log"] = log_line
    try:
        phase = "building the message"
        message = build_message(job["message"])
        job["message"] = None
        # TLS needs large contiguous buffers, so the temporaries of building the
        # message are freed first.
        gc.collect()
        phase = "sending"
        result = asyncio.run(client.send(message, job["host"], **options))
    except SMTPError as exc:
        config = isinstance(exc, (ConfigError, InvalidInputError))
        emit(error_record(exc, config))
        if config:
            return EX_CONFIG
        return EX_TEMPFAIL if exc.transient else EX_UNAVAILABLE
    refused = {}
    for addr, reply in result.refused.items():
        refused[addr] = reply.describe()
    emit({"result": {"message_id": result.message_id, "accepted": list(result.accepted), "refused": refused}})
    return EX_OK


def main():
    global phase
    job = None
    try:
        # Compiling the library needs temporary memory, which is free again once the
        # imports are done. Importing before reading the job avoids holding both.
        phase = "importing the library"
        import microsmtp.client  # noqa: F401
        import microsmtp.message  # noqa: F401

        gc.collect()
        phase = "reading the job"
        job = read_job(sys.stdin.buffer)
        status = send(job)
    except MemoryError as exc:
        job = None
        gc.collect()
        # The caller also recognises "MemoryError" on standard error if this line fails.
        emit(error_record(exc, True))
        status = EX_CONFIG
    except Exception as exc:
        sys.print_exception(exc, sys.stderr)
        emit(error_record(exc, False, unexpected=True))
        status = EX_TEMPFAIL
    sys.exit(status)


main()
