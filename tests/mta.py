"""A private Postfix with Dovecot SASL on loopback, started from a temporary directory.

``MailServer`` writes a Postfix configuration (``postfix -c DIR/etc``) and a Dovecot
configuration (``dovecot -c DIR/dovecot/dovecot.conf``) into its own directory, starts
both, and stops them through their pid files. Nothing outside that directory is read
or written, except that Postfix and Dovecot run under the system users that their
Debian packages create (postfix, postdrop, dovecot, dovenull).

Listeners, each on a free port of 127.0.0.1 chosen at start (``ports[name]``):

* ``submission``: STARTTLS required before anything else (``smtpd_tls_security_level =
  encrypt``), AUTH PLAIN and LOGIN only after TLS (``smtpd_tls_auth_only``), and only
  authenticated clients may send.
* ``submission_login``: the same, but only AUTH LOGIN is offered.
* ``submission_small``: the same as ``submission`` with ``SMALL_SIZE_LIMIT`` as SIZE.
* ``smtps``: implicit TLS (``smtpd_tls_wrappermode``) with AUTH PLAIN and LOGIN.
* ``plain``: no TLS and no AUTH, for tests that must not authenticate.

Mail for the addresses in ``MAILBOXES`` is delivered by the virtual(8) agent to
Maildirs under ``DIR/mail``; every other domain is refused with "554 5.7.1 Relay
access denied", and a relay transport that could reach another host does not exist.
Postfix logs to ``DIR/maillog`` (postlogd), Dovecot to ``DIR/dovecot/dovecot.log``.

Nothing here imports pytest; tests/conftest_mta.py wraps MailServer in a fixture.
"""

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
USERS = {"alice": "secret"}
DOMAIN = "example.com"
MAILBOXES = ("ops@example.com", "team@example.com", "alice@example.com")
# SIZE announced on the "submission_small" listener, in octets.
SMALL_SIZE_LIMIT = 4096
LISTENERS = ("submission", "submission_login", "submission_small", "smtps", "plain")

POSTFIX = "/usr/sbin/postfix"
DOVECOT = "/usr/sbin/dovecot"
MISSING_MESSAGE = (
    "Postfix and Dovecot are needed for these tests but %s was not found; run `bash .ci/run`, "
    "or `apt-get install postfix dovecot-core` as root"
)
START_TIMEOUT = 30


class MTAError(Exception):
    """Postfix or Dovecot could not be set up, started or stopped."""


def missing_programs():
    """Return the paths of the Postfix and Dovecot programs that are not installed."""
    return [path for path in (POSTFIX, DOVECOT) if not os.access(path, os.X_OK)]


def free_ports(count):
    """Return ``count`` TCP ports of 127.0.0.1 that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _run(command, output_path):
    """Run a command whose daemons outlive it; their output goes to ``output_path``.

    A pipe would stay open in the daemons, so waiting for it would never end.
    """
    with open(output_path, "ab") as output:
        start = output.tell()
        returncode = subprocess.run(
            command, stdin=subprocess.DEVNULL, stdout=output, stderr=output, timeout=60
        ).returncode
    if returncode != 0:
        with open(output_path, "rb") as output:
            output.seek(start)
            text = output.read().decode(errors="replace")
        raise MTAError("%s failed with exit status %d:\n%s" % (" ".join(command), returncode, text))


def _read_pid(path):
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A child of this process that exited stays a zombie until reaped.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return waited == 0


def _wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise MTAError("%s did not happen within %d s" % (what, timeout))
        time.sleep(0.05)


class MailServer:
    """Postfix and Dovecot run from ``directory`` (created when None); see the module docstring.

    ``cert`` is the trustme.LeafCert both TLS listeners present.
    """

    def __init__(self, cert, directory=None):
        missing = missing_programs()
        if missing:
            raise MTAError(MISSING_MESSAGE % " and ".join(missing))
        if directory is None:
            directory = tempfile.mkdtemp(prefix="microsmtp-mta-")
        self.directory = Path(directory)
        # Postfix and Dovecot drop root privileges, so they must be able to enter it.
        self.directory.chmod(0o755)
        self.host = HOST
        self.cert = cert
        self.users = dict(USERS)
        self.ports = dict(zip(LISTENERS, free_ports(len(LISTENERS)), strict=True))
        self.config_dir = self.directory / "etc"
        self.queue_dir = self.directory / "queue"
        self.data_dir = self.directory / "data"
        self.mail_dir = self.directory / "mail"
        self.dovecot_dir = self.directory / "dovecot"
        self.log_path = self.directory / "maillog"
        self.sasl_socket = self.queue_dir / "private" / "auth"
        self._postfix_started = False
        self._dovecot_started = False

    # -- start and stop ----------------------------------------------------------------

    def start(self):
        try:
            self._write_files()
            self._start_dovecot()
            self._start_postfix()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Stop Postfix and Dovecot through their pid files. Safe to call twice."""
        errors = []
        if self._postfix_started:
            self._postfix_started = False
            pid = _read_pid(self.queue_dir / "pid" / "master.pid")
            if pid is not None:
                subprocess.run(
                    [POSTFIX, "-c", str(self.config_dir), "stop"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=60,
                )
            errors += self._wait_for_exit(pid, "Postfix master")
        if self._dovecot_started:
            self._dovecot_started = False
            pid = _read_pid(self.dovecot_dir / "run" / "master.pid")
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            errors += self._wait_for_exit(pid, "Dovecot master")
        if errors:
            raise MTAError("; ".join(errors))

    def _wait_for_exit(self, pid, name):
        if pid is None:
            return []
        try:
            _wait_until(lambda: not _alive(pid), 10, "exit of %s (pid %d)" % (name, pid))
        except MTAError as exc:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return [str(exc)]
        return []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def _start_dovecot(self):
        # Set first, so that stop() also ends a Dovecot that started but failed later.
        self._dovecot_started = True
        _run([DOVECOT, "-c", str(self.dovecot_dir / "dovecot.conf")], self.directory / "commands.log")
        _wait_until(self.sasl_socket.exists, START_TIMEOUT, "Dovecot creating %s" % self.sasl_socket)

    def _start_postfix(self):
        output = self.directory / "commands.log"
        _run([POSTFIX, "-c", str(self.config_dir), "check"], output)
        self._postfix_started = True
        _run([POSTFIX, "-c", str(self.config_dir), "start"], output)
        for name, port in self.ports.items():
            _wait_until(
                lambda port=port: self._accepts(port),
                START_TIMEOUT,
                "Postfix listening for %s on port %d" % (name, port),
            )
        # Each check above left a "disconnect from" line; once all are logged, a test
        # that reads the log from its current end sees only its own connections.
        _wait_until(
            lambda: self.log_text().count(" disconnect from ") >= len(self.ports),
            START_TIMEOUT,
            "Postfix logging the start-up checks in %s" % self.log_path,
        )

    def _accepts(self, port):
        try:
            with socket.create_connection((self.host, port), timeout=1):
                return True
        except OSError:
            return False

    # -- configuration ------------------------------------------------------------------

    def _write_files(self):
        postfix = pwd.getpwnam("postfix")
        for path in (self.config_dir, self.queue_dir, self.mail_dir, self.dovecot_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        os.chown(self.data_dir, postfix.pw_uid, postfix.pw_gid)
        # The virtual agent delivers with the postfix user's ids, see virtual_uid_maps.
        os.chown(self.mail_dir, postfix.pw_uid, postfix.pw_gid)
        # postfix check creates the queue's subdirectories; private/ must exist first
        # for Dovecot's socket, with the owner and mode postfix check expects.
        private = self.queue_dir / "private"
        private.mkdir(exist_ok=True)
        os.chown(private, postfix.pw_uid, 0)
        private.chmod(0o700)

        tls_file = self.config_dir / "server.pem"
        self.cert.private_key_and_cert_chain_pem.write_to_path(str(tls_file))
        tls_file.chmod(0o600)

        (self.config_dir / "vmailbox").write_text(
            "".join("%s %s/%s/\n" % (address, DOMAIN, address.split("@")[0]) for address in MAILBOXES)
        )
        (self.config_dir / "main.cf").write_text(self._main_cf(postfix, tls_file))
        (self.config_dir / "master.cf").write_text(self._master_cf())

        users = self.dovecot_dir / "users"
        users.write_text("".join("%s:{PLAIN}%s::::::\n" % item for item in self.users.items()))
        dovecot_group = grp.getgrnam("dovecot")
        os.chown(users, 0, dovecot_group.gr_gid)
        users.chmod(0o640)
        (self.dovecot_dir / "dovecot.conf").write_text(self._dovecot_conf(users))

    def _main_cf(self, postfix, tls_file):
        settings = [
            ("compatibility_level", "3.6"),
            ("queue_directory", self.queue_dir),
            ("data_directory", self.data_dir),
            ("mail_owner", "postfix"),
            ("setgid_group", "postdrop"),
            ("maillog_file", self.log_path),
            ("maillog_file_prefixes", self.directory),
            ("myhostname", "mx.example.net"),
            ("mydomain", "example.net"),
            ("myorigin", "$myhostname"),
            ("mydestination", ""),
            ("inet_interfaces", "loopback-only"),
            ("inet_protocols", "ipv4"),
            ("mynetworks", "127.0.0.0/8"),
            ("relay_domains", ""),
            ("alias_maps", ""),
            ("alias_database", ""),
            ("biff", "no"),
            ("append_dot_mydomain", "no"),
            # The client IP is not looked up in DNS and headers are left as the client wrote them.
            ("smtpd_peername_lookup", "no"),
            ("smtpd_client_port_logging", "yes"),
            ("local_header_rewrite_clients", ""),
            # Nothing ever leaves this server: other domains are refused at RCPT, and
            # the transports that would connect to another host are error transports.
            ("smtpd_relay_restrictions", "reject_unauth_destination"),
            ("default_transport", "error:5.7.1 this test server never relays"),
            ("relay_transport", "error:5.7.1 this test server never relays"),
            ("smtp_dns_support_level", "disabled"),
            ("virtual_mailbox_domains", DOMAIN),
            ("virtual_mailbox_base", self.mail_dir),
            ("virtual_mailbox_maps", "texthash:%s" % (self.config_dir / "vmailbox")),
            ("virtual_uid_maps", "static:%d" % postfix.pw_uid),
            ("virtual_gid_maps", "static:%d" % postfix.pw_gid),
            ("virtual_mailbox_limit", "0"),
            ("message_size_limit", "10240000"),
            ("smtpd_tls_chain_files", tls_file),
            ("smtpd_tls_security_level", "none"),
            ("smtpd_tls_session_cache_database", ""),
            ("smtpd_tls_auth_only", "yes"),
            ("smtpd_sasl_type", "dovecot"),
            ("smtpd_sasl_path", self.sasl_socket),
            ("smtpd_sasl_auth_enable", "no"),
        ]
        return "".join("%s = %s\n" % (name, value) for name, value in settings)

    def _master_cf(self):
        # chroot is "n" everywhere: the service needs the absolute paths above.
        submission = [
            "-o smtpd_tls_security_level=encrypt",
            "-o smtpd_sasl_auth_enable=yes",
            "-o smtpd_recipient_restrictions=permit_sasl_authenticated,reject",
        ]
        listeners = {
            "submission": submission,
            "submission_login": submission + ["-o smtpd_sasl_mechanism_filter=login"],
            "submission_small": submission + ["-o message_size_limit=%d" % SMALL_SIZE_LIMIT],
            "smtps": [
                "-o smtpd_tls_wrappermode=yes",
                "-o smtpd_tls_security_level=encrypt",
                "-o smtpd_sasl_auth_enable=yes",
                "-o smtpd_recipient_restrictions=permit_sasl_authenticated,reject",
            ],
            "plain": ["-o smtpd_tls_security_level=none", "-o smtpd_sasl_auth_enable=no"],
        }
        lines = []
        for name in LISTENERS:
            lines.append("%s:%d inet n - n - - smtpd" % (self.host, self.ports[name]))
            lines.append("  -o syslog_name=postfix/%s" % name)
            lines.extend("  " + option for option in listeners[name])
        lines += [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "virtual unix - n n - - virtual",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        return "\n".join(lines) + "\n"

    def _dovecot_conf(self, users):
        run = self.dovecot_dir / "run"
        state = self.dovecot_dir / "state"
        state.mkdir(exist_ok=True)
        return """\
base_dir = {run}
state_dir = {state}
log_path = {log}
protocols =
ssl = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = static
  args = uid=dovenull gid=dovenull home=/nonexistent
}}
service auth {{
  unix_listener {socket} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
""".format(run=run, state=state, log=self.dovecot_dir / "dovecot.log", users=users, socket=self.sasl_socket)

    # -- reading results ---------------------------------------------------------------

    def mailbox(self, address):
        """Return the Maildir of ``address``."""
        return self.mail_dir / DOMAIN / address.split("@")[0]

    def delivered(self, address):
        """Return the raw files delivered to ``address`` so far, oldest first."""
        new = self.mailbox(address) / "new"
        if not new.is_dir():
            return []
        paths = sorted(new.iterdir(), key=lambda path: path.stat().st_mtime_ns)
        return [path.read_bytes() for path in paths]

    def wait_for_message(self, address, message_id, timeout=15):
        """Return the delivered file of ``address`` that has this Message-ID.

        Raises MTAError with the end of the Postfix log when it does not arrive in time.
        """
        marker = b"\nMessage-ID: " + message_id.encode() + b"\n"
        deadline = time.monotonic() + timeout
        while True:
            for content in self.delivered(address):
                if marker in content:
                    return content
            if time.monotonic() > deadline:
                raise MTAError(
                    "no message %s delivered to %s within %d s; end of %s:\n%s"
                    % (message_id, address, timeout, self.log_path, self.log_tail())
                )
            time.sleep(0.05)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=30):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, text, start=0, timeout=10):
        """Return the Postfix log after offset ``start`` once it contains ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text()[start:]
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise MTAError("%r did not appear in %s within %d s:\n%s" % (text, self.log_path, timeout, log[-3000:]))
            time.sleep(0.05)

    def cleanup(self):
        """Remove the directory; only after stop()."""
        shutil.rmtree(self.directory, ignore_errors=True)


def strip_trace_headers(content):
    """Return delivered Maildir content without the headers Postfix put in front.

    Postfix prepends Return-Path, X-Original-To, Delivered-To and Received (with folded continuation
    lines) and stores lines with LF. The rest is returned with CRLF line ends, which is
    exactly what the client sent when the client's lines all ended in CRLF.
    """
    lines = content.split(b"\n")
    index = 0
    prepended = (b"return-path:", b"x-original-to:", b"delivered-to:", b"received:")
    while index < len(lines):
        line = lines[index]
        if line.lower().startswith(prepended) or (index and line[:1] in (b" ", b"\t")):
            index += 1
            continue
        break
    return b"\r\n".join(lines[index:])
