"""CPython-only parts of the asyncio driver in ``client.py``.

MicroPython never imports this module, so a board does not load code it cannot run.
"""

import asyncio
import time

from .errors import SecurityError


def now_ms():
    return int(time.monotonic() * 1000)


def ticks_diff(end, start):
    """Return end - start in ms, like MicroPython's ``time.ticks_diff()``."""
    return end - start


def abort(writer):
    """Drop the connection of writer at once, also when a TLS close or handshake is unfinished."""
    # While start_tls() is unfinished this is the plain transport below TLS, which
    # abort() closes as well.
    writer.transport.abort()


def make_ssl_context(roots):
    """Create a verifying client SSLContext from DER roots, or from the system's roots."""
    # Imported here, so that a CPython built without ssl can still send over plaintext.
    import ssl

    if not roots:
        return ssl.create_default_context()
    from .errors import ConfigError

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for index, der in enumerate(roots):
        try:
            context.load_verify_locations(cadata=der)
        except ssl.SSLError as exc:
            raise ConfigError(
                "CA root %d of %d was rejected (%s); check ca_roots" % (index + 1, len(roots), exc), stage="connect"
            ) from None
    return context


def local_name_of(writer):
    """Return the EHLO name for a connection: its local address as a literal.

    RFC 5321 section 4.1.4: a client without a meaningful name sends its address as a
    literal. "localhost" is the fallback when the address is unknown.
    """
    if writer is not None:
        sockname = writer.get_extra_info("sockname")
        if sockname:
            address = sockname[0]
            return "[IPv6:%s]" % address if ":" in address else "[%s]" % address
    return "localhost"


def cancelling():
    """Return True when the current task was asked to cancel (Task.cancelling(), CPython 3.11+)."""
    task = asyncio.current_task()
    requests = getattr(task, "cancelling", None)
    return requests is not None and requests() > 0


def raise_if_cancelled(result=None):
    """Raise CancelledError if the task was asked to cancel, closing a stream pair in result first.

    CPython 3.11's wait_for() returns the result of an inner future that finished at
    the moment a cancellation arrived, and drops the cancellation. Task.cancelling()
    still shows the request, so it is honoured here. A connection that open_connection()
    made in that moment is not stored yet, so it is closed here.
    """
    if cancelling():
        if isinstance(result, tuple) and len(result) == 2 and hasattr(result[1], "transport"):
            result[1].transport.abort()
        raise asyncio.CancelledError()


async def start_tls(smtp):
    """Upgrade the connection of a client.SMTP with ``StreamWriter.start_tls()``."""
    try:
        await smtp._with_limit(
            smtp._writer.start_tls(smtp._context, server_hostname=smtp.server_hostname),
            smtp.connect_timeout_ms,
            "tls",
            "TLS handshake",
        )
    except (OSError, ValueError) as exc:
        await smtp.close()
        raise smtp._transport_error(exc, "tls") from None
    smtp._handshaking = False
    # Plaintext that arrived before the upgrade sits in the reader's buffer and would be
    # read as if it came through TLS (response injection). StreamReader has no public way
    # to ask, so the private buffer is checked.
    leftover = getattr(smtp._reader, "_buffer", b"")
    if leftover:
        await smtp.close()
        raise SecurityError(
            "the server sent %d plaintext octets after accepting STARTTLS; possible response injection" % len(leftover),
            stage="tls",
        )
