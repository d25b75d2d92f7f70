"""Loopback SMTP servers and test certificates for integration tests.

The servers are real aiosmtpd servers bound to 127.0.0.1 on a port the OS
assigns, each running its own event loop in a thread, so clients on either
runtime (CPython in-process, MicroPython in a subprocess) can talk to them.
Certificates come from a trustme CA made for the test run.

Nothing here imports pytest; tests/conftest.py wraps these classes in fixtures.
"""

import asyncio
import base64
import binascii
import datetime
import json
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult

HOST = "127.0.0.1"
SERVER_HOSTNAME = "localhost"
# Names in the valid server certificate. Clients connect to HOST and verify
# against either name.
SERVER_IDENTITIES = (SERVER_HOSTNAME, HOST)
# A name that never matches the server; ".invalid" is reserved by RFC 2606.
WRONG_HOSTNAME = "wrong-host.invalid"
DEFAULT_USERS = {"alice": "secret"}
MODES = ("starttls", "tls", "plain")
AUTH_MECHANISMS = ("PLAIN", "LOGIN", "XOAUTH2")
# aiosmtpd's default maximum message size, advertised as "SIZE 33554432".
DEFAULT_DATA_SIZE_LIMIT = 33554432


def pem_to_der(pem):
    """Convert one PEM certificate (bytes or str) to DER bytes."""
    if isinstance(pem, bytes):
        pem = pem.decode("ascii")
    return ssl.PEM_cert_to_DER_cert(pem)


class CertificateSet:
    """A test CA with server certificates that pass and fail verification.

    Attributes:
        ca: the trusted ``trustme.CA``.
        ca_pem, ca_der: its root certificate as PEM and DER bytes.
        ca_pem_path, ca_der_path: the same written to files in ``directory``.
        server_cert: valid ``trustme.LeafCert`` for "localhost" and 127.0.0.1.
        wrong_host_cert: signed by ``ca`` but only for ``WRONG_HOSTNAME``.
        expired_cert: for the right names, expired one day ago.
        not_yet_valid_cert: for the right names, valid from one day ahead.
        other_ca, other_ca_der: an unrelated CA that clients do not trust.
        wrong_ca_cert: for the right names, signed by ``other_ca``.
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

        self.ca = trustme.CA(organization_name="microsmtp test CA")
        self.ca_pem = self.ca.cert_pem.bytes()
        self.ca_der = pem_to_der(self.ca_pem)
        self.ca_pem_path = self.directory / "ca.pem"
        self.ca_pem_path.write_bytes(self.ca_pem)
        self.ca_der_path = self.directory / "ca.der"
        self.ca_der_path.write_bytes(self.ca_der)

        self.server_cert = self.issue_cert(*SERVER_IDENTITIES)
        self.wrong_host_cert = self.issue_cert(WRONG_HOSTNAME)

        now = datetime.datetime.now(datetime.UTC)
        one_day = datetime.timedelta(days=1)
        self.expired_cert = self.issue_cert(
            *SERVER_IDENTITIES, not_before=now - 30 * one_day, not_after=now - one_day
        )
        self.not_yet_valid_cert = self.issue_cert(
            *SERVER_IDENTITIES, not_before=now + one_day, not_after=now + 30 * one_day
        )

        self.other_ca = trustme.CA(organization_name="microsmtp unrelated CA")
        self.other_ca_der = pem_to_der(self.other_ca.cert_pem.bytes())
        self.wrong_ca_cert = self.issue_cert(*SERVER_IDENTITIES, ca=self.other_ca)

    def issue_cert(self, *identities, not_before=None, not_after=None, key_type=None, ca=None):
        """Issue a server certificate from ``ca`` (default: the trusted CA).

        ``identities`` are host names or IP addresses. ``not_before`` and
        ``not_after`` are datetimes (trustme's defaults: 2000-01-01 to 3000-01-01).
        ``key_type`` is a ``trustme.KeyType`` (default ECDSA P-256).
        """
        issuer = self.ca if ca is None else ca
        return issuer.issue_cert(
            *identities,
            not_before=not_before,
            not_after=not_after,
            key_type=trustme.KeyType.ECDSA if key_type is None else key_type,
        )

    def client_context(self):
        """Return a CPython client context that trusts only the test CA."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.load_verify_locations(cadata=self.ca_pem.decode("ascii"))
        return context


@dataclass
class DeliveredMessage:
    """One message the server accepted.

    ``content`` is the message as the client sent it after DATA: the original
    bytes and line ends, with dot-stuffing removed and without the terminating
    ".\\r\\n". A client that sent a message ending in CRLF gets exactly those
    bytes back. ``mail_options`` and ``rcpt_options`` are the ESMTP parameters
    upper-cased, as aiosmtpd stores them. ``user`` is the name that passed AUTH.
    """

    mail_from: str
    rcpt_tos: list
    content: bytes
    mail_options: list
    rcpt_options: list
    user: str | None
    tls: bool
    smtputf8: bool
    helo_name: str | None


@dataclass
class ConnectionLog:
    """Bytes exchanged on one connection, in order, as plaintext.

    ``transcript`` contains ("C", bytes received from the client) and
    ("S", reply line sent by the server) pairs. With TLS, the client bytes are
    the decrypted application data; handshake records are not included.
    """

    peer: tuple | None
    transcript: list = field(default_factory=list)

    @property
    def received(self):
        """All bytes the client sent on this connection."""
        return b"".join(data for direction, data in self.transcript if direction == "C")

    @property
    def replies(self):
        """All reply lines the server sent on this connection."""
        return b"".join(data for direction, data in self.transcript if direction == "S")


class _RecordingSMTP(SMTP):
    """aiosmtpd's SMTP protocol, recording each connection's traffic."""

    def __init__(self, handler, *, connections, protocols, implicit_tls, pause_reading_s=0.0, **kwargs):
        super().__init__(handler, **kwargs)
        self._pause_reading_s = pause_reading_s
        self._connections = connections
        self._protocols = protocols
        self._implicit_tls = implicit_tls
        self._log = None
        if implicit_tls:
            # aiosmtpd 1.4.6 counts only STARTTLS as TLS when auth_require_tls is set,
            # so over implicit TLS it would reject every AUTH. The whole connection is
            # encrypted here, so AUTH is allowed from the start.
            self._auth_require_tls = False

    @property
    def tls_active(self):
        return self._implicit_tls or self._tls_protocol is not None

    def connection_made(self, transport):
        # After STARTTLS this runs again for the TLS transport; keep one log.
        if self._log is None:
            self._log = ConnectionLog(peer=transport.get_extra_info("peername"))
            self._connections.append(self._log)
            self._protocols.append(self)
        super().connection_made(transport)

    def data_received(self, data):
        self._log.transcript.append(("C", bytes(data)))
        super().data_received(data)

    async def push(self, status):
        line = status if isinstance(status, bytes) else status.encode("utf-8")
        self._log.transcript.append(("S", line + b"\r\n"))
        await super().push(status)
        if self._pause_reading_s and line.startswith(b"354"):
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(self._pause_reading_s, self.transport.resume_reading)


def _take(reply):
    """Return reply, or the next reply of a list of them (None when it is used up)."""
    if isinstance(reply, list):
        return reply.pop(0) if reply else None
    return reply


class _Handler:
    """aiosmtpd handler: checks credentials, applies reply overrides, stores messages."""

    def __init__(self, server):
        self.server = server

    def authenticate(self, smtp, session, envelope, mechanism, auth_data):
        """Check PLAIN and LOGIN credentials against the server's users."""
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        if login in self.server.users and self.server.users[login] == password:
            return AuthResult(success=True, auth_data=login)
        # handled=False makes aiosmtpd send "535 5.7.8 Authentication credentials invalid".
        return AuthResult(success=False, handled=False)

    async def auth_XOAUTH2(self, smtp, args):
        """Check an XOAUTH2 initial response against the server's OAuth2 tokens.

        The response is base64 of "user=NAME\\x01auth=Bearer TOKEN\\x01\\x01". On
        failure the server sends a 334 challenge with a base64 JSON error, reads
        the client's (empty) response and then replies 535.
        """
        if len(args) == 2:
            try:
                response = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await smtp.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            response = await smtp.challenge_auth("")
            if response is MISSING:
                return AuthResult(success=False, handled=True)

        fields = {}
        for part in response.split(b"\x01"):
            key, _, value = part.partition(b"=")
            if key:
                fields[key] = value
        user = fields.get(b"user", b"").decode("utf-8", "replace")
        authorization = fields.get(b"auth", b"").decode("utf-8", "replace")
        expected = self.server.oauth2_tokens.get(user)
        if expected is not None and authorization == "Bearer " + expected:
            return AuthResult(success=True, auth_data=user)

        error = {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
        client_response = await smtp.challenge_auth(json.dumps(error))
        if client_response is MISSING:
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False)

    async def handle_EHLO(self, smtp, session, envelope, hostname, responses):
        session.host_name = hostname
        if not self.server.advertise_starttls:
            responses = [line for line in responses if line[4:].upper() != "STARTTLS"]
        extra = ["250-" + keyword for keyword in self.server.ehlo_extra]
        # The last line is "250 HELP"; the extra keywords go before it.
        return responses[:-1] + extra + responses[-1:]

    async def handle_MAIL(self, smtp, session, envelope, address, mail_options):
        if self.server.mail_reply is not None:
            return self.server.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, smtp, session, envelope, address, rcpt_options):
        reply = _take(self.server.rcpt_replies.get(address))
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, smtp, session, envelope):
        reply = _take(self.server.data_reply)
        if reply is not None:
            return reply
        message = DeliveredMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            content=bytes(envelope.original_content),
            mail_options=list(envelope.mail_options),
            rcpt_options=list(envelope.rcpt_options),
            user=session.auth_data if session.authenticated else None,
            tls=smtp.tls_active,
            smtputf8=bool(envelope.smtp_utf8),
            helo_name=session.host_name,
        )
        self.server.messages.append(message)
        return "250 2.0.0 OK queued as %d" % len(self.server.messages)


class _Controller(Controller):
    """aiosmtpd Controller that builds _RecordingSMTP and supports port 0."""

    def __init__(self, handler, smtp_factory, **kwargs):
        super().__init__(handler, **kwargs)
        self._smtp_factory = smtp_factory

    def factory(self):
        return self._smtp_factory()

    def _trigger_server(self):
        # Controller.start() connects to self.port to check that the server
        # accepts connections, so replace port 0 with the port the OS assigned first.
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SMTPTestServer:
    """A running aiosmtpd server on 127.0.0.1 with recorded messages and traffic.

    mode:
        "starttls": plaintext greeting, then STARTTLS (see require_starttls).
        "tls": TLS from the first byte (implicit TLS, as on port 465).
        "plain": no TLS at all.
    cert: ``trustme.LeafCert`` the server presents (required unless mode is "plain").
    auth_required: reject MAIL with 530 until AUTH succeeded. Default: True
        unless mode is "plain", where AUTH is offered only with auth_require_tls=False.
    users: {name: password} for AUTH PLAIN and LOGIN. Default {"alice": "secret"}.
    oauth2_tokens: {name: token} for AUTH XOAUTH2; XOAUTH2 is offered only when given.
    auth_mechanisms: mechanisms to offer, a subset of ("PLAIN", "LOGIN", "XOAUTH2").
    auth_require_tls: offer and accept AUTH only over TLS (aiosmtpd replies 538
        to AUTH before TLS). Default True.
    advertise_starttls: False removes STARTTLS from the EHLO reply, as a
        downgrade attacker would. The server then also accepts mail without TLS
        unless require_starttls is set.
    require_starttls: reject commands other than EHLO, NOOP, STARTTLS and QUIT
        with 530 before STARTTLS. Default: the value of advertise_starttls.
    ehlo_extra: extra EHLO keywords, e.g. ("PIPELINING",). aiosmtpd reads
        commands one line at a time, so pipelined commands work. It has no BDAT
        command, so advertising CHUNKING makes a server that rejects BDAT.
    smtputf8: advertise SMTPUTF8 and accept UTF-8 in commands. Default True.
    data_size_limit: maximum message size in bytes, advertised as SIZE.
    mail_reply: a reply line (e.g. "451 4.3.0 Try again") sent to every MAIL.
    rcpt_replies: {address: reply line} sent to RCPT for those addresses.
    data_reply: a reply line sent after DATA instead of storing the message.
        A list in place of a reply line (in rcpt_replies too) is used up one reply
        per command; None in it, or an empty list, gives the normal reply.
    timeout: seconds a connection may stay idle before the server closes it.
    pause_reading_s: after each 354 reply, read nothing for this many seconds, so the
        client's socket fills up and its transport keeps unsent data.

    Attributes: host, port, mode, cert, users, oauth2_tokens, messages (list of
    DeliveredMessage), connections (list of ConnectionLog, excluding the
    Controller's own start-up check).
    """

    def __init__(
        self,
        mode="starttls",
        cert=None,
        *,
        auth_required=None,
        users=None,
        oauth2_tokens=None,
        auth_mechanisms=None,
        auth_require_tls=True,
        advertise_starttls=True,
        require_starttls=None,
        ehlo_extra=(),
        smtputf8=True,
        data_size_limit=DEFAULT_DATA_SIZE_LIMIT,
        mail_reply=None,
        rcpt_replies=None,
        data_reply=None,
        timeout=30.0,
        pause_reading_s=0.0,
    ):
        if mode not in MODES:
            raise ValueError("invalid mode %r, expected one of %s" % (mode, ", ".join(MODES)))
        if mode != "plain" and cert is None:
            raise ValueError("mode %r needs a server certificate (cert=...)" % mode)

        self.host = HOST
        self.port = None
        self.mode = mode
        self.cert = cert
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.oauth2_tokens = dict(oauth2_tokens or {})
        self.advertise_starttls = advertise_starttls
        self.ehlo_extra = tuple(ehlo_extra)
        self.mail_reply = mail_reply
        self.rcpt_replies = dict(rcpt_replies or {})
        self.data_reply = data_reply
        self.messages = []
        self.connections = []
        self._protocols = []
        self._stopped = False

        if auth_required is None:
            auth_required = mode != "plain"
        if require_starttls is None:
            require_starttls = advertise_starttls
        if auth_mechanisms is None:
            auth_mechanisms = ("PLAIN", "LOGIN")
            if self.oauth2_tokens:
                auth_mechanisms += ("XOAUTH2",)
        unknown = set(auth_mechanisms) - set(AUTH_MECHANISMS)
        if unknown:
            raise ValueError("unsupported AUTH mechanisms: %s" % ", ".join(sorted(unknown)))
        excluded = [name for name in AUTH_MECHANISMS if name not in auth_mechanisms]

        tls_context = None
        if mode != "plain":
            # Purpose.CLIENT_AUTH gives a server context that requests no client certificate.
            tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(tls_context)

        handler = _Handler(self)
        smtp_options = dict(
            hostname=SERVER_HOSTNAME,
            enable_SMTPUTF8=smtputf8,
            decode_data=False,
            data_size_limit=data_size_limit,
            auth_required=auth_required,
            auth_require_tls=auth_require_tls,
            auth_exclude_mechanism=excluded,
            authenticator=handler.authenticate,
            timeout=timeout,
        )
        if mode == "starttls":
            smtp_options["tls_context"] = tls_context
            smtp_options["require_starttls"] = require_starttls

        def make_smtp():
            return _RecordingSMTP(
                handler,
                connections=self.connections,
                protocols=self._protocols,
                implicit_tls=mode == "tls",
                pause_reading_s=pause_reading_s,
                **smtp_options,
            )

        self._controller = _Controller(
            handler,
            make_smtp,
            hostname=HOST,
            port=0,
            ssl_context=tls_context if mode == "tls" else None,
            # Sets the greeting name and avoids socket.getfqdn(), which may query DNS.
            server_hostname=SERVER_HOSTNAME,
        )
        try:
            self._controller.start()
        except BaseException:
            self._stop_after_failed_start()
            raise
        self.port = self._controller.port
        # Drop the log of the Controller's own start-up connection.
        del self.connections[:]
        del self._protocols[:]

    @property
    def address(self):
        return (self.host, self.port)

    def wait_for_messages(self, count, timeout=10.0):
        """Wait until at least ``count`` messages arrived; return the message list.

        Raises TimeoutError with the number received when ``timeout`` seconds pass.
        """
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    "expected %d messages within %.1f s, received %d"
                    % (count, timeout, len(self.messages))
                )
            time.sleep(0.01)
        return self.messages

    def stop(self):
        """Close open connections and stop the server thread. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        # This runs in the server thread before Controller.stop() stops the loop.
        # The loop runs again while the listener closes, so the transports finish closing.
        self._controller.loop.call_soon_threadsafe(self._close_connections)
        self._controller.stop()

    def _stop_after_failed_start(self):
        self._stopped = True
        try:
            self._controller.stop(no_assert=True)
        except Exception:
            # The start-up error is the one to report.
            pass

    def _close_connections(self):
        for protocol in self._protocols:
            if protocol.transport is not None:
                protocol.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def __repr__(self):
        return "<SMTPTestServer %s %s:%s>" % (self.mode, self.host, self.port)
