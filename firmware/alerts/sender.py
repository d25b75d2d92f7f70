"""Send the outbox in order over one SMTP connection per session.

An entry is removed only after the server's final 250 for its message. A transient
error of the connection (timeout, lost connection, 4xx to the greeting, EHLO, STARTTLS
or AUTH) stops the session and schedules a retry with exponential backoff. A 4xx reply
to one message (its MAIL, RCPT, DATA or content) holds back only that entry, with its
own backoff, while the session goes on with the others; after GIVE_UP_TRIES such
replies over at least GIVE_UP_S it is set aside. A permanent rejection of one message (5xx to MAIL, RCPT or
the message) sets that entry aside with the reply, and the session goes on. A permanent
error of the whole session (rejected credentials, failed certificate check) keeps
every entry queued and retries after the maximum delay, because the entries are fine
and only the configuration or the server must change.

With smtp.oauth2 in config.json, each session first gets an access token from
alerts.oauth2 (cached between rounds) and sends it with XOAUTH2. A failed token
request keeps the entries like a failed session. When the server rejects a cached
token, it is dropped and the session runs once more with a new one. In deep-sleep
mode the token is kept on flash as well, for the next wake, and dropped there too.
"""

import gc

from . import clock, log
from .outbox import backoff, random_fraction

_MESSAGE_STAGES = ("mail", "rcpt", "data", "message")
# A message the server keeps refusing with 4xx replies (to its MAIL, RCPT, DATA or
# content) is set aside and reported after GIVE_UP_TRIES such replies spread over at
# least GIVE_UP_S, as mail servers give up on a message after some days. Both conditions
# must be met, so a clock that jumped forward, or days without a connection, cannot end
# it early. Failures of the connection (WiFi, DNS, TLS, AUTH, a lost connection) are no
# tries: the alerts stay queued until the server can be reached.
GIVE_UP_S = 5 * 86400
GIVE_UP_TRIES = 20
# Returned by _session_failed() when the session should run again with a new access token.
_RENEW = object()


def load_ca_roots(config):
    """Return the trusted roots as a list of DER bytes: from smtp.ca_file or module ca_roots."""
    path = config["smtp"].get("ca_file")
    if path:
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError:
            raise SenderConfigError("smtp.ca_file %s cannot be read; copy the CA file to the board" % path) from None
        from microsmtp.encoding import ca_file_roots
        from microsmtp.errors import ConfigError

        try:
            return ca_file_roots(data)
        except ConfigError as exc:
            raise SenderConfigError("smtp.ca_file %s is not a valid CA file: %s" % (path, exc)) from None
    try:
        import ca_roots

        return list(ca_roots.ROOTS)
    except ImportError:
        raise SenderConfigError(
            "no CA roots: set smtp.ca_file in config.json or put ca_roots.py (ROOTS = (DER bytes, ...)) on the board"
        ) from None
    except MemoryError:
        # Not a broken module: the next round tries again.
        raise
    except Exception as exc:
        # A truncated copy (SyntaxError), a .mpy for another MicroPython version
        # (ValueError) or a module without ROOTS (AttributeError).
        raise SenderConfigError(
            "ca_roots cannot be loaded (%s: %s); copy ca_roots.py to the board again or set smtp.ca_file"
            % (type(exc).__name__, exc)
        ) from None


_EHLO_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"


def ehlo_name(device):
    """Return the device name as the EHLO name, a valid host name made from it.

    Each character other than an ASCII letter, a digit, a dot or a hyphen becomes a
    hyphen. Empty labels go, hyphens at the ends of a label too, and labels are cut to
    63 characters and the name to 253. A name of digits and dots alone, which a server
    could take for an address, gets "board-" in front.
    """
    labels = []
    for label in device.split("."):
        label = "".join([char if char in _EHLO_CHARS else "-" for char in label]).strip("-")[:63].strip("-")
        if label and len(".".join(labels + [label])) <= 253:
            labels.append(label)
    name = ".".join(labels)
    if not name.replace(".", "").replace("-", "").strip("0123456789"):
        name = "board-" + name if name else "board"
    return name


class SenderConfigError(Exception):
    """The trusted CA roots cannot be loaded."""


class Sender:
    """Delivers outbox entries; ``run_session()`` returns the seconds until the next try."""

    def __init__(self, config, outbox, ca_roots):
        self.config = config
        self.outbox = outbox
        self.ca_roots = ca_roots
        outbox_config = config["outbox"]
        self.retry_min = outbox_config["retry_min_s"]
        self.retry_max = outbox_config["retry_max_s"]
        self.failures = 0
        # The retry delay of the messages held back in the current session (_hold()).
        self._held_delay = None
        self.delivered = 0
        self.last_error = None
        # smtp.oauth2 (with alerts.oauth2's cache in it), or None for a password or a fixed token.
        self._oauth2 = config["smtp"].get("oauth2")
        # In deep-sleep mode RAM is lost at every wake, so alerts.oauth2 keeps the access token on flash too.
        self._keep_token = config.get("deep_sleep", {}).get("enabled", False)
        self._token = None
        # True when this session's token came from the cache, False when it was just requested.
        self._token_cached = False
        self._renewed = False
        # Called with the real seconds the next step may take (token request, connect, one
        # message, QUIT). alerts.delivery sets App.round_alive(), which feeds the watchdog.
        self.progress = None

    def _step(self):
        if self.progress is not None:
            self.progress(self.config["smtp"]["timeout_s"])

    def _options(self):
        smtp = self.config["smtp"]
        options = {
            "port": smtp["port"],
            "security": smtp["security"],
            "username": smtp["user"],
            "password": smtp["password"],
            "oauth2_token": self._token or smtp["oauth2_token"],
            "server_hostname": smtp["server_name"],
            "local_hostname": ehlo_name(self.config["device"]),
            "timeout_ms": int(smtp["timeout_s"] * 1000),
        }
        if smtp["security"] != "none":
            options["ca_roots"] = self.ca_roots
        if smtp["transcript"]:
            options["log"] = _transcript
        return options

    def _retry_delay(self, permanent=False):
        self.failures += 1
        if permanent:
            return self.retry_max
        return backoff(self.failures, self.retry_min, self.retry_max, random_fraction())

    async def run_session(self):
        """Send every pending entry that is due; return seconds until the next session (None: empty)."""
        now = clock.now()
        wait = self.outbox.due(now)
        if wait is None or wait > 0:
            return wait
        # Entries held back by a failure of their own message wait for their retry time.
        names = self.outbox.ready(now)
        if not names:
            return self.outbox.due(now)
        self._renewed = False
        while True:
            delay = await self._session(names)
            if delay is not _RENEW:
                return delay

    async def _get_token(self):
        """Set self._token from alerts.oauth2, which is unloaded again before the SMTP session."""
        from . import oauth2

        try:
            self._token, fetched = await oauth2.access_token(
                self._oauth2, self.ca_roots, self.config["smtp"]["timeout_s"], keep=self._keep_token
            )
        finally:
            oauth2 = None
            from .app import unload

            unload(("alerts.oauth2",))
        self._token_cached = not fetched

    async def _session(self, names):
        from microsmtp.client import SMTP
        from microsmtp.errors import SMTPError

        if self._oauth2 is not None:
            self._step()
            try:
                await self._get_token()
            except SMTPError as exc:
                # A TokenError from alerts.oauth2, with stage "token".
                return self._session_failed(names[0], exc)
            except MemoryError as exc:
                return self._out_of_memory(names[0], exc)
        # mbedTLS needs large contiguous blocks (about 21 KB on rp2); collect before asking.
        gc.collect()
        smtp = SMTP(self.config["smtp"]["host"], **self._options())
        log.info("sending %d queued alert(s) to %s:%d" % (len(names), smtp.host, smtp.port))
        self._step()
        try:
            await smtp.connect()
        except SMTPError as exc:
            await smtp.close()
            return self._session_failed(names[0], exc)
        except MemoryError:
            await smtp.close()
            return self._out_of_memory(names[0])
        try:
            delay = await self._send_all(smtp, names)
        except MemoryError:
            # Building or sending a message ran out of memory. A reset would not make
            # the heap larger, so the alert waits for the next round like after any
            # transient failure, and the round starts from a collected heap.
            await smtp.close()
            return self._out_of_memory(self.outbox.in_flight or names[0])
        except BaseException:
            await smtp.close()
            raise
        finally:
            self.outbox.in_flight = None
        self._step()
        await smtp.quit()
        return delay

    async def _send_all(self, smtp, names):
        from microsmtp.errors import SMTPError

        report = self.outbox.report()
        if not report[0] and not report[2]:
            report = None
        self._held_delay = None
        for name in names:
            # From here on a MemoryError names this entry (_session()), not the one sent before.
            self.outbox.in_flight = name
            entry = self.outbox.load(name)
            if entry is None:
                continue
            try:
                message = _build(entry, self.config, report)
            except ValueError as exc:
                self.outbox.set_aside(name, entry, "the message could not be built: %s" % exc)
                log.error("alert %s set aside: the message could not be built: %s" % (name, exc))
                continue
            self._step()
            try:
                result = await smtp.send_message(message)
            except SMTPError as exc:
                message = None
                usable = smtp.session is not None and smtp.session.usable
                if exc.stage not in _MESSAGE_STAGES or (exc.transient and not usable):
                    return self._session_failed(name, exc)
                if exc.transient:
                    # The server refused this message for now; the others may still go.
                    self._hold(name, entry, exc)
                    continue
                reply = _server_reply(exc)
                self.outbox.set_aside(name, entry, reply)
                log.error("alert %s %s set aside: %s" % (name, entry["id"], reply))
                if smtp.session is None or not smtp.session.usable:
                    return self._retry_delay()
                continue
            message = None
            self.outbox.remove(name)
            self.delivered += 1
            self.failures = 0
            self.last_error = None
            alert = entry["alert"]
            log.info(
                "sent %s %s %s %s: %s"
                % (
                    name,
                    alert["kind"],
                    alert.get("rule") or "-",
                    entry["id"],
                    result.reply.describe() if result.reply else "250",
                )
            )
            for address in result.refused:
                log.warning("recipient %s refused: %s" % (address, result.refused[address].describe()))
            if report is not None:
                self.outbox.reported(report)
                report = None
        return self.outbox.due(clock.now())

    def _session_failed(self, name, exc):
        if self._oauth2 is not None and exc.stage == "auth" and exc.code is not None:
            # The server rejected the access token, so the next attempt must request a
            # new one. alerts.oauth2 (unloaded by now) keeps it in cache["token"].
            cache = self._oauth2.get("cache")
            if cache:
                cache["token"] = None
                if cache.get("expires"):
                    # The token is on flash too (deep-sleep mode): the next token request
                    # writes the file without it first.
                    cache["expires"] = None
                    cache["unsaved"] = cache.get("unsaved") or 1
            if self._token_cached and not self._renewed:
                self._renewed = True
                log.info("the server rejected the cached OAuth2 access token (%s); requesting a new one" % exc.code)
                return _RENEW
        permanent = not exc.transient
        delay = self._retry_delay(permanent)
        self.last_error = _in_config_terms(exc, self._oauth2 is not None)
        self._keep(name, delay)
        log.warning(
            "sending failed (%s, %s): %s; %s kept, retry in %d s"
            % (exc.stage, "transient" if exc.transient else "permanent", self.last_error, name, delay)
        )
        return delay

    def _hold(self, name, entry, exc):
        """Hold back entry ``name`` after a transient reply to its own message, or set it aside (see GIVE_UP_S)."""
        now = clock.now()
        reply = _server_reply(exc)
        failing = entry.get("failing")
        if failing is None or failing > now:
            # The first such failure, or one dated by a clock that has gone back since.
            failing = now
        tries = entry.get("held", 0) + 1
        if tries >= GIVE_UP_TRIES and now - failing >= GIVE_UP_S:
            reply = "still refused after %d tries over %d days: %s" % (tries, (now - failing) // 86400, reply)
            self.outbox.set_aside(name, entry, reply)
            log.error("alert %s %s set aside: %s" % (name, entry["id"], reply))
            return
        delay = self._held_delay
        if delay is None:
            # Every message held back in one session waits as long, so that a server
            # deferring them all gets one session per retry, not one per message.
            delay = backoff(entry.get("attempts", 0) + 1, self.retry_min, self.retry_max, random_fraction())
            self._held_delay = delay
        entry["own"] = True
        entry["failing"] = failing
        entry["held"] = tries
        self.outbox.retry_later(name, entry, now, delay)
        log.warning("alert %s %s deferred (%s): %s; retry in %d s" % (name, entry["id"], exc.stage, reply, delay))

    def _out_of_memory(self, name, exc=None):
        gc.collect()
        delay = self._retry_delay()
        self.last_error = "out of memory"
        self._keep(name, delay)
        # A MemoryError of alerts.oauth2 names the step that ran out of heap.
        detail = "%s; " % exc if exc is not None and exc.args else ""
        log.warning(
            "sending failed: out of memory (%s%d bytes free); %s kept, retry in %d s"
            % (detail, log.free_bytes(), name, delay)
        )
        return delay

    def _keep(self, name, delay):
        """Keep the outbox entry ``name`` and date its next attempt ``delay`` seconds from now."""
        entry = self.outbox.load(name)
        if entry is not None:
            # The delay is the session's back-off now, which every entry waits for (Outbox.due()).
            entry.pop("own", None)
            self.outbox.retry_later(name, entry, clock.now(), delay)


def _build(entry, config, report):
    from microsmtp.errors import InvalidInputError

    from .mailer import build_message

    try:
        return build_message(entry, config, report)
    except InvalidInputError as exc:
        raise ValueError(str(exc)) from None


def _in_config_terms(exc, oauth2):
    """Return the text of exc with the library's advice in config.json terms, and advice for bad credentials."""
    text = str(exc).replace(
        "check ca_roots and server_hostname", "check smtp.ca_file (or ca_roots.py) and smtp.server_name"
    )
    if text.endswith("; check ca_roots"):
        text += " (smtp.ca_file or ca_roots.py)"
    if exc.stage == "auth" and exc.code is not None and not exc.transient:
        if oauth2:
            text += "; check smtp.user and the smtp.oauth2 grant"
        else:
            text += "; check smtp.user and smtp.password (Gmail and Outlook want an app password, or smtp.oauth2)"
    return text


def _server_reply(exc):
    """Return the server's reply as it came ("554 5.7.1 text"), or the error message without one."""
    if exc.code is None:
        return exc.message
    parts = [str(exc.code)]
    if exc.enhanced:
        parts.append(exc.enhanced)
    if exc.text:
        parts.append(exc.text)
    return " ".join(parts)


def _transcript(line):
    print(line)
