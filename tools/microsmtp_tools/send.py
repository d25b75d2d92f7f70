"""The ``microsmtp send`` command: send one message from the host.

The message goes out through the microsmtp library, either in this CPython process
(``--runtime cpython``) or in a MicroPython unix port child process that runs
``mp_send.py`` (``--runtime micropython``), so the exact code of a board can be tried
against a real server. Exit statuses follow sysexits.h: 0 delivered, 75 (EX_TEMPFAIL)
when trying again later can succeed, 69 (EX_UNAVAILABLE) when it cannot, 78
(EX_CONFIG) for invalid options or input, and 2 from argparse for usage errors.

Secrets are read only from the environment or from files, never from the command
line, and every text this command prints passes through ``Redactor``.
"""

import argparse
import asyncio
import base64
import mimetypes
import os
import re
import ssl
import sys
from pathlib import Path

import microsmtp
from microsmtp.client import DEFAULT_PORTS
from microsmtp.encoding import ca_file_roots
from microsmtp.errors import ConfigError, InvalidInputError, SMTPError
from microsmtp.message import Attachment, Message

EX_OK = 0
EX_USAGE = 2
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_CONFIG = 78

DEFAULT_TIMEOUT_MS = 60000
SECURITY_CHOICES = ("starttls", "tls", "none")
RUNTIME_CHOICES = ("cpython", "micropython")
PASSWORD_VARIABLE = "SMTP_PASSWORD"
TOKEN_VARIABLE = "SMTP_OAUTH2_TOKEN"

# Options that look like a way to pass a secret on the command line. They are rejected
# before argparse runs, because its "unrecognized arguments" message repeats the value.
_SECRET_OPTIONS = ("--password", "--pass", "--passwd", "--oauth2-token", "--token")

_HEAP_PATTERN = re.compile(r"[1-9][0-9]*[KkMm]?")

# Library option names in error messages, and the command-line options that set them.
_OPTION_NAMES = {
    "ca_roots": "--ca",
    "server_hostname": "--server-name",
    "timeout_ms": "--timeout",
}


class CommandError(Exception):
    """A failure detected by the command itself, with its exit status.

    ``what`` names the step that failed ("reading the CA file"), ``stage`` the phase
    ("config" for options checked before connecting).
    """

    def __init__(self, what, message, status=EX_CONFIG, stage="config", transient=False):
        super().__init__(message)
        self.what = what
        self.message = message
        self.status = status
        self.stage = stage
        self.transient = transient


class Redactor:
    """Replaces every secret, and the base64 forms AUTH sends, with ``<redacted>``."""

    def __init__(self):
        self._secrets = []

    def add(self, secret, username=None):
        if not secret:
            return
        forms = [secret, _b64(secret)]
        if username is not None:
            forms.append(_b64("\0%s\0%s" % (username, secret)))
            forms.append(_b64("user=%s\x01auth=Bearer %s\x01\x01" % (username, secret)))
        for form in forms:
            if form not in self._secrets:
                self._secrets.append(form)
        # Longest first, so that a secret inside a longer form is not replaced first.
        self._secrets.sort(key=len, reverse=True)

    def __call__(self, text):
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text


def _b64(text):
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _printable(text):
    """Return text with control characters escaped, so a server cannot drive the terminal."""
    return "".join(ch if ch.isprintable() else "\\x%02x" % ord(ch) for ch in text)


# -- command-line options -------------------------------------------------------------


def _port(value):
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("invalid port %r: give a number from 1 to 65535" % value) from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError("invalid port %d: give a number from 1 to 65535" % port)
    return port


def _milliseconds(value):
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("invalid time %r: give whole milliseconds, e.g. 60000" % value) from None
    if number <= 0:
        raise argparse.ArgumentTypeError("invalid time %d: give a positive number of milliseconds" % number)
    return number


def _heap_size(value):
    if not _HEAP_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(
            "invalid heap size %r: give bytes with an optional K or M suffix, e.g. 256K" % value
        )
    return value


def add_parser(subcommands):
    """Add the ``send`` subcommand and its options to an argparse subparsers object."""
    parser = subcommands.add_parser(
        "send",
        help="send one message over SMTP",
        description=(
            "Send one email message through an SMTP server, with STARTTLS or implicit TLS "
            "and a verified server certificate. The password is read from the environment "
            "variable %s or from --password-file, an OAuth2 token from %s or from "
            "--oauth2-token-file; neither can be given on the command line. Without --body "
            "the body is read from standard input when that is not a terminal." % (PASSWORD_VARIABLE, TOKEN_VARIABLE)
        ),
        epilog=(
            "exit status: 0 delivered, 75 temporary failure (try again later), "
            "69 permanent failure, 78 invalid configuration or input, 2 usage error"
        ),
        # Prefix matching would take "--password X" as "--password-file X".
        allow_abbrev=False,
    )

    server = parser.add_argument_group("server")
    server.add_argument("--host", required=True, help="name or IP address of the SMTP server")
    server.add_argument(
        "--port",
        type=_port,
        help="TCP port of the server (default: 587 with starttls, 465 with tls, 25 with none)",
    )
    server.add_argument(
        "--security",
        choices=SECURITY_CHOICES,
        default="starttls",
        help="connection security: starttls upgrades a plaintext connection and fails if the "
        "server does not offer it, tls uses TLS from the first byte, none sends plaintext "
        "(default: starttls)",
    )
    server.add_argument(
        "--ca",
        action="append",
        metavar="FILE",
        help="file with the trusted root CA certificates, PEM (one or more certificates) or "
        "DER; repeatable (default: the system's trusted roots on cpython; required with "
        "--runtime micropython)",
    )
    server.add_argument(
        "--server-name",
        metavar="NAME",
        help="host name the server certificate must match (default: the value of --host)",
    )
    server.add_argument(
        "--local-name",
        metavar="NAME",
        help="name this client gives in EHLO (default: its IP address as an address "
        "literal on cpython, localhost on micropython)",
    )
    server.add_argument(
        "--timeout",
        type=_milliseconds,
        default=DEFAULT_TIMEOUT_MS,
        metavar="MS",
        help="deadline for the whole delivery, in milliseconds (default: %d)" % DEFAULT_TIMEOUT_MS,
    )

    auth = parser.add_argument_group("authentication")
    auth.add_argument("--user", metavar="NAME", help="user name for SMTP AUTH (default: no AUTH)")
    auth.add_argument(
        "--password-file",
        metavar="FILE",
        help="file whose content is the password; one trailing newline is removed "
        "(default: the environment variable %s)" % PASSWORD_VARIABLE,
    )
    auth.add_argument(
        "--oauth2-token-file",
        metavar="FILE",
        help="file whose content is an OAuth2 access token for XOAUTH2; one trailing newline "
        "is removed (default: the environment variable %s)" % TOKEN_VARIABLE,
    )

    message = parser.add_argument_group("message")
    message.add_argument(
        "--from",
        dest="sender",
        required=True,
        metavar="ADDR",
        help='sender address, "user@example.com" or "Name <user@example.com>"',
    )
    message.add_argument("--to", action="append", required=True, metavar="ADDR", help="recipient address; repeatable")
    message.add_argument("--cc", action="append", default=[], metavar="ADDR", help="copy recipient address; repeatable")
    message.add_argument(
        "--bcc",
        action="append",
        default=[],
        metavar="ADDR",
        help="blind copy recipient address, left out of the headers; repeatable",
    )
    message.add_argument("--subject", default="", help="subject line (default: none)")
    message.add_argument(
        "--body",
        metavar="TEXT",
        help="text of the message body (default: standard input when it is not a terminal, else an empty body)",
    )
    message.add_argument(
        "--attach",
        action="append",
        default=[],
        metavar="FILE",
        help="file to attach; the content type is guessed from the file name; repeatable",
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        "--transcript",
        action="store_true",
        help='print the SMTP dialogue to standard error as "--> " and "<-- " lines, with AUTH data redacted',
    )
    run.add_argument(
        "--runtime",
        choices=RUNTIME_CHOICES,
        default="cpython",
        help="where the SMTP client runs: in this process, or in the MicroPython unix port "
        "found next to this Python or on PATH (default: cpython)",
    )
    run.add_argument(
        "--heap",
        type=_heap_size,
        metavar="SIZE",
        help="MicroPython GC heap in bytes, with an optional K or M suffix (e.g. 256K); only "
        "with --runtime micropython (default: the unix port's default heap)",
    )
    parser.set_defaults(handler=run_send)
    return parser


def check_secret_arguments(argv):
    """Return a usage message if argv tries to pass a password or token, else None."""
    for argument in argv:
        if argument == "--":
            return None
        name = argument.split("=", 1)[0]
        if name in _SECRET_OPTIONS:
            return (
                "%s is not an option: a secret on the command line is visible to other users "
                "and in shell history; set %s or use --password-file (for a token, %s or "
                "--oauth2-token-file)" % (name, PASSWORD_VARIABLE, TOKEN_VARIABLE)
            )
    return None


# -- configuration from options, files and the environment ------------------------------


def _read_secret_file(path, what):
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(
            "reading the %s file" % what,
            "cannot read %s: %s; check the path and its permissions" % (path, exc.strerror or exc),
        ) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("reading the %s file" % what, "%s is not valid UTF-8 text" % path) from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise CommandError("reading the %s file" % what, "%s is empty; write the %s into it" % (path, what))
    return text


def _secret(file_path, variable, what):
    if file_path is not None:
        return _read_secret_file(file_path, what)
    # An empty variable counts as unset, as with most tools that read secrets from the environment.
    return os.environ.get(variable) or None


def read_credentials(args, redactor):
    """Return (username, password, oauth2_token) and register the secrets with redactor."""
    password = _secret(args.password_file, PASSWORD_VARIABLE, "password")
    token = _secret(args.oauth2_token_file, TOKEN_VARIABLE, "OAuth2 token")
    redactor.add(password, args.user)
    redactor.add(token, args.user)

    what = "checking the credentials"
    if password is not None and token is not None:
        raise CommandError(
            what,
            "both a password and an OAuth2 token are set; keep one (unset %s or %s, or drop "
            "the file option)" % (PASSWORD_VARIABLE, TOKEN_VARIABLE),
        )
    secret_source = None
    if password is not None:
        secret_source = "--password-file" if args.password_file else PASSWORD_VARIABLE
    elif token is not None:
        secret_source = "--oauth2-token-file" if args.oauth2_token_file else TOKEN_VARIABLE
    if args.user is None and secret_source is not None:
        raise CommandError(what, "%s is set but --user is missing; give --user NAME" % secret_source)
    if args.user is not None and secret_source is None:
        raise CommandError(
            what,
            "--user is given without a secret; set %s or use --password-file (or %s, "
            "--oauth2-token-file)" % (PASSWORD_VARIABLE, TOKEN_VARIABLE),
        )
    if args.user is not None and args.security == "none":
        raise CommandError(
            what,
            "--security none would send the credentials in plaintext; use starttls or tls",
        )
    return args.user, password, token


def read_ca_roots(paths):
    """Return the DER certificates of every --ca file, each checked with CPython's ssl."""
    roots = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise CommandError(
                "reading the CA file",
                "CA file not found: %s; give the path of the server's root CA certificate "
                "(PEM or DER) with --ca" % path,
            ) from None
        except OSError as exc:
            raise CommandError("reading the CA file", "cannot read %s: %s" % (path, exc.strerror or exc)) from exc
        try:
            certificates = ca_file_roots(data)
        except ConfigError as exc:
            raise CommandError("reading the CA file", "%s is not a valid CA file: %s" % (path, exc)) from None
        for der in certificates:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=der)
            except ssl.SSLError as exc:
                raise CommandError(
                    "reading the CA file",
                    "%s is not a valid PEM or DER certificate (%s)" % (path, exc.reason or exc),
                ) from exc
            roots.append(der)
    return roots


def read_body(args):
    """Return the body text from --body, from standard input, or an empty string."""
    if args.body is not None:
        return args.body
    stdin = sys.stdin
    if stdin is None or stdin.isatty():
        return ""
    data = stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError("reading the body", "standard input is not valid UTF-8 (at byte %d)" % exc.start) from exc


def read_attachments(paths):
    """Return (filename, data, content_type) for every --attach file."""
    attachments = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CommandError(
                "reading an attachment",
                "cannot read %s: %s; check the path given with --attach" % (path, exc.strerror or exc),
            ) from exc
        content_type, encoding = mimetypes.guess_type(path)
        if content_type is None or encoding is not None:
            # A compressed file ("x.tar.gz") is sent as it is, so its type is the generic one.
            content_type = "application/octet-stream"
        attachments.append((Path(path).name, data, content_type))
    return attachments


class Job:
    """Everything one delivery needs, gathered and checked before connecting."""

    def __init__(self, args, redactor):
        self.args = args
        self.host = args.host
        self.port = args.port or DEFAULT_PORTS[args.security]
        self.username, self.password, self.oauth2_token = read_credentials(args, redactor)
        self.ca_roots = read_ca_roots(args.ca) if args.ca else None
        self.body = read_body(args)
        self.attachments = read_attachments(args.attach)

    def options(self):
        """Return the keyword options of microsmtp.send() except ``log``."""
        args = self.args
        return {
            "port": self.port,
            "security": args.security,
            "username": self.username,
            "password": self.password,
            "oauth2_token": self.oauth2_token,
            "ca_roots": self.ca_roots,
            "server_hostname": args.server_name,
            "local_hostname": args.local_name,
            "timeout_ms": args.timeout,
        }

    def message_fields(self):
        args = self.args
        return {
            "sender": args.sender,
            "to": args.to,
            "cc": args.cc,
            "bcc": args.bcc,
            "subject": args.subject,
            "text": self.body,
        }

    def build_message(self):
        """Return the microsmtp Message; raises InvalidInputError for unsafe input."""
        attachments = [Attachment(*item) for item in self.attachments]
        return Message(attachments=attachments, **self.message_fields())


# -- output ------------------------------------------------------------------------------


def _cli_wording(message):
    for name, option in _OPTION_NAMES.items():
        message = re.sub(r"\b%s\b" % name, option, message)
    return message


def print_error(what, stage, transient, message, redactor):
    """Print the one-line error report to standard error."""
    line = "microsmtp: error: %s (%s, %s): %s" % (
        what,
        stage or "unknown",
        "transient" if transient else "permanent",
        _cli_wording(message),
    )
    print(_printable(redactor(line)), file=sys.stderr, flush=True)


def print_transcript_line(line, redactor):
    print(_printable(redactor(line)), file=sys.stderr, flush=True)


def summary(message_id, accepted, refused):
    """Return the one-line report of a delivery.

    accepted is a list of addresses; refused maps each refused address to the
    server's reply as text.
    """
    line = "delivered %s to %s" % (message_id, ", ".join(accepted))
    if refused:
        line += "; refused: " + "; ".join("%s (%s)" % (addr, reply) for addr, reply in refused.items())
    else:
        line += "; refused: none"
    return line


def error_status(config, transient):
    """Return the exit status for a failure: config, then transient or permanent."""
    if config:
        return EX_CONFIG
    return EX_TEMPFAIL if transient else EX_UNAVAILABLE


def report_library_error(job, error_type, stage, config, transient, message, redactor):
    """Print a library error (from either runtime) by its type name; return the exit status."""
    if error_type == "InvalidInputError":
        what = "invalid input"
        stage = stage or "input"
    elif config:
        what = "invalid configuration"
        stage = stage or "config"
    else:
        what = "sending to %s:%d failed" % (job.host, job.port)
    print_error(what, stage, transient, message, redactor)
    return error_status(config, transient)


# -- the command ---------------------------------------------------------------------------


def run_send(args):
    """Run ``microsmtp send`` with parsed arguments; return the exit status."""
    redactor = Redactor()
    try:
        if args.heap is not None and args.runtime != "micropython":
            raise CommandError(
                "checking the options",
                "--heap sets the MicroPython heap, so it needs --runtime micropython",
            )
        if args.runtime == "micropython" and not args.ca:
            raise CommandError(
                "checking the options",
                "--runtime micropython needs --ca FILE, because MicroPython has no system "
                "store of trusted root certificates",
            )
        job = Job(args, redactor)
        if args.runtime == "micropython":
            # Imported here because that module imports this one.
            from .send_micropython import send_with_micropython

            return send_with_micropython(job, redactor)
        return send_with_cpython(job, redactor)
    except CommandError as exc:
        print_error(exc.what, exc.stage, exc.transient, exc.message, redactor)
        return exc.status


def send_with_cpython(job, redactor):
    log = None
    if job.args.transcript:

        def log(line):
            print_transcript_line(line, redactor)

    try:
        message = job.build_message()
        result = asyncio.run(microsmtp.send(message, job.host, log=log, **job.options()))
    except SMTPError as exc:
        config = isinstance(exc, (ConfigError, InvalidInputError))
        return report_library_error(job, type(exc).__name__, exc.stage, config, exc.transient, exc.message, redactor)

    refused = {addr: reply.describe() for addr, reply in result.refused.items()}
    line = summary(result.message_id, list(result.accepted), refused)
    print(_printable(redactor(line)), flush=True)
    return EX_OK
