"""Client scenarios that run unchanged on CPython and on the MicroPython unix port.

pytest calls ``run(name, params)`` directly on CPython, and runs this file under
``micropython`` with the same JSON parameters on stdin. Each scenario returns a dict
of plain JSON values, so both runtimes can be checked with the same assertions.
Binary values travel as base64 text.

Usage under MicroPython: ``micropython tests/scenarios.py NAME < params.json``, or
``micropython tests/scenarios.py batch < cases.jsonl`` to run several scenarios in one
process: one {"scenario": NAME, "params": {...}} per input line, one result per output
line.
"""

import binascii
import json
import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from microsmtp import SMTP, Attachment, Message, send
from microsmtp.errors import SMTPError


def b64(data):
    return binascii.b2a_base64(data).decode().strip()


def unb64(text):
    return binascii.a2b_base64(text)


def error_outcome(exc):
    return {
        "ok": False,
        "error": type(exc).__name__,
        "message": str(exc),
        "stage": exc.stage,
        "code": exc.code,
        "enhanced": exc.enhanced,
        "transient": exc.transient,
    }


def result_outcome(result, message):
    return {
        "ok": True,
        "message_id": result.message_id,
        "accepted": sorted(result.accepted),
        "refused": dict((addr, reply.code) for addr, reply in result.refused.items()),
        "reply_code": result.reply.code,
        "content": b64(message.to_bytes()),
    }


def build_message(spec):
    attachments = []
    for item in spec.get("attachments", []):
        attachments.append(Attachment(item["filename"], unb64(item["data"]), item.get("content_type", "text/csv")))
    return Message(
        spec["sender"],
        spec["to"],
        spec.get("subject", ""),
        spec.get("text", ""),
        cc=spec.get("cc", ()),
        bcc=spec.get("bcc", ()),
        reply_to=spec.get("reply_to"),
        attachments=attachments,
        date=tuple(spec["date"]) if "date" in spec else None,
        message_id=spec.get("message_id"),
        headers=[tuple(pair) for pair in spec.get("headers", [])],
    )


def failing_log(log, prefix):
    """Return a log function that passes lines to log but raises at each one starting with prefix."""

    def failing(line):
        if line.startswith(prefix):
            raise ValueError("log sink failed")
        log(line)

    return failing


def connection_options(params, log):
    if "log_fails_at" in params:
        log = failing_log(log, params["log_fails_at"])
    options = {
        "port": params["port"],
        "security": params.get("security", "starttls"),
        "ca_roots": [unb64(der) for der in params.get("ca_roots", [])] or None,
        "server_hostname": params.get("server_hostname"),
        "timeout_ms": params.get("timeout_ms", 20000),
        "log": log,
    }
    for key in ("username", "password", "oauth2_token", "local_hostname", "reply_timeout_ms"):
        if key in params:
            options[key] = params[key]
    if "heap_left_after_wrap" in params:
        from microsmtp.client import make_ssl_context

        options["ssl_context"] = HeapTakingContext(
            make_ssl_context(options.pop("ca_roots")), params["heap_left_after_wrap"]
        )
    return options


class HeapTakingContext:
    """An SSL context whose wrap_socket() also takes GC heap until ``left`` bytes are free.

    On the Pico W mbedTLS allocates its record buffers from the GC heap when the socket
    is wrapped. The unix port's mbedTLS does not, so this context imitates it. It runs on
    MicroPython only, because it measures the heap with gc.mem_free().
    """

    def __init__(self, context, left):
        self._context = context
        self._left = left
        self.ballast = None

    def wrap_socket(self, sock, **options):
        import gc

        wrapped = self._context.wrap_socket(sock, **options)
        # In blocks, smaller ones once the large holes are used up, chained in pairs
        # because a growing list would need ever larger holes itself.
        block = 4096
        gc.collect()
        # Half of what is left stays in one piece, as next to mbedTLS's large buffers, so
        # that the layout of the holes does not decide whether the next small block fits.
        reserve = bytearray(self._left // 2)
        left = self._left - len(reserve)
        while gc.mem_free() > left and block >= 16:
            try:
                self.ballast = (bytearray(min(block, gc.mem_free() - left)), self.ballast)
            except MemoryError:
                gc.collect()
                block //= 2
        reserve = None
        gc.collect()
        return wrapped


async def deliver(params):
    """Send each message in params["messages"]; one connection unless "separate"."""
    transcript = []
    options = connection_options(params, transcript.append)
    outcomes = []
    messages = [build_message(spec) for spec in params["messages"]]
    if params.get("separate") or len(messages) == 1:
        for message in messages:
            try:
                result = await send(message, params["host"], **options)
                outcomes.append(result_outcome(result, message))
            except SMTPError as exc:
                outcomes.append(error_outcome(exc))
    else:
        smtp = SMTP(params["host"], **options)
        try:
            await smtp.connect()
            for message in messages:
                try:
                    result = await smtp.send_message(message)
                    outcomes.append(result_outcome(result, message))
                except SMTPError as exc:
                    outcomes.append(error_outcome(exc))
            await smtp.quit()
        except SMTPError as exc:
            outcomes.append(error_outcome(exc))
            await smtp.close()
    context = options.get("ssl_context")
    if context is not None:
        # A board's mbedTLS frees its buffers with the connection, so the stand-in frees
        # its ballast too, which leaves heap to print the result.
        context.ballast = None
    return {"outcomes": outcomes, "transcript": transcript}


class RecordingWriter:
    """A stream writer that records each write() before passing it on."""

    def __init__(self, stream, writes):
        self._stream = stream
        self._writes = writes

    def write(self, data):
        self._writes.append(bytes(data).decode())
        self._stream.write(data)

    def __getattr__(self, name):
        return getattr(self._stream, name)


async def recorded_writes(params):
    """Run "deliver" with every write() of the client recorded, in params["writes"] order.

    Plaintext only: on MicroPython the TLS upgrade replaces the stream's socket, which
    the recording writer would hide.
    """
    import microsmtp.client

    writes = []
    opener = microsmtp.client.open_stream

    async def open_recorded(*args, **kwargs):
        reader, writer = await opener(*args, **kwargs)
        return reader, RecordingWriter(writer, writes)

    microsmtp.client.open_stream = open_recorded
    try:
        result = await deliver(params)
    finally:
        microsmtp.client.open_stream = opener
    result["writes"] = writes
    return result


def raw_outcome(result):
    return {
        "ok": True,
        "accepted": sorted(result.accepted),
        "refused": dict((addr, reply.code) for addr, reply in result.refused.items()),
        "reply_code": result.reply.code,
    }


async def send_raw(params):
    """Send params["content"] (base64, split at params["chunk_size"]) with SMTP.send_raw()."""
    transcript = []
    options = connection_options(params, transcript.append)
    content = unb64(params["content"])
    chunk_size = params.get("chunk_size") or len(content) or 1
    chunks = [content[start : start + chunk_size] for start in range(0, len(content), chunk_size)]
    smtp = SMTP(params["host"], **options)
    try:
        await smtp.connect()
        result = await smtp.send_raw(params["sender"], params["recipients"], chunks, params.get("size"))
        outcome = raw_outcome(result)
        await smtp.quit()
    except SMTPError as exc:
        outcome = error_outcome(exc)
        await smtp.close()
    return {"outcomes": [outcome], "transcript": transcript}


async def retry(params):
    """Send one Message object twice with send(): a failed attempt, then a retry.

    The retry connects to params["retry_port"] (default: the same port).
    """
    transcript = []
    message = build_message(params["messages"][0])
    outcomes = []
    for port in (params["port"], params.get("retry_port", params["port"])):
        options = connection_options(params, transcript.append)
        options["port"] = port
        try:
            result = await send(message, params["host"], **options)
            outcomes.append(result_outcome(result, message))
        except SMTPError as exc:
            outcome = error_outcome(exc)
            outcome["message_id"] = message.message_id
            outcomes.append(outcome)
    return {"outcomes": outcomes, "transcript": transcript}


async def check_input(params):
    """Build a Message from params["messages"][0] and send it, or report the error.

    Reports InvalidInputError raised while building (stage None) the same way as
    errors raised while sending, so the caller sees where the input was rejected.
    """
    transcript = []
    try:
        message = build_message(params["messages"][0])
    except SMTPError as exc:
        outcome = error_outcome(exc)
        outcome["built"] = False
        return {"outcomes": [outcome], "transcript": transcript}
    try:
        result = await send(message, params["host"], **connection_options(params, transcript.append))
        outcome = result_outcome(result, message)
    except SMTPError as exc:
        outcome = error_outcome(exc)
    outcome["built"] = True
    return {"outcomes": [outcome], "transcript": transcript}


class ShortOfMemory:
    """A Message whose encoding raises MemoryError on pass number ``failing_pass``.

    The client reads a message once to measure it for SIZE (when the server offers
    it) and once to send it. The MemoryError comes after ``after`` pieces, as when the
    heap runs out while the body is encoded. ``passes`` counts the passes begun.
    """

    def __init__(self, message, failing_pass, after=1):
        self._message = message
        self._failing_pass = failing_pass
        self._after = after
        self.passes = 0
        self.sender_address = message.sender_address
        self.recipients = message.recipients
        self.message_id = message.message_id
        self.needs_smtputf8 = message.needs_smtputf8

    def chunks(self):
        self.passes += 1
        pieces = 0
        for chunk in self._message.chunks():
            if pieces >= self._after and self.passes == self._failing_pass:
                raise MemoryError("memory allocation failed, allocating 4096 bytes")
            pieces += 1
            yield chunk


async def memory_short(params):
    """Send params["messages"], one of them running out of memory, with send() or send_messages().

    params["short"] is [index of that message, failing pass (see ShortOfMemory)];
    params["api"] is "send" (one connection per message) or "send_messages" (one for all).
    Any exception other than an SMTPError is reported as "escaped".
    """
    transcript = []
    options = connection_options(params, transcript.append)
    index, failing_pass = params["short"]
    messages = [build_message(spec) for spec in params["messages"]]
    messages[index] = ShortOfMemory(messages[index], failing_pass)
    outcomes = []
    escaped = None
    try:
        if params["api"] == "send":
            for message in messages:
                try:
                    await send(message, params["host"], **options)
                    outcomes.append({"ok": True})
                except SMTPError as exc:
                    outcomes.append(error_outcome(exc))
        else:
            smtp = SMTP(params["host"], **options)
            await smtp.connect()
            for transaction in await smtp.send_messages(messages):
                outcomes.append({"ok": True} if transaction.error is None else error_outcome(transaction.error))
            await smtp.quit()
    except Exception as exc:  # noqa: BLE001 - reported, checked by the caller
        escaped = "%s: %s" % (type(exc).__name__, exc)
    return {"outcomes": outcomes, "escaped": escaped, "transcript": transcript}


def transaction_outcome(transaction):
    """Return a Transaction's outcome, also for one that failed, with its recipients."""
    outcome = {
        "ok": transaction.ok,
        "accepted": sorted(transaction.accepted),
        "rcpt_accepted": sorted(transaction.rcpt_accepted),
        "refused": dict((addr, reply.code) for addr, reply in transaction.refused.items()),
    }
    if transaction.error is not None:
        outcome.update(error_outcome(transaction.error))
    return outcome


async def outcomes(params):
    """Send params["messages"] over one connection with params["api"]: "send", "send_message" or "send_messages".

    Each outcome describes the Transaction returned, or the error raised ("send" and
    "send_message" raise the error of a message that failed).
    """
    transcript = []
    options = connection_options(params, transcript.append)
    messages = [build_message(spec) for spec in params["messages"]]
    results = []
    if params["api"] == "send":
        for message in messages:
            try:
                results.append(transaction_outcome(await send(message, params["host"], **options)))
            except SMTPError as exc:
                results.append(error_outcome(exc))
        return {"outcomes": results, "transcript": transcript}
    smtp = SMTP(params["host"], **options)
    await smtp.connect()
    if params["api"] == "send_messages":
        results = [transaction_outcome(transaction) for transaction in await smtp.send_messages(messages)]
    else:
        for message in messages:
            try:
                results.append(transaction_outcome(await smtp.send_message(message)))
            except SMTPError as exc:
                results.append(error_outcome(exc))
    await smtp.quit()
    return {"outcomes": results, "transcript": transcript}


def run(name, params):
    scenario = SCENARIOS[name]
    return asyncio.run(scenario(params))


def run_case(case):
    """Run one {"scenario": NAME, "params": {...}} case of a batch; return its result.

    An exception that is not an SMTPError becomes {"crash": text}, so one broken case
    does not hide the results of the others.
    """
    try:
        return run(case["scenario"], case["params"])
    except Exception as exc:  # noqa: BLE001 - reported per case, checked by the caller
        return {"crash": "%s: %s" % (type(exc).__name__, exc)}


def run_batch(cases):
    """Run several cases one after the other in this process; return their results."""
    return [run_case(case) for case in cases]


SCENARIOS = {
    "deliver": deliver,
    "send_raw": send_raw,
    "retry": retry,
    "check_input": check_input,
    "recorded_writes": recorded_writes,
    "memory_short": memory_short,
    "outcomes": outcomes,
}


def main():
    if sys.argv[1] == "batch":
        # One case per input line and one result per output line, so that a board-sized
        # heap never holds the whole batch.
        import gc

        while True:
            line = sys.stdin.readline()
            if not line.strip():
                break
            print(json.dumps(run_case(json.loads(line))))
            line = None
            gc.collect()
        return
    params = json.loads(sys.stdin.read())
    print(json.dumps(run(sys.argv[1], params)))


if __name__ == "__main__":
    main()
