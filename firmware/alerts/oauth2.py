"""OAuth2 access tokens for XOAUTH2, from the refresh-token grant (RFC 6749 section 6).

The sender imports this module only when config.json has smtp.oauth2, and unloads it
before the SMTP session opens. What must outlive it is kept in plain values: the cache
dict in smtp.oauth2 (the access token, when it was fetched, how long it lives and the
refresh token in use) and, on flash, the newest refresh token (``STATE_PATH``).

One token request is a POST over HTTPS with asyncio streams, verified with the same
CA roots as the SMTP server: certificate and host name are always checked. Every step
(connect, send, each read) is bounded by what is left of ``timeout_s``, and the reply
by ``MAX_REPLY`` bytes. Tokens, secrets and the request body are never logged.
"""

import gc

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from microsmtp.errors import SMTPError

from . import clock, log

# File with the newest refresh token, next to config.json.
STATE_PATH = "oauth2_token.json"
# Size limit of a reply (status line, headers and body). A larger one is rejected.
MAX_REPLY = 16384
# An access token with less than this many seconds left is refreshed first.
MARGIN_S = 300
# Maximum seconds an access token is used after its issue, whatever expires_in or the
# file contains. Providers give an hour, and a damaged file must not keep a token in use
# indefinitely. A ticks_ms() difference on MicroPython also covers only about 6 days.
MAX_LIFE_S = 86400
_READ_SIZE = 512
# Error codes (RFC 6749 section 5.2) of a rejected refresh token or client, which only a
# new authorization fixes.
_REAUTHORIZE = ("invalid_grant", "invalid_client", "unauthorized_client")
_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
# Characters of a host name or IPv4 address, and of an IPv6 address in a URL.
_HOST_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._"
_IPV6_CHARS = "0123456789ABCDEFabcdef:."
_HEX_DIGITS = "0123456789ABCDEFabcdef"


class TokenError(SMTPError):
    """No access token could be obtained; ``stage`` is "token", ``status`` the HTTP status or None.

    ``transient`` is True for network failures, timeouts, HTTP 5xx and 429 and malformed
    replies, and False when the board's settings must change (a rejected refresh token,
    an untrusted certificate).
    """

    def __init__(self, message, transient, status=None):
        super().__init__(message, stage="token")
        self.transient = transient
        self.status = status


# -- the access token and its cache ------------------------------------------------------


def cached_token(settings):
    """Return the cached access token if more than MARGIN_S seconds of its life are left, else None."""
    cache = settings.get("cache")
    if not cache or not cache.get("token"):
        return None
    age_ms = clock.ticks_diff(clock.ticks_ms(), cache["ticks"])
    # A negative age means the tick counter wrapped around: the token is too old to trust.
    if age_ms < 0 or age_ms >= (cache["life"] - MARGIN_S) * 1000:
        return None
    return cache["token"]


def forget(settings):
    """Drop the cached access token, so that the next round requests a new one."""
    cache = settings.get("cache")
    if cache:
        cache["token"] = None


async def access_token(settings, ca_roots, timeout_s, state_path=STATE_PATH, keep=False):
    """Return (token, fetched): the cached access token, or a new one from the token endpoint.

    ``settings`` is config.json's smtp.oauth2; its "cache" entry is created here and
    keeps the token between delivery rounds. ``keep`` (deep-sleep mode, where RAM is
    lost at every wake) also keeps the access token in ``state_path`` for the next wake.
    Raises TokenError.
    """
    # A save failed before, or the sender dropped a token that is on flash.
    save_pending(settings, state_path)
    cache = settings.get("cache")
    token = cached_token(settings)
    if token is not None:
        return token, False
    if cache is None:
        # expires and issued: clock seconds of a token kept on flash, else None. unsaved:
        # 0 when the file is up to date, 1 when it must be written, 2 after a failed write.
        cache = {"token": None, "ticks": 0, "life": 0, "refresh": None, "expires": None, "issued": None, "unsaved": 0}
        settings["cache"] = cache
    if cache["refresh"] is None:
        _load_state(settings, cache, state_path, keep)
        token = cached_token(settings)
        if token is not None:
            return token, False
    started = clock.ticks_ms()
    issued = clock.now()
    reply = await request_token(settings, cache["refresh"], ca_roots, timeout_s)
    token, life, refresh = token_from_reply(reply, host_of(settings["token_url"]), _secrets(settings, cache["refresh"]))
    reply = None
    cache["token"] = token
    cache["ticks"] = started
    cache["life"] = life
    log.info("OAuth2: new access token from %s, valid for %d s" % (host_of(settings["token_url"]), life))
    save = keep and clock.is_accurate() and life > MARGIN_S
    # A token that the next wake could not reuse is not written. A token already in the
    # file was not usable either, which is why this one was requested.
    cache["expires"] = issued + life if save else None
    cache["issued"] = issued
    if refresh is not None and refresh != cache["refresh"]:
        cache["refresh"] = refresh
        _save_state(settings, cache, state_path, "the endpoint sent a new refresh token")
    elif save:
        _save_state(settings, cache, state_path, "the access token is kept for the next wake")
    else:
        # The file may still contain the access token of deep-sleep mode (see _load_state()).
        save_pending(settings, state_path)
    return token, True


def save_pending(settings, state_path=STATE_PATH):
    """Write the state file now if the cache marks it as out of date (see access_token())."""
    cache = settings.get("cache")
    if cache and cache.get("unsaved"):
        _save_state(settings, cache, state_path)


def token_from_reply(reply, host, hidden=()):
    """Check a parsed 200 reply; return (access token, seconds it may be cached, new refresh token or None).

    ``hidden`` (the secrets sent) never appear in an error message, even when the reply repeats them.
    """
    if not isinstance(reply, dict):
        raise TokenError("the token endpoint %s sent JSON that is not an object; retry later" % host, True, 200)
    token = reply.get("access_token")
    if not _is_token(token):
        raise TokenError(
            "the token endpoint %s sent a reply without a valid access_token; retry later" % host, True, 200
        )
    kind = reply.get("token_type")
    if kind is not None and (not isinstance(kind, str) or kind.lower() != "bearer"):
        raise TokenError(
            "the token endpoint %s issued a %s token, but XOAUTH2 needs a Bearer token; check smtp.oauth2.token_url"
            % (host, _printable(str(kind), hidden=hidden)),
            False,
            200,
        )
    life = reply.get("expires_in")
    if isinstance(life, str) and life.isdigit():
        # Accept the number sent as a string too.
        life = int(life)
    if not isinstance(life, int) or isinstance(life, bool) or life < 0:
        # Without a known lifetime the token serves this round only.
        life = 0
    if life > MAX_LIFE_S:
        log.info("OAuth2: expires_in %d s capped at %d s" % (life, MAX_LIFE_S))
        life = MAX_LIFE_S
    refresh = reply.get("refresh_token")
    if refresh is not None and not _is_token(refresh):
        raise TokenError("the token endpoint %s sent an invalid refresh_token; retry later" % host, True, 200)
    return token, life, refresh


def _is_token(value):
    if not isinstance(value, str) or not value:
        return False
    for char in value:
        if not " " < char <= "~":
            return False
    return True


def _fingerprint(text):
    """Return a short SHA-256 hex digest of text, to recognise a refresh token without storing it."""
    import binascii
    import hashlib

    return binascii.hexlify(hashlib.sha256(text.encode()).digest()).decode()[:32]


def _request_print(settings):
    """Return the fingerprint of the settings an access token was issued for: client, endpoint and scope.

    client_secret is left out: a new secret for the same client leaves its tokens valid.
    """
    return _fingerprint("%s\n%s\n%s" % (settings["client_id"], settings["token_url"], settings.get("scope") or ""))


def _load_state(settings, cache, path, keep):
    """Set the refresh token in use from flash and, when ``keep``, the saved access token if it may be reused.

    Only a state saved for config.json's refresh token counts: after the user authorized
    the board again, config.json contains the newer token. A complete path.tmp is newer than
    path: a reset interrupted the save before or during the rename (on FAT, path is
    removed first). A partial one is not valid JSON.

    A saved access token is reused only for the client_id, token_url and scope it was
    issued for. A change of these still uses the rotated refresh token, because the
    endpoint may have revoked config.json's one when it sent the rotated one. Without
    ``keep`` (deep-sleep mode switched off) a saved access token is removed at the next save.
    """
    configured = settings["refresh_token"]
    fingerprint = _fingerprint(configured)
    saved = None
    # Whether the file in use contains an access token: the matching one, or else any
    # (saved for an older authorization).
    on_flash = False
    for name in (path + ".tmp", path):
        saved = _read_state(name)
        if isinstance(saved, dict):
            if saved.get("configured") == fingerprint:
                on_flash = saved.get("access_token") is not None
                break
            on_flash = on_flash or saved.get("access_token") is not None
        saved = None
    if on_flash and not keep:
        # The save at this token use, or the next one, writes the file without it.
        cache["unsaved"] = cache["unsaved"] or 1
        log.info("OAuth2: deep-sleep mode is off; the access token is removed from %s" % path)
    # No saved token, or config.json contains a newer authorization than the saved one.
    cache["refresh"] = configured
    if saved is None:
        return
    if _is_token(saved.get("refresh_token")):
        cache["refresh"] = saved["refresh_token"]
    if not keep:
        return
    token = saved.get("access_token")
    expires = saved.get("expires")
    issued = saved.get("issued")
    if not _is_token(token) or not isinstance(expires, int) or not isinstance(issued, int):
        return
    if saved.get("request") != _request_print(settings):
        # Issued for another client_id, token_url or scope.
        return
    if isinstance(issued, bool) or expires - issued > MAX_LIFE_S:
        # Damaged: no token lives that long.
        return
    now = clock.now()
    # An unset or estimated clock (before NTP) cannot tell how old the token is.
    if not clock.is_accurate():
        return
    if issued > now:
        log.warning("OAuth2: the access token in %s was issued after the current time; the clock moved back" % path)
    elif expires - now > MARGIN_S:
        cache["token"] = token
        cache["ticks"] = clock.ticks_ms()
        cache["life"] = expires - now
        cache["expires"] = expires
        cache["issued"] = issued
        log.info("OAuth2: access token from %s, valid for %d s more" % (path, expires - now))


def _read_state(path):
    """Return the parsed JSON in path, or None when it is missing, damaged or larger than any token file."""
    try:
        with open(path, "rb") as file:
            return _parse_json(file.read(MAX_REPLY))
    except OSError:
        return None


def _parse_json(data):
    """Return the parsed JSON in the bytes data, or None when it is not JSON.

    Any failure but MemoryError counts: deep nesting raises RecursionError on CPython and
    RuntimeError on MicroPython, and bytes that are not UTF-8 raise UnicodeError.
    """
    from .outbox import parse_json

    try:
        return parse_json(data.decode())
    except MemoryError:
        raise
    except Exception:
        return None


def _save_state(settings, cache, path, done=None):
    """Write the refresh token in use and a kept access token to path, or mark the cache to try again.

    ``done`` names what is saved, for the log line, and is None for a retry.
    Only a fingerprint of config.json's refresh token is stored, and the token in use only
    when it is a newer one, so that no secret is stored twice.
    """
    if not cache.get("unsaved"):
        # Until the write succeeds: a MemoryError leaves this function as well.
        cache["unsaved"] = 1
    from .outbox import write_atomic

    configured = settings["refresh_token"]
    state = {"configured": _fingerprint(configured)}
    if cache["refresh"] != configured:
        state["refresh_token"] = cache["refresh"]
    if cache["token"] and cache.get("expires"):
        state["access_token"] = cache["token"]
        state["expires"] = cache["expires"]
        state["issued"] = cache["issued"]
        state["request"] = _request_print(settings)
    try:
        write_atomic(path, state)
    except OSError as exc:
        if cache.get("unsaved") != 2:
            log.error(
                "OAuth2: %s could not be written (%s); it is tried again at each token use, and a reset before"
                " then loses %s"
                % (
                    path,
                    exc,
                    "the new refresh token, which the endpoint may require"
                    if "refresh_token" in state
                    else "the access token"
                    if "access_token" in state
                    else "the removal of the access token",
                )
            )
        cache["unsaved"] = 2
        return
    if cache.get("unsaved") == 2:
        log.info("OAuth2: %s written at last" % path)
    elif done:
        log.info("OAuth2: %s; saved to %s" % (done, path))
    cache["unsaved"] = 0


# -- the HTTPS request -------------------------------------------------------------------


def split_url(url):
    """Return (host, port, path) of an https URL; raise TokenError for anything else.

    The host is a name or an IPv4 address, or an IPv6 address in brackets (returned
    without them). The path keeps its query; a fragment is dropped. alerts.config
    accepts the same URLs (its own copy, because host tools load it alone).
    """
    if not _is_token(url) or not url.startswith("https://"):
        raise TokenError("smtp.oauth2.token_url must be an https URL without spaces", False)
    rest = url[8:].split("#")[0]
    end = len(rest)
    for mark in "/?":
        index = rest.find(mark)
        if 0 <= index < end:
            end = index
    authority, path = rest[:end], rest[end:]
    if not path.startswith("/"):
        path = "/" + path
    if authority.startswith("["):
        host, bracket, port_text = authority[1:].partition("]")
        allowed = _IPV6_CHARS if bracket and ":" in host else ""
        if port_text:
            if port_text[0] != ":":
                host = ""
            port_text = port_text[1:]
        else:
            port_text = "443"
    else:
        host, colon, port_text = authority.partition(":")
        allowed = _HOST_CHARS
        if not colon:
            port_text = "443"
    port = int(port_text) if port_text.isdigit() else 0
    if not host or [char for char in host if char not in allowed] or not 0 < port < 65536:
        raise TokenError("smtp.oauth2.token_url is not a valid https URL", False)
    return host, port, path


def host_of(url):
    return split_url(url)[0]


def quote(text):
    """Percent-encode text (UTF-8) for an application/x-www-form-urlencoded body."""
    out = []
    for byte in text.encode():
        if byte in _UNRESERVED:
            out.append(chr(byte))
        else:
            out.append("%%%02X" % byte)
    return "".join(out)


def form_body(settings, refresh_token):
    """Return the request body of the refresh-token grant as bytes."""
    fields = [("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", settings["client_id"])]
    for key in ("client_secret", "scope"):
        if settings.get(key):
            fields.append((key, settings[key]))
    return "&".join([quote(key) + "=" + quote(value) for key, value in fields]).encode()


def build_request(host, port, path, body):
    """Return the bytes of the POST request carrying body."""
    if ":" in host:
        # An IPv6 address keeps its brackets in the Host field.
        host = "[%s]" % host
    if port != 443:
        host = "%s:%d" % (host, port)
    head = (
        "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        "Content-Length: %d\r\nAccept: application/json\r\nConnection: close\r\n\r\n" % (path, host, len(body))
    )
    return head.encode() + body


async def request_token(settings, refresh_token, ca_roots, timeout_s):
    """POST the refresh-token grant to smtp.oauth2.token_url; return the parsed JSON of a 200 reply."""
    host, port, path = split_url(settings["token_url"])
    request = build_request(host, port, path, form_body(settings, refresh_token))
    raw = await exchange(host, port, request, ca_roots, timeout_s)
    request = None
    hidden = _secrets(settings, refresh_token)
    status, body = parse_response(raw, host, hidden)
    raw = None
    return reply_json(status, body, host, hidden)


def _secrets(settings, refresh_token):
    """Return the secrets a request sends, for _printable() to hide in text that a reply chose."""
    return [value for value in (refresh_token, settings.get("client_secret")) if value]


async def exchange(host, port, request, ca_roots, timeout_s):
    """Send request over TLS to host:port and return the raw reply, complete or up to MAX_REPLY bytes.

    The connection is closed and its TLS buffers freed before this returns.
    """
    from microsmtp.client import cert_check_lacked_heap, clock_is_set, lacks_memory, make_ssl_context, open_stream
    from microsmtp.errors import ConfigError

    if not clock_is_set():
        raise TokenError(
            "clock not set: the certificate of the token endpoint %s cannot be checked; set the time (NTP) first"
            % host,
            True,
        )
    try:
        context = make_ssl_context(ca_roots)
    except ConfigError as exc:
        raise TokenError("%s (token endpoint %s)" % (exc, host), False) from None
    # NOTE: on MicroPython the DNS lookup inside open_stream() blocks, and no
    # timeout interrupts it (as for the SMTP server).
    deadline = _Deadline(timeout_s, host)
    # mbedTLS needs large contiguous blocks for its buffers.
    gc.collect()
    step = "connecting"
    writer = None
    received = False
    # On MicroPython open_stream() wraps the socket, and the handshake runs at the first
    # write or read. A drop in free heap across it shows that mbedTLS uses the GC heap.
    heap = gc.mem_free() if hasattr(gc, "mem_free") else None
    try:
        reader, writer = await deadline.limit(open_stream(host, port, context, host), step)
        context = None
        if heap is not None:
            gc.collect()
            heap = (heap, gc.mem_free())
        step = "sending the request"
        writer.write(request)
        await deadline.limit(writer.drain(), step)
        step = "reading the reply"
        data = b""
        while True:
            chunk = await deadline.limit(reader.read(_READ_SIZE), step)
            if not chunk:
                break
            received = True
            data += chunk
            if len(data) > MAX_REPLY:
                raise TokenError(
                    "the reply of the token endpoint %s is larger than %d bytes; retry later" % (host, MAX_REPLY), True
                )
            if reply_complete(data):
                break
        if not data:
            raise TokenError(
                "the token endpoint %s:%d closed the connection without a reply; retry later" % (host, port), True
            )
        return data
    except ValueError as exc:
        # A failed certificate check is a ValueError on both runtimes (CPython's
        # SSLCertVerificationError included), raised during the handshake.
        if received:
            raise TokenError(
                "the token endpoint %s sent a malformed reply (%s); retry later" % (host, _detail(exc)), True
            ) from None
        if isinstance(heap, tuple) and cert_check_lacked_heap(exc, *heap):
            # mbedTLS reports a failed allocation during the signature check as an
            # untrusted certificate. A wrong CA on a board this short of heap is retried
            # too, so the message names both causes.
            raise MemoryError(
                "the token request ran out of memory (%s; %d bytes were left for the certificate check, or"
                " ca_roots lack the root of %s)" % (_detail(exc), heap[1], host)
            ) from None
        raise TokenError(
            "TLS certificate verification failed for the token endpoint %s (%s); check that ca_roots"
            " (smtp.ca_file or ca_roots.py) contain its CA root and that token_url names the host in its"
            " certificate" % (host, _detail(exc)),
            False,
        ) from None
    except OSError as exc:
        if lacks_memory(exc):
            # The sender keeps the alerts and starts the next round from a collected heap.
            raise MemoryError("the token request ran out of memory (%s)" % _detail(exc)) from None
        raise TokenError(
            "connection to the token endpoint %s:%d failed while %s (%s); retry later"
            % (host, port, step, _detail(exc)),
            True,
        ) from None
    finally:
        if writer is not None:
            await _close(writer, deadline)
        writer = reader = None
        gc.collect()


class _Deadline:
    """Time budget of the whole request (timeout_s), which bounds every step."""

    def __init__(self, timeout_s, host):
        self.total_ms = int(timeout_s * 1000)
        self.start = clock.ticks_ms()
        self.host = host

    def left_ms(self):
        return self.total_ms - clock.ticks_diff(clock.ticks_ms(), self.start)

    async def limit(self, awaitable, step):
        left = self.left_ms()
        if left <= 0:
            if hasattr(awaitable, "close"):
                awaitable.close()
            raise TokenError(self._message(step), True)
        try:
            return await asyncio.wait_for(awaitable, left / 1000)
        except asyncio.TimeoutError:
            raise TokenError(self._message(step), True) from None

    def _message(self, step):
        return "the token endpoint %s timed out after %d s (while %s); retry later" % (
            self.host,
            self.total_ms // 1000,
            step,
        )


async def _close(writer, deadline):
    """Close the connection, and abort it when the peer's close takes 2 s or outlasts the deadline.

    CPython waits for the peer's TLS close. After a timeout nothing is left of the budget,
    so the connection is aborted at once.
    """
    try:
        writer.close()
        left = min(deadline.left_ms(), 2000)
        if left > 0:
            await asyncio.wait_for(writer.wait_closed(), left / 1000)
            return
    except Exception:
        pass
    transport = getattr(writer, "transport", None)
    if transport is not None:
        transport.abort()
        return
    # MicroPython: wait_closed() closes the socket at once, without waiting for the peer.
    try:
        await writer.wait_closed()
    except Exception:
        pass


def _detail(exc):
    return "%s: %s" % (type(exc).__name__, " ".join(str(exc).split()))


def _printable(text, limit=120, hidden=()):
    """Return text with only printable ASCII, cut to limit characters, for a log line.

    Each secret in hidden, as sent or form-encoded, is replaced first, so that no part of it
    remains even when a reply repeats it.
    """
    for secret in hidden:
        for form in (secret, quote(secret)):
            text = text.replace(form, "[hidden]")
    out = "".join([char if " " <= char <= "~" else "?" for char in text[:limit]])
    return out + ("..." if len(text) > limit else "")


# -- parsing the reply -------------------------------------------------------------------


def _split_head(data):
    """Return (status line, {lower-case name: value}, body) or None while the head is incomplete."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = _decode(data[:end]).split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError("malformed header line")
        name = name.lower()
        value = value.strip()
        if name in headers:
            value = headers[name] + ", " + value
        headers[name] = value
    return lines[0], headers, data[end + 4 :]


def _decode(data):
    # Header bytes outside ASCII become "?", because the names and values used here are ASCII.
    return "".join([chr(byte) if byte < 128 else "?" for byte in data])


def reply_complete(data):
    """Return True once data contains a whole reply, by Content-Length or chunked coding."""
    try:
        head = _split_head(data)
    except ValueError:
        return True
    if head is None:
        return False
    headers, body = head[1], head[2]
    if "chunked" in headers.get("transfer-encoding", "").lower():
        try:
            return dechunk(body) is not None
        except ValueError:
            return True
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        return len(body) >= int(length)
    return False


def dechunk(body):
    """Decode a chunked body (RFC 9112 section 7.1); None while incomplete, ValueError when malformed."""
    out = b""
    index = 0
    while True:
        end = body.find(b"\r\n", index)
        if end < 0:
            return None
        size_text = _decode(body[index:end]).split(";")[0].strip()
        # Hex digits only: int() would also take a sign, "0x" or "_", and a negative
        # size would move back in the body and parse the same lines forever.
        if not size_text or len(size_text) > 8 or [char for char in size_text if char not in _HEX_DIGITS]:
            raise ValueError("bad chunk size")
        size = int(size_text, 16)
        index = end + 2
        if size == 0:
            # Trailer fields (ignored) end with an empty line.
            while True:
                end = body.find(b"\r\n", index)
                if end < 0:
                    return None
                if end == index:
                    return out
                index = end + 2
        if len(body) < index + size + 2:
            return None
        if body[index + size : index + size + 2] != b"\r\n":
            raise ValueError("chunk not followed by CRLF")
        out += body[index : index + size]
        index += size + 2


def parse_response(data, host, hidden=()):
    """Return (status, body bytes) of a complete raw HTTP reply; raise TokenError when malformed.

    ``hidden`` (the secrets sent) never appear in an error message, even when the reply repeats them.
    """
    try:
        head = _split_head(data)
        if head is None:
            raise ValueError("the reply ends inside its headers")
        status_line, headers, body = head
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
            raise ValueError("bad status line %s" % _printable(status_line, 40, hidden))
        status = int(parts[1])
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if coding.lower() != "chunked":
                raise ValueError("unsupported transfer coding %s" % _printable(coding, 40, hidden))
            body = dechunk(body)
            if body is None:
                raise ValueError("the chunked body ends early")
        else:
            length = headers.get("content-length")
            if length is not None:
                if not length.isdigit():
                    raise ValueError("bad Content-Length")
                if len(body) < int(length):
                    raise ValueError("the body ends after %d of %s bytes" % (len(body), length))
                body = body[: int(length)]
    except ValueError as exc:
        raise TokenError(
            "the token endpoint %s sent a malformed HTTP reply (%s); retry later" % (host, exc), True
        ) from None
    return status, body


def reply_json(status, body, host, hidden=()):
    """Return the JSON object of a 200 reply; raise TokenError for any other status or a body that is not JSON.

    ``hidden`` (the secrets sent) never appear in an error message, even when the reply repeats them.
    """
    reply = _parse_json(body)
    if 200 <= status < 300:
        if reply is None:
            raise TokenError("the token endpoint %s sent a reply that is not JSON; retry later" % host, True, status)
        return reply
    error = reply.get("error") if isinstance(reply, dict) else None
    description = reply.get("error_description") if isinstance(reply, dict) else None
    detail = "HTTP %d" % status
    if isinstance(error, str):
        detail += " " + _printable(error, 40, hidden)
    if isinstance(description, str) and description:
        detail += ": " + _printable(description.split("\n")[0].strip(), hidden=hidden)
    if status >= 500 or status in (408, 429):
        raise TokenError("the token endpoint %s is unavailable (%s); retry later" % (host, detail), True, status)
    if status in (400, 401) and error in _REAUTHORIZE:
        raise TokenError(
            "the token endpoint %s rejected the refresh token or client (%s); authorize the board again and put"
            " the new refresh token in config.json (smtp.oauth2.refresh_token)" % (host, detail),
            False,
            status,
        )
    if 400 <= status < 500:
        raise TokenError(
            "the token endpoint %s rejected the request (%s); check smtp.oauth2 in config.json (token_url,"
            " client_id, client_secret, scope)" % (host, detail),
            False,
            status,
        )
    # A redirect or another unexpected status: the URL is probably not the token endpoint.
    raise TokenError(
        "the token endpoint %s responded with %s; check smtp.oauth2.token_url in config.json" % (host, detail),
        False,
        status,
    )
