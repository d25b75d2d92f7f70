"""The ``microsmtp certs`` command: find the root CA a board needs and build the CA module.

``certs probe HOST:PORT`` connects from this PC, prints the certificate chain the
server sends and looks up the root that chain leads to in certifi's copy of Mozilla's
CA bundle. ``certs build`` writes ``ca_roots.py``, the module the board imports:
``ROOTS = (b"<DER>", ...)``, one root per entry, which the board loads with
``SSLContext.load_verify_locations(cadata=...)``, one call per root. With ``--pem FILE``
it also writes the roots as a PEM bundle, the form ``microsmtp send --ca`` and
``sim --ca`` take.

The root is looked up the way mbedTLS (the TLS library of MicroPython boards) builds
a path: starting from the server's certificate, at each step it first looks for a
trusted certificate that issued the current one. So the root reported is the first
trusted issuer reached from the leaf, which may differ from the last certificate the
server sends (for example a cross-signed root).
"""

import _ssl
import argparse
import datetime
import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

from . import common
from .common import EX_OK, EX_TEMPFAIL, EX_UNAVAILABLE, ToolError

DEFAULT_OUTPUT = "build/ca_roots.py"
DEFAULT_TIMEOUT_S = 15.0
# Heap for the MicroPython child that measures what parsing a root costs.
MEASURE_HEAP = "256K"

# Root CA subjects (RFC 4514, as cryptography prints them) that each provider's SMTP
# submission servers chain to. NOTE: compiled from the providers' and CAs' public
# statements about which CA they use, as known when this table was written; none
# of it was checked by connecting to the provider from here (tests reach only
# loopback). Confirm with `microsmtp certs probe HOST:PORT` before relying on it.
PROVIDER_ROOTS = {
    # smtp.gmail.com: Google Trust Services; RSA chains end at R1, ECDSA ones at R4.
    "gmail": (
        "CN=GTS Root R1,O=Google Trust Services LLC,C=US",
        "CN=GTS Root R4,O=Google Trust Services LLC,C=US",
    ),
    # smtp.office365.com, smtp-mail.outlook.com: Microsoft's TLS certificates chain
    # to DigiCert Global Root G2 since Microsoft moved off DigiCert Global Root CA.
    "outlook": ("CN=DigiCert Global Root G2,OU=www.digicert.com,O=DigiCert Inc,C=US",),
    # email-smtp.REGION.amazonaws.com: Amazon Trust Services, with the Starfield
    # cross-signature some older chains still end at.
    "ses": (
        "CN=Amazon Root CA 1,O=Amazon,C=US",
        "CN=Starfield Services Root Certificate Authority - G2,O=Starfield Technologies\\, Inc.,"
        "L=Scottsdale,ST=Arizona,C=US",
    ),
    # smtp.fastmail.com: DigiCert customer; G2 is DigiCert's current RSA root.
    "fastmail": ("CN=DigiCert Global Root G2,OU=www.digicert.com,O=DigiCert Inc,C=US",),
    # smtp.zoho.com: certificates from DigiCert and from Sectigo (USERTrust) have both
    # been reported; both roots are included.
    "zoho": (
        "CN=DigiCert Global Root G2,OU=www.digicert.com,O=DigiCert Inc,C=US",
        "CN=USERTrust RSA Certification Authority,O=The USERTRUST Network,L=Jersey City,ST=New Jersey,C=US",
    ),
    # smtp.mail.me.com: Apple's public server CAs are cross-signed by DigiCert Global Root G2.
    "icloud": ("CN=DigiCert Global Root G2,OU=www.digicert.com,O=DigiCert Inc,C=US",),
    # smtp.mail.yahoo.com: DigiCert customer.
    "yahoo": ("CN=DigiCert Global Root G2,OU=www.digicert.com,O=DigiCert Inc,C=US",),
}


# -- certificates ---------------------------------------------------------------------


def _x509():
    try:
        from cryptography import x509
    except ImportError:
        raise ToolError(
            "loading the certificate parser",
            "the Python package `cryptography` is missing; %s" % common.SETUP_HINT,
        ) from None
    return x509


class Certificate:
    """One X.509 certificate: DER bytes plus the fields the command prints."""

    def __init__(self, der):
        x509 = _x509()
        self.der = bytes(der)
        self.parsed = x509.load_der_x509_certificate(self.der)
        self.subject = self.parsed.subject.rfc4514_string()
        self.issuer = self.parsed.issuer.rfc4514_string()
        self.not_before = self.parsed.not_valid_before_utc
        self.not_after = self.parsed.not_valid_after_utc
        self.sha256 = hashlib.sha256(self.der).hexdigest()

    @property
    def self_signed(self):
        return self.parsed.subject == self.parsed.issuer

    def issued(self, child):
        """Return True if this certificate's key signed ``child`` and names match."""
        if self.parsed.subject != child.parsed.issuer:
            return False
        try:
            child.parsed.verify_directly_issued_by(self.parsed)
        except (ValueError, TypeError):
            return False
        except Exception as exc:
            # cryptography raises InvalidSignature, which is no ValueError.
            if type(exc).__name__ == "InvalidSignature":
                return False
            raise
        return True

    def validity(self):
        return "%s to %s" % (self.not_before.strftime("%Y-%m-%d"), self.not_after.strftime("%Y-%m-%d"))

    def pem(self):
        return ssl.DER_cert_to_PEM_cert(self.der)


def certificates_from_bytes(data, source):
    """Return the Certificates in PEM (one or more) or DER data; ``source`` names it in errors."""
    x509 = _x509()
    try:
        if b"-----BEGIN" in data:
            parsed = x509.load_pem_x509_certificates(data)
            return [Certificate(cert.public_bytes(_der_encoding())) for cert in parsed]
        return [Certificate(data)]
    except ValueError as exc:
        raise ToolError(
            "reading %s" % source,
            "not a PEM or DER X.509 certificate (%s); give the root CA certificate file" % exc,
        ) from None


def _der_encoding():
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


def read_certificate_file(path):
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ToolError("reading %s" % path, "%s; check the path given with --cert" % (exc.strerror or exc)) from None
    return certificates_from_bytes(data, path)


def load_bundle(path=None):
    """Return the Certificates of a PEM bundle (default: certifi's copy of Mozilla's)."""
    if path is None:
        try:
            import certifi
        except ImportError:
            raise ToolError(
                "loading the CA bundle",
                "the Python package `certifi` is missing; %s, or give --ca-bundle FILE" % common.SETUP_HINT,
            ) from None
        path = certifi.where()
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ToolError("reading the CA bundle %s" % path, str(exc.strerror or exc)) from None
    import warnings

    with warnings.catch_warnings():
        # A few roots in Mozilla's bundle have non-positive serial numbers, which
        # cryptography accepts with a deprecation warning.
        warnings.simplefilter("ignore")
        return certificates_from_bytes(data, path)


def find_root(chain, bundle):
    """Return the bundle certificate that anchors ``chain`` (leaf first), or None.

    At each step from the leaf up, a trusted issuer is looked for before the next
    certificate of the chain is used, as mbedTLS does.
    """
    for cert in chain:
        for candidate in bundle:
            if candidate.issued(cert):
                return candidate
        if cert.self_signed:
            break
    return None


# -- probe ----------------------------------------------------------------------------


def parse_address(value):
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError("invalid address %r: give HOST:PORT, e.g. smtp.example.com:587" % value)
    return host.strip("[]"), int(port)


def _reply_status(code):
    """Return the exit status for an unexpected reply code: 4xx is temporary, as in ``microsmtp send``."""
    return EX_TEMPFAIL if code.startswith("4") else EX_UNAVAILABLE


def _read_reply(stream, step):
    lines = []
    while True:
        line = stream.readline(1024)
        if not line:
            # A lost connection is temporary, as in `microsmtp send`.
            raise ToolError(step, "the server closed the connection; check HOST:PORT and --starttls", EX_TEMPFAIL)
        lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            break
    code = lines[-1][:3]
    return code, lines


def _starttls(sock, address):
    """Run the plaintext part of an SMTP STARTTLS dialogue on a connected socket."""
    stream = sock.makefile("rb")
    try:
        step = "reading the greeting of %s" % address
        code, lines = _read_reply(stream, step)
        if code != "220":
            raise ToolError(step, "expected 220, got: %s" % lines[-1], _reply_status(code))
        local = sock.getsockname()[0]
        literal = "[IPv6:%s]" % local if ":" in local else "[%s]" % local
        sock.sendall(b"EHLO " + literal.encode("ascii") + b"\r\n")
        code, lines = _read_reply(stream, "EHLO to %s" % address)
        if code != "250":
            raise ToolError("EHLO to %s" % address, "expected 250, got: %s" % lines[-1], _reply_status(code))
        if not any(line[4:].strip().upper() == "STARTTLS" for line in lines):
            raise ToolError(
                "EHLO to %s" % address,
                "the server does not offer STARTTLS; for implicit TLS (port 465) leave out --starttls",
                EX_UNAVAILABLE,
            )
        sock.sendall(b"STARTTLS\r\n")
        code, lines = _read_reply(stream, "STARTTLS at %s" % address)
        if code != "220":
            raise ToolError("STARTTLS at %s" % address, "expected 220, got: %s" % lines[-1], _reply_status(code))
    finally:
        stream.close()


def _open_tls(host, port, starttls, server_name, context, timeout):
    address = "%s:%d" % (host, port)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise ToolError("connecting to %s" % address, "timed out after %g s" % timeout, EX_TEMPFAIL) from None
    except OSError as exc:
        # Refused, unreachable or a name that does not resolve: temporary, as in `microsmtp send`.
        raise ToolError(
            "connecting to %s" % address,
            "%s; check HOST:PORT, or try again later" % (exc.strerror or exc),
            EX_TEMPFAIL,
        ) from None
    try:
        if starttls:
            _starttls(sock, address)
        return context.wrap_socket(sock, server_hostname=server_name)
    except TimeoutError:
        sock.close()
        raise ToolError("talking to %s" % address, "timed out after %g s" % timeout, EX_TEMPFAIL) from None
    except ssl.SSLError:
        sock.close()
        raise
    except OSError as exc:
        # A reset or closed connection, not a TLS failure (ssl.SSLError is handled above).
        sock.close()
        raise ToolError("talking to %s" % address, "%s; try again later" % (exc.strerror or exc), EX_TEMPFAIL) from None
    except BaseException:
        sock.close()
        raise


# CPython 3.13+ has SSLSocket.get_unverified_chain(); 3.10 to 3.12 have the same
# method only on the private SSLSocket._sslobj.
_CHAIN_AVAILABLE = hasattr(ssl.SSLSocket, "get_unverified_chain") or hasattr(
    getattr(_ssl, "_SSLSocket", None), "get_unverified_chain"
)


def _peer_chain(tls_sock):
    """Return the DER certificates the server sent, leaf first."""
    public = getattr(tls_sock, "get_unverified_chain", None)
    if public is not None:  # CPython 3.13+
        return [bytes(der) for der in public()]
    # CPython 3.10 to 3.12 have the same method only on the private _sslobj; it
    # returns _ssl.Certificate objects. Without it only the leaf is available.
    private = getattr(getattr(tls_sock, "_sslobj", None), "get_unverified_chain", None)
    if private is not None:
        return [cert.public_bytes(_ssl.ENCODING_DER) for cert in private()]
    return [tls_sock.getpeercert(binary_form=True)]


def fetch_chain(host, port, starttls, server_name, timeout):
    """Connect without verifying and return the server's chain as Certificates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Only to read the chain: nothing is sent over this connection, and the chain is
    # verified separately against the root found.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with _open_tls(host, port, starttls, server_name, context, timeout) as tls:
            return [Certificate(der) for der in _peer_chain(tls)]
    except ssl.SSLError as exc:
        raise ToolError(
            "TLS handshake with %s:%d" % (host, port),
            "%s; if the port speaks plaintext first (587, 25), add --starttls" % exc,
            EX_UNAVAILABLE,
        ) from None


def verify_with_root(host, port, starttls, server_name, root, timeout):
    """Return None if CPython verifies chain and name with ``root`` alone, else the error text."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=root.der)
    try:
        with _open_tls(host, port, starttls, server_name, context, timeout):
            return None
    except ssl.SSLError as exc:
        return str(exc)


def print_chain(chain, out):
    for index, cert in enumerate(chain):
        print("certificate %d:" % index, file=out)
        print("  subject:  %s" % cert.subject, file=out)
        print("  issuer:   %s" % cert.issuer, file=out)
        print("  validity: %s" % cert.validity(), file=out)
        print("  sha256:   %s" % cert.sha256, file=out)


def run_probe(args):
    host, port = args.address
    server_name = args.server_name or host
    out = sys.stdout
    # Loaded first, so a wrong --ca-bundle fails (78) before any network step.
    bundle = load_bundle(args.ca_bundle)
    chain = fetch_chain(host, port, args.starttls, server_name, args.timeout)
    print("%s:%d sent %d certificate(s)%s:" % (host, port, len(chain), " after STARTTLS" if args.starttls else ""))
    print_chain(chain, out)
    if len(chain) == 1 and not _CHAIN_AVAILABLE:
        print("note: this Python shows only the server's own certificate, not its intermediates")

    bundle_name = args.ca_bundle or "certifi's Mozilla CA bundle"
    root = find_root(chain, bundle)
    status = EX_OK
    if root is None:
        print("root: not found in %s; get the root CA certificate from the CA named in the" % bundle_name)
        print("      last issuer above and pass it to `microsmtp certs build --cert FILE`")
        status = EX_UNAVAILABLE
    else:
        print("root the board needs: %s" % root.subject)
        print("  validity: %s" % root.validity())
        print("  sha256:   %s (%d bytes DER)" % (root.sha256, len(root.der)))
        problem = verify_with_root(host, port, args.starttls, server_name, root, args.timeout)
        if problem is None:
            print("checked: CPython verifies the chain and the name %s with this root alone" % server_name)
        else:
            print("warning: verification with this root alone failed: %s" % problem)
            status = EX_UNAVAILABLE
    if args.save:
        result = {
            "host": host,
            "port": port,
            "server_name": server_name,
            "starttls": args.starttls,
            "chain": [cert.pem() for cert in chain],
            "root": root.pem() if root is not None else None,
            "root_subject": root.subject if root is not None else None,
        }
        write_output(args.save, json.dumps(result, indent=2) + "\n", "--save")
        print("saved to %s (use: microsmtp certs build --probe %s)" % (args.save, args.save))
    return status


def write_output(path, text, option):
    """Write text to path, creating its folder; raise ToolError naming ``option`` on failure."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ToolError("writing %s" % path, "%s; check %s" % (exc.strerror or exc, option)) from None


# -- build ----------------------------------------------------------------------------


def provider_roots(names, bundle):
    """Return [(Certificate, source)] for the named providers, looked up in bundle."""
    by_subject = {}
    for cert in bundle:
        by_subject.setdefault(cert.subject, cert)
    found = []
    for name in names:
        for subject in PROVIDER_ROOTS[name]:
            cert = by_subject.get(subject)
            if cert is None:
                raise ToolError(
                    "looking up the roots of provider %s" % name,
                    "%s is not in the CA bundle; update certifi or probe the server and use --probe" % subject,
                )
            found.append((cert, "provider " + name))
    return found


def probe_roots(path):
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ToolError("reading the probe result %s" % path, "%s; write it with certs probe --save" % exc) from None
    if not isinstance(result, dict) or not result.get("root"):
        raise ToolError(
            "reading the probe result %s" % path,
            "it names no root (the probe found none in the bundle); pass the root with --cert FILE",
        )
    certs = certificates_from_bytes(result["root"].encode("ascii"), path)
    return [(cert, "probe of %s:%s" % (result.get("host"), result.get("port"))) for cert in certs]


def collect_roots(args):
    """Return the deduplicated [(Certificate, sources)] from all inputs, in input order."""
    entries = []
    if args.provider:
        entries.extend(provider_roots(args.provider, load_bundle(args.ca_bundle)))
    for path in args.cert or ():
        entries.extend((cert, str(path)) for cert in read_certificate_file(path))
    for path in args.probe or ():
        entries.extend(probe_roots(path))
    unique = {}
    for cert, source in entries:
        if cert.sha256 in unique:
            unique[cert.sha256][1].append(source)
        else:
            unique[cert.sha256] = (cert, [source])
    return list(unique.values())


def render_module(roots):
    """Return the source text of ca_roots.py for [(Certificate, sources)]."""
    lines = [
        "# CA roots for microsmtp, written by `microsmtp certs build`: do not edit or commit.",
        "# One DER root certificate per entry; the board loads each with",
        "# SSLContext.load_verify_locations(cadata=root).",
        "",
        "ROOTS = (",
    ]
    for index, (cert, sources) in enumerate(roots, 1):
        lines.append("    # %d: %s" % (index, cert.subject))
        lines.append("    # valid %s, sha256 %s, from %s" % (cert.validity(), cert.sha256, ", ".join(sources)))
        for offset in range(0, len(cert.der), 48):
            chunk = cert.der[offset : offset + 48]
            lines.append("    " + "".join(["b'", "".join("\\x%02x" % b for b in chunk), "'"]))
        lines[-1] += ","
    lines.append(")")
    return "\n".join(lines) + "\n"


_MEASURE_SCRIPT = """
import gc, ssl, sys
for path in sys.argv[1:]:
    f = open(path, "rb")
    der = f.read()
    f.close()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    gc.collect()
    before = gc.mem_free()
    context.load_verify_locations(cadata=der)
    gc.collect()
    print("heap", path, before - gc.mem_free())
    context = None
"""


def measure_heap(roots):
    """Return {sha256: heap bytes} used by load_verify_locations under the unix port, or None.

    Each root is parsed into its own SSLContext in one MicroPython process. Returns
    None (and prints why) when the unix port is missing or fails.
    """
    micropython = common.find_executable("micropython")
    if micropython is None:
        print("heap: not measured: the MicroPython unix port `micropython` is missing; %s" % common.SETUP_HINT)
        return None
    with tempfile.TemporaryDirectory(prefix="microsmtp-certs-") as directory:
        paths = []
        for cert, _sources in roots:
            path = os.path.join(directory, cert.sha256 + ".der")
            Path(path).write_bytes(cert.der)
            paths.append(path)
        script = os.path.join(directory, "measure.py")
        Path(script).write_text(_MEASURE_SCRIPT)
        try:
            process = subprocess.run(
                [micropython, "-X", "heapsize=" + MEASURE_HEAP, script, *paths],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            print("heap: not measured: the MicroPython unix port did not finish within 60 s")
            return None
    if process.returncode != 0:
        print("heap: not measured: a root failed to parse under MicroPython: %s" % process.stderr.strip()[-300:])
        return None
    result = {}
    for line in process.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "heap":
            result[Path(parts[1]).stem] = int(parts[2])
    return result


def render_pem(roots):
    """Return a PEM bundle of [(Certificate, sources)], each root preceded by comment lines."""
    blocks = []
    for cert, sources in roots:
        # Text outside BEGIN/END lines is ignored by PEM readers (OpenSSL, CPython's ssl,
        # send --ca), but send --ca rejects non-ASCII bytes, and some subjects have them.
        header = "# %s\n# valid %s, sha256 %s, from %s\n" % (
            cert.subject.encode("ascii", "backslashreplace").decode("ascii"),
            cert.validity(),
            cert.sha256,
            ", ".join(sources).encode("ascii", "backslashreplace").decode("ascii"),
        )
        blocks.append(header + cert.pem())
    return "".join(blocks)


def run_build(args):
    if args.no_module and not args.pem:
        raise ToolError("building the CA files", "--no-module writes nothing without --pem FILE")

    roots = collect_roots(args)
    if not roots:
        raise ToolError(
            "building the CA module",
            "no roots given; use --provider NAME, --cert FILE or --probe FILE (see microsmtp certs build --help)",
        )
    heap = None if args.no_measure else measure_heap(roots)
    now = datetime.datetime.now(datetime.UTC)
    total = 0
    print("%d root(s):" % len(roots))
    for index, (cert, sources) in enumerate(roots, 1):
        total += len(cert.der)
        heap_text = "not measured" if heap is None else "%d bytes" % heap.get(cert.sha256, -1)
        print("  %d. %s" % (index, cert.subject))
        print("     from: %s" % ", ".join(sources))
        print(
            "     valid: %s; DER %d bytes; unix-port heap delta when parsed: %s"
            % (cert.validity(), len(cert.der), heap_text)
        )
        if cert.not_after < now:
            print("     warning: expired; servers chaining to it will fail verification")
        elif cert.not_after < now + datetime.timedelta(days=365):
            print("     warning: expires within a year")
    print("total DER: %d bytes" % total)
    if heap is not None:
        print(
            "note: the unix port's mbedTLS allocates parsed certificates outside the Python heap, so its delta"
            " stays small; on rp2 (Pico W) parsing takes GC heap: at least the DER size per root, plus mbedTLS's"
            " certificate structure"
        )

    if not args.no_module:
        write_output(args.output, render_module(roots), "-o")
        print("wrote %s" % args.output)
    if args.pem:
        write_output(args.pem, render_pem(roots), "--pem")
        print("wrote %s (PEM bundle, for microsmtp send --ca and sim --ca)" % args.pem)
    return EX_OK


# -- command line ---------------------------------------------------------------------


def add_parser(subcommands):
    parser = subcommands.add_parser(
        "certs",
        help="find the root CA a server needs and build the board's CA module",
        description=(
            "Find which root CA certificate an SMTP server's chain needs (probe) and write "
            "ca_roots.py, the module with the roots the board trusts (build)."
        ),
        allow_abbrev=False,
    )
    actions = parser.add_subparsers(dest="certs_action", metavar="ACTION")
    actions.required = True

    probe = actions.add_parser(
        "probe",
        help="connect to a server from this PC and print its chain and the root it needs",
        description=(
            "Connect to HOST:PORT with CPython (this PC, not the board), print the certificate "
            "chain the server sends and the root CA in certifi's Mozilla bundle that anchors it, "
            "then check that this root alone verifies the chain and the name."
        ),
        epilog=(
            "exit status (as for microsmtp send): 0 root found and checked; 75 temporary failure: "
            "connection refused, reset or timed out, or a 4xx reply (try again later); 69 permanent "
            "failure: TLS handshake failed, no STARTTLS, a 5xx reply, root not found in the bundle, or "
            "verification with the root failed; 78 invalid input (--ca-bundle, --save); 2 usage error"
        ),
        allow_abbrev=False,
    )
    probe.add_argument(
        "address", type=parse_address, metavar="HOST:PORT", help="server address, e.g. smtp.gmail.com:587"
    )
    probe.add_argument(
        "--starttls",
        action="store_true",
        help="say EHLO and STARTTLS before the TLS handshake (ports 587 and 25); without it TLS starts at once (465)",
    )
    probe.add_argument("--server-name", metavar="NAME", help="name the certificate must match (default: HOST)")
    probe.add_argument("--ca-bundle", metavar="FILE", help="PEM bundle to look the root up in (default: certifi's)")
    probe.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S", help="seconds per network step (default: 15)"
    )
    probe.add_argument("--save", metavar="FILE", help="write the chain and root as JSON, for certs build --probe FILE")
    probe.set_defaults(handler=_handle(run_probe))

    build = actions.add_parser(
        "build",
        help="write the CA module (ca_roots.py) from providers, certificate files or probe results",
        description=(
            "Write ca_roots.py with ROOTS = (DER bytes, ...), one entry per distinct root, from "
            "named providers, PEM or DER files and probe results, and with --pem the same roots as a "
            "PEM bundle for the host tools. Prints each root's size and the "
            "heap that parsing it takes under the MicroPython unix port."
        ),
        epilog="providers and their roots: %s. The provider table was compiled from public "
        "statements and not checked live; confirm with certs probe."
        % "; ".join(
            "%s: %s" % (name, " + ".join(s.split(",")[0][3:] for s in subjects))
            for name, subjects in PROVIDER_ROOTS.items()
        ),
        allow_abbrev=False,
    )
    build.add_argument(
        "--provider",
        nargs="+",
        action="extend",
        choices=sorted(PROVIDER_ROOTS),
        metavar="NAME",
        help="mail provider whose roots to include: %s" % ", ".join(sorted(PROVIDER_ROOTS)),
    )
    build.add_argument("--cert", action="append", metavar="FILE", help="root certificate file, PEM or DER; repeatable")
    build.add_argument("--probe", action="append", metavar="FILE", help="result of certs probe --save; repeatable")
    build.add_argument(
        "--ca-bundle", metavar="FILE", help="PEM bundle the provider roots come from (default: certifi's)"
    )
    build.add_argument(
        "-o", "--output", default=DEFAULT_OUTPUT, metavar="FILE", help="module to write (default: %s)" % DEFAULT_OUTPUT
    )
    build.add_argument(
        "--pem",
        metavar="FILE",
        help="also write the same roots as a PEM bundle, for `microsmtp send --ca FILE` and `sim --ca FILE`",
    )
    build.add_argument("--no-module", action="store_true", help="write only the --pem bundle, not the CA module (-o)")
    build.add_argument("--no-measure", action="store_true", help="skip the heap measurement under the unix port")
    build.set_defaults(handler=_handle(run_build))
    return parser


def _handle(function):
    def handler(args):
        try:
            return function(args)
        except ToolError as error:
            return common.report("certs", error)

    return handler
