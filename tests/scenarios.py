"""Client scenarios that run unchanged on CPython and on the MicroPython unix port.

pytest calls ``run(name, params)`` directly on CPython, and runs this file under
``micropython`` with the same JSON parameters on stdin. Each scenario returns a dict
of plain JSON values, so both runtimes can be checked with the same assertions.
Binary values travel as base64 text.

Usage under MicroPython: ``micropython tests/scenarios.py NAME < params.json``
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
        attachments=attachments,
        date=tuple(spec["date"]) if "date" in spec else None,
        message_id=spec.get("message_id"),
    )


def connection_options(params, log):
    options = {
        "port": params["port"],
        "security": params.get("security", "starttls"),
        "ca_roots": [unb64(der) for der in params.get("ca_roots", [])] or None,
        "server_hostname": params.get("server_hostname"),
        "timeout_ms": params.get("timeout_ms", 20000),
        "log": log,
    }
    for key in ("username", "password", "oauth2_token", "local_hostname"):
        if key in params:
            options[key] = params[key]
    return options


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
    return {"outcomes": outcomes, "transcript": transcript}


def run(name, params):
    scenario = SCENARIOS[name]
    return asyncio.run(scenario(params))


SCENARIOS = {"deliver": deliver}


def main():
    params = json.loads(sys.stdin.read())
    print(json.dumps(run(sys.argv[1], params)))


if __name__ == "__main__":
    main()
