"""The ``microsmtp testserver`` command: a local SMTP server to try sends against.

It is the server of ``microsmtp sim``: aiosmtpd with STARTTLS (or implicit TLS) and AUTH,
and a certificate from a CA that trustme makes for this run. It writes that CA to a PEM
file for ``--ca`` (``microsmtp send``, ``microsmtp sim --server``) or ``smtp.ca_file``
(a board's config.json), and each message it accepts to an .eml file. It runs until
Ctrl-C.

A test server has a test password: it comes from SMTP_PASSWORD, as for ``microsmtp
send``, or is made for the run and printed, because it guards nothing else.
"""

import ipaddress
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from .send import PASSWORD_VARIABLE

EX_CONFIG = 78
DEFAULT_DIR = Path("build") / "testserver"
DEFAULT_USER = "test@example.com"
DEFAULT_PORTS = {"starttls": 2587, "tls": 2465}


def add_parser(subcommands):
    parser = subcommands.add_parser(
        "testserver",
        help="run a local SMTP server with STARTTLS and AUTH to try sends against",
        description=(
            "Run a local SMTP server (aiosmtpd) with STARTTLS, or implicit TLS with --tls, and AUTH "
            "PLAIN/LOGIN, whose certificate comes from a test CA made for this run. The CA goes to "
            "DIR/ca.pem, each accepted message to DIR/mail/NNN.eml. The password is %s if set, else "
            "one made for this run and printed. Stop it with Ctrl-C." % PASSWORD_VARIABLE
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="IP address to listen on (default: 127.0.0.1); the address of this PC on the LAN lets a board "
        "on the same network connect",
    )
    parser.add_argument(
        "--port", type=int, metavar="PORT", help="port (default: 2587, or 2465 with --tls; 0 picks a free one)"
    )
    parser.add_argument("--tls", action="store_true", help="implicit TLS (as on port 465) instead of STARTTLS")
    parser.add_argument("--user", default=DEFAULT_USER, help="the login name (default: %s)" % DEFAULT_USER)
    parser.add_argument(
        "--dir",
        default=str(DEFAULT_DIR),
        metavar="DIR",
        help="folder for ca.pem and mail/ (default: %s)" % DEFAULT_DIR,
    )
    parser.set_defaults(handler=run_command)
    return parser


def check_listen_address(text):
    """Return the address to listen on, or raise ValueError naming what to give instead."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError("--listen must be an IP address such as 127.0.0.1, not %r" % text) from None
    if address.is_unspecified:
        # The certificate must name the address that clients connect to.
        raise ValueError("--listen must be one address, not %s: give this PC's address on the LAN" % text)
    return str(address)


def run_command(args):
    try:
        listen = check_listen_address(args.listen)
    except ValueError as exc:
        print("microsmtp testserver: error: %s" % exc, file=sys.stderr)
        return EX_CONFIG
    port = args.port
    if port is None:
        port = DEFAULT_PORTS["tls"] if args.tls else DEFAULT_PORTS["starttls"]
    if not 0 <= port < 65536:
        print("microsmtp testserver: error: --port must be from 0 to 65535, not %d" % port, file=sys.stderr)
        return EX_CONFIG
    password = os.environ.get(PASSWORD_VARIABLE)
    made_password = not password
    if made_password:
        password = secrets.token_urlsafe(12)

    from .sim import LocalServer

    names = ["localhost", listen] if listen != "127.0.0.1" else ["localhost", "127.0.0.1"]
    server = LocalServer({args.user: password}, names=names, implicit_tls=args.tls)
    server.host = listen
    server.port = port
    folder = Path(args.dir)
    mail = folder / "mail"
    mail.mkdir(parents=True, exist_ok=True)
    ca_file = folder / "ca.pem"
    server.ca.cert_pem.write_to_path(str(ca_file))
    received = [0]

    def save(record):
        received[0] += 1
        number = received[0]
        # Messages of earlier runs in the same folder stay.
        while (mail / ("%03d.eml" % number)).exists():
            number += 1
        path = mail / ("%03d.eml" % number)
        path.write_bytes(record["content"])
        server.messages.clear()
        print(
            "received %s: from %s to %s (user %s)"
            % (path, record["mail_from"] or "<>", ", ".join(record["rcpt_tos"]), record["user"]),
            flush=True,
        )

    server.on_message = save
    try:
        server.start()
    except OSError as exc:
        print(
            "microsmtp testserver: error: cannot listen on %s:%d: %s" % (listen, port, exc.strerror or exc),
            file=sys.stderr,
        )
        return EX_CONFIG
    mode = "implicit TLS" if args.tls else "STARTTLS"
    print("microsmtp testserver: listening on %s:%d (%s, AUTH)" % (listen, server.port, mode), flush=True)
    print("  CA certificate: %s (give it as --ca or smtp.ca_file)" % ca_file)
    print("  certificate names: %s (give one as --server-name or smtp.server_name)" % ", ".join(names))
    print("  user: %s" % args.user)
    if made_password:
        print("  password: %s (made for this run; export SMTP_PASSWORD to choose one)" % password)
    else:
        print("  password: from %s" % PASSWORD_VARIABLE)
    print("  messages: %s/NNN.eml" % mail)
    security = " --security tls" if args.tls else ""
    print(
        "  try: SMTP_PASSWORD=... microsmtp send --host %s --port %d%s --ca %s --user %s --from %s "
        "--to you@example.com --subject test --body hello"
        % (listen, server.port, security, ca_file, args.user, args.user),
        flush=True,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    print("microsmtp testserver: stopped after %d message(s)" % received[0], flush=True)
    return 0
