"""The ``microsmtp deploy`` command: put the alert firmware onto a board with mpremote.

Steps: compile firmware/ with mpy-cross for the board's architecture into
build/deploy/ARCH/ (main.py stays source, because a board runs main.py only as a .py
file), add the CA module (compiled) and the user's config.json, ask the board for the
SHA-256 of each of its copies, copy only the files that differ, check the SHA-256 of
every file again, optionally run the firmware's self-test, and reset the board.

Every mpremote run uses ``resume``, so the board is not soft-reset between steps (on
the virtual board a soft reset would end the MicroPython process).
"""

import hashlib
import importlib.util
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

from . import common, mpy
from .common import EX_IOERR, EX_OK, EX_SOFTWARE, EX_UNAVAILABLE, ToolError

MPREMOTE_TIMEOUT_S = 300
# Package folders that deploy owns on the board: files in them that firmware/ no
# longer has are removed, so an old module cannot be imported by mistake.
MANAGED_PACKAGES = ("microsmtp", "alerts")
CA_MODULE_NAME = "ca_roots"
CONFIG_NAME = "config.json"
# Files on the board that smtp.ca_file must not name: what deploy copies, and what the
# firmware writes at run time.
BOARD_FILES = (
    "main.py",
    "boot.py",
    CONFIG_NAME,
    "board.json",
    "failed_starts.txt",
    "rule_state.json",
    "sleep_state.json",
    "oauth2_token.json",
)
# Above this size a CA file takes much of a small board's heap to load: about 3.5 bytes
# per byte of PEM on the unix port, while the roots are parsed.
CA_FILE_WARN_BYTES = 16384

# Runs on the board. Creates folders, removes stale files, then prints the .mpy
# version and one "HASH path digest" line per file (digest "-" when missing).
_PREPARE_SCRIPT = """
import os, sys, hashlib, binascii
def _isdir(p):
    try:
        return os.stat(p)[0] & 0x4000 != 0
    except OSError:
        return False
for _d in %(dirs)r:
    if not _isdir(_d):
        os.mkdir(_d)
for _d, _keep in %(managed)r:
    if _isdir(_d):
        for _n in os.listdir(_d):
            if (_n.endswith('.py') or _n.endswith('.mpy')) and _n not in _keep:
                os.remove(_d + '/' + _n)
                print('REMOVED', _d + '/' + _n)
for _p in %(stale)r:
    try:
        os.remove(_p)
        print('REMOVED', _p)
    except OSError:
        pass
print('MPY', getattr(sys.implementation, '_mpy', 0))
"""

_HASH_SCRIPT = """
import hashlib, binascii
def _hash(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return '-'
    h = hashlib.sha256()
    b = bytearray(512)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(b[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
for _p in %(files)r:
    print('HASH', _p, _hash(_p))
"""


class Mpremote:
    """Runs mpremote commands against one board, each run with ``resume``."""

    def __init__(self, port):
        self.port = port
        self.executable = common.require_executable("mpremote", "running mpremote", package="mpremote")

    def run(self, *commands, what):
        """Run ``mpremote connect PORT resume COMMANDS...``; return its stdout or raise ToolError."""
        argv = [self.executable, "connect", self.port, "resume", *commands]
        try:
            process = subprocess.run(argv, capture_output=True, text=True, timeout=MPREMOTE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ToolError(
                what,
                "mpremote did not finish within %d s; check the board and --port" % MPREMOTE_TIMEOUT_S,
                EX_UNAVAILABLE,
            ) from None
        if process.returncode != 0:
            detail = (process.stderr.strip() or process.stdout.strip() or "no output").splitlines()[-1]
            raise ToolError(
                what,
                "mpremote exited with status %d: %s; check that the board is connected at %s and not "
                "in use by another program" % (process.returncode, detail, self.port),
                EX_UNAVAILABLE,
            )
        return process.stdout

    def exec(self, script, what):
        return self.run("exec", script, what=what)


def sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _parse_hashes(output):
    hashes = {}
    for line in output.splitlines():
        # The path may contain spaces (smtp.ca_file), the digest does not.
        parts = line.strip().rsplit(" ", 1)
        if len(parts) == 2 and parts[0].startswith("HASH "):
            hashes[parts[0][5:]] = None if parts[1] == "-" else parts[1]
    return hashes


def resolve_arch(args, board_mpy):
    """Return the mpy-cross architecture from --arch, --board or the board's sys.implementation._mpy."""
    version, _sub_version, board_arch = mpy.decode_sys_mpy(board_mpy) if board_mpy else (None, None, None)
    if version is not None and version != mpy.MPY_VERSION:
        raise ToolError(
            "checking the board's MicroPython",
            "it loads .mpy version %d, but mpy-cross writes version %d; install MicroPython >= 1.22 "
            "on the board (microsmtp flash)" % (version, mpy.MPY_VERSION),
        )
    if args.arch:
        return args.arch
    if args.board:
        return mpy.BOARD_ARCHES[args.board]
    if board_arch is None:
        raise ToolError(
            "choosing the .mpy architecture",
            "the board does not report one (sys.implementation._mpy); give --arch or --board",
        )
    return board_arch


class Plan:
    """The files to put on the board: {remote path: local file}, plus folders and stale paths."""

    def __init__(self):
        self.files = {}
        self.stale = []

    def add(self, remote, local):
        self.files[remote] = Path(local)
        if remote.endswith(".mpy"):
            # A .py beside a .mpy is imported first and would hide the new code.
            self.stale.append(remote[: -len(".mpy")] + ".py")

    def directories(self):
        folders = set()
        for remote in self.files:
            parts = remote.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                folders.add("/".join(parts[:depth]))
        return sorted(folders, key=lambda folder: (folder.count("/"), folder))

    def managed(self):
        """Return [(package folder, names to keep)] for the packages deploy owns."""
        result = []
        for package in MANAGED_PACKAGES:
            keep = [remote.split("/", 1)[1] for remote in self.files if remote.startswith(package + "/")]
            result.append((package, keep))
        return result


def _ca_module(args):
    if args.ca_module is None:
        path = common.DEFAULT_CA_MODULE
        if not path.is_file():
            raise ToolError(
                "finding the CA module",
                "%s not found; build it with `microsmtp certs build` or give --ca-module FILE "
                "(or --no-ca-module if the board already has one)" % path,
            )
        return path
    path = Path(args.ca_module)
    if not path.is_file():
        raise ToolError("finding the CA module", "%s not found; check --ca-module" % path)
    return path


def build_plan(args, arch, stage_dir):
    """Compile and stage everything to copy; return the Plan."""
    plan = Plan()
    firmware_dir = common.require_checkout_dir(args.firmware_dir, "finding firmware/")
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    if args.frozen:
        main = firmware_dir / "main.py"
        if main.is_file():
            target = stage_dir / "main.py"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(main, target)
            plan.add("main.py", target)
    else:
        for remote, local in mpy.compile_tree(firmware_dir, stage_dir, arch):
            plan.add(remote, local)
        if not args.no_ca_module:
            ca_source = _ca_module(args)
            target = stage_dir / (CA_MODULE_NAME + ".mpy")
            mpy.compile_file(ca_source, target, arch, source_name=CA_MODULE_NAME + ".py")
            plan.add(CA_MODULE_NAME + ".mpy", target)
    if args.board:
        # Board defaults (pins, LED) that alerts.config merges into config.json.
        board_json = common.BOARDS_DIR / args.board / "board.json"
        if board_json.is_file():
            target = stage_dir / "board.json"
            shutil.copyfile(board_json, target)
            plan.add("board.json", target)
    if args.config:
        target = stage_dir / CONFIG_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.config, target)
        plan.add(CONFIG_NAME, target)
    if args.ca_file:
        if args.ca_remote in plan.files:
            raise ToolError(
                "checking smtp.ca_file",
                "%s is a file that deploy copies itself; give the CA file a name of its own, such as ca.pem"
                % args.ca_remote,
            )
        # The bytes that check_ca_file() checked, not the file again, which may have changed.
        target = stage_dir / "ca-file" / args.ca_remote
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(args.ca_bytes)
        plan.add(args.ca_remote, target)
    return plan


def board_path(path, outbox_dir="outbox"):
    """Return smtp.ca_file as a path relative to the board's root, or raise ToolError for one deploy cannot use.

    The path must be plain (no empty, "." or ".." parts, no spaces at either end), and
    must not name a module or a file that deploy or the firmware writes.
    """
    step = "checking smtp.ca_file %s" % path
    parts = path[1:].split("/") if path.startswith("/") else path.split("/")
    if path != path.strip() or [part for part in parts if part in ("", ".", "..")]:
        raise ToolError(step, "give a plain path on the board such as ca.pem or certs/ca.pem, without . or .. parts")
    remote = "/".join(parts)
    outbox = [part for part in outbox_dir.split("/") if part]
    if (
        # A firmware file, or its temporary copy before a rename (NAME.tmp).
        [name for name in BOARD_FILES if remote.startswith(name)]
        or remote.endswith((".py", ".mpy"))
        or parts[0] in MANAGED_PACKAGES + (".micropython", "lib")
        or parts[: len(outbox)] == outbox
    ):
        raise ToolError(
            step,
            "the board uses that path for code or for the firmware's own files; give the CA file a name of "
            "its own, such as ca.pem",
        )
    return remote


# Run by the MicroPython unix port: load each DER root given as an argument into
# mbedTLS, as the firmware does, and print the number and error of the first it rejects.
_MBEDTLS_CHECK = """
import ssl
import sys

for number in range(1, len(sys.argv)):
    with open(sys.argv[number], "rb") as file:
        der = file.read()
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=der)
    except Exception as exc:
        print("REJECTED", number, exc)
        sys.exit(1)
"""


def check_roots_with_mbedtls(roots, step):
    """Load each root into the mbedTLS of the MicroPython unix port, the TLS library of the board.

    Returns the path of the port, or None when none is installed. OpenSSL accepts key
    types that mbedTLS does not (Ed25519, for one). The unix port and the rp2 port both
    build mbedTLS with MicroPython's common settings; ESP32 uses those of ESP-IDF.
    """
    from .send_micropython import find_micropython

    micropython = find_micropython()
    if micropython is None:
        return None
    with tempfile.TemporaryDirectory(prefix="microsmtp-ca-") as directory:
        script = Path(directory) / "check.py"
        script.write_text(_MBEDTLS_CHECK)
        paths = []
        for number, der in enumerate(roots, 1):
            path = Path(directory) / ("root%d.der" % number)
            path.write_bytes(der)
            paths.append(str(path))
        try:
            process = subprocess.run(
                [micropython, str(script)] + paths, capture_output=True, text=True, timeout=120, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolError(step, "checking the roots with mbedTLS (%s) failed: %s" % (micropython, exc)) from None
    words = process.stdout.split(None, 2)
    if process.returncode == 0:
        return micropython
    if len(words) == 3 and words[0] == "REJECTED":
        raise ToolError(
            step,
            "certificate %s is rejected by mbedTLS, the TLS library of the board (%s, checked with %s); "
            "give a root with an RSA or ECDSA key" % (words[1], words[2].strip(), micropython),
        )
    raise ToolError(
        step,
        "checking the roots with mbedTLS (%s) failed with exit status %d: %s"
        % (micropython, process.returncode, (process.stdout + process.stderr).strip()[-300:]),
    )


def check_ca_file(args):
    """Check --ca-file on this PC as the firmware will load it; return the number of roots.

    The PEM and DER checks are the board's own (microsmtp.encoding.ca_file_roots). Each
    root must load into OpenSSL, and into mbedTLS through the MicroPython unix port where
    one is installed, because mbedTLS takes fewer key types.
    """
    from microsmtp.encoding import ca_file_roots
    from microsmtp.errors import ConfigError

    path = Path(args.ca_file)
    step = "checking --ca-file %s" % path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ToolError(step, "%s; check --ca-file" % exc.strerror) from None
    args.ca_bytes = data
    try:
        roots = ca_file_roots(data)
    except ConfigError as exc:
        raise ToolError(step, str(exc)) from None
    for number, der in enumerate(roots, 1):
        try:
            ssl.create_default_context(cadata=der)
        except (ssl.SSLError, ValueError) as exc:
            raise ToolError(step, "certificate %d cannot be loaded as a CA root (%s)" % (number, exc)) from None
    if check_roots_with_mbedtls(roots, step) is None:
        print(
            "microsmtp deploy: warning: no MicroPython unix port (micropython) found, so --ca-file was checked "
            "with OpenSSL only; run the board's self-test, which loads the roots into its mbedTLS",
            file=sys.stderr,
            flush=True,
        )
    if len(data) > CA_FILE_WARN_BYTES:
        print(
            "microsmtp deploy: warning: --ca-file has %d bytes; loading it takes a board about %d KB of heap "
            "at each delivery round, so keep only the roots of your SMTP server" % (len(data), len(data) * 7 // 2048),
            file=sys.stderr,
            flush=True,
        )
    return len(roots)


def load_config_module(firmware_dir):
    """Import firmware_dir/alerts/config.py, the board's own config checks, or return None.

    It is plain Python that also runs on CPython. It is loaded under a private name,
    so it cannot clash with another ``alerts`` package on sys.path.
    """
    path = Path(firmware_dir) / "alerts" / "config.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("microsmtp_tools._board_alerts_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_config(args):
    """Validate --config on this PC as the board will at boot; return (a one-line summary, smtp.ca_file, outbox.dir).

    Raises ToolError (exit 78) with the message the board would log, so an invalid
    file is rejected before the board is contacted.
    """
    config = Path(args.config)
    if not config.is_file():
        raise ToolError("reading the configuration", "%s not found; check --config" % config)
    module = load_config_module(args.firmware_dir)
    if module is None:
        try:
            json.loads(config.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ToolError("reading the configuration", "%s is not valid JSON: %s" % (config, exc)) from None
        return "JSON syntax checked only, because %s/alerts/config.py is missing" % args.firmware_dir, None, "outbox"
    board_json = common.BOARDS_DIR / args.board / "board.json" if args.board else None
    with tempfile.TemporaryDirectory(prefix="microsmtp-deploy-") as empty:
        if board_json is None or not board_json.is_file():
            # load() skips a missing board.json, which is the case without --board.
            board_json = Path(empty) / "board.json"
        try:
            loaded = module.load(str(config), str(board_json))
        except module.ConfigError as exc:
            raise ToolError(
                "checking %s" % config,
                "%s (the board would stop at boot with this message); fix the file and deploy again" % exc,
            ) from None
    check_addresses(loaded, config)
    return module.describe(loaded), loaded["smtp"].get("ca_file"), loaded["outbox"]["dir"]


def check_addresses(loaded, config):
    """Check smtp.from and smtp.to as the SMTP library will when the board sends.

    The board's config check covers the common mistakes. The library's own parser
    (microsmtp.message.parse_address) is too large to load at a board's boot, so it runs
    here.
    """
    from microsmtp.errors import InvalidInputError
    from microsmtp.message import parse_address

    smtp = loaded["smtp"]
    fields = [("smtp.from", smtp["from"])] + [("smtp.to[%d]" % index, value) for index, value in enumerate(smtp["to"])]
    for key, value in fields:
        try:
            parse_address(value, key)
        except InvalidInputError as exc:
            raise ToolError(
                "checking %s" % config,
                "%s is not an address the SMTP client can send with (%s); fix the file and deploy again" % (key, exc),
            ) from None


def frozen_stale_paths():
    """Return board paths that would hide modules frozen into a custom image."""
    return [CA_MODULE_NAME + ".mpy", CA_MODULE_NAME + ".py", "selftest.mpy", "selftest.py"]


def _copy_commands(plan, remotes):
    commands = []
    for remote in remotes:
        if commands:
            commands.append("+")
        commands += ["fs", "cp", str(plan.files[remote]), ":" + remote]
    return commands


def run_deploy(args):
    out = sys.stdout
    # 0. Check config.json first, so an invalid file stops the deploy before the board is touched.
    ca_file = None
    outbox_dir = "outbox"
    if args.config:
        summary, ca_file, outbox_dir = check_config(args)
        print("config: %s is valid: %s" % (args.config, summary), file=out)
    args.ca_remote = board_path(ca_file, outbox_dir) if ca_file else None
    args.ca_bytes = None
    if args.ca_file:
        if not args.ca_remote:
            raise ToolError(
                "checking --ca-file %s" % args.ca_file,
                "--ca-file needs --config with smtp.ca_file, the path on the board to copy it to",
            )
        print("CA file: %s has %d root(s), copied as %s" % (args.ca_file, check_ca_file(args), ca_file), file=out)
    board = Mpremote(args.port)

    # 1. Find the architecture. Without --arch or --board the board reports its .mpy format.
    board_mpy = 0
    if not args.arch and not args.board:
        output = board.exec(
            "import sys; print('MPY', getattr(sys.implementation, '_mpy', 0))",
            what="asking the board for its .mpy format",
        )
        for line in output.splitlines():
            if line.startswith("MPY "):
                board_mpy = int(line.split()[1])
    arch = resolve_arch(args, board_mpy)

    # 2. Compile and stage.
    stage_dir = common.BUILD_DIR / "deploy" / arch
    plan = build_plan(args, arch, stage_dir)
    print("deploy: %d files for %s (%s)" % (len(plan.files), args.port, arch), file=out)

    # 3. Prepare the board and read the SHA-256 of its copies.
    stale = list(plan.stale)
    managed = plan.managed()
    if args.frozen:
        stale += frozen_stale_paths()
        managed = [(package, []) for package in MANAGED_PACKAGES]
    prepare = _PREPARE_SCRIPT % {"dirs": plan.directories(), "managed": managed, "stale": stale}
    hashes_script = _HASH_SCRIPT % {"files": sorted(plan.files)}
    # config.json is hashed even without --config, to tell whether the board has one.
    # So is the CA file that config.json names, to tell whether the board has it.
    checked = {CONFIG_NAME, args.ca_remote} if args.ca_remote else {CONFIG_NAME}
    first_hashes = _HASH_SCRIPT % {"files": sorted(set(plan.files) | checked)}
    output = board.exec(prepare + first_hashes, what="reading the board's files")
    for line in output.splitlines():
        if line.startswith("REMOVED "):
            print("removed %s (stale)" % line.split(" ", 1)[1], file=out)
        elif line.startswith("MPY "):
            board_mpy = int(line.split()[1])
    resolve_arch(args, board_mpy)
    on_board = _parse_hashes(output)
    if not args.config:
        if on_board.get(CONFIG_NAME) is None:
            print(
                "microsmtp deploy: warning: the board has no %s, so main.py will stop at boot; "
                "deploy again with --config FILE (start from config.example.json)" % CONFIG_NAME,
                file=sys.stderr,
                flush=True,
            )
        else:
            print("kept      %s (already on the board; no --config given)" % CONFIG_NAME, file=out)
    if args.ca_remote and not args.ca_file and on_board.get(args.ca_remote) is None:
        print(
            "microsmtp deploy: warning: config.json names smtp.ca_file %s, which the board does not have, "
            "so the board will send nothing; deploy again with --ca-file FILE" % ca_file,
            file=sys.stderr,
            flush=True,
        )

    # 4. Copy what differs.
    local = {remote: sha256_file(path) for remote, path in plan.files.items()}
    changed = [remote for remote in sorted(plan.files) if on_board.get(remote) != local[remote]]
    for remote in sorted(plan.files):
        state = "copying" if remote in changed else "unchanged"
        print("%-9s %s (%d bytes)" % (state, remote, plan.files[remote].stat().st_size), file=out)
    if changed:
        board.run(*_copy_commands(plan, changed), what="copying files to the board")

    # 5. Verify every file by SHA-256.
    after = _parse_hashes(board.exec(hashes_script, what="verifying the copied files"))
    wrong = [remote for remote in sorted(plan.files) if after.get(remote) != local[remote]]
    if wrong:
        raise ToolError(
            "verifying the copied files",
            "SHA-256 differs on the board for %s; run deploy again, and check the board's free flash"
            % ", ".join(wrong),
            EX_IOERR,
        )
    print(
        "deploy: %d copied, %d unchanged, all %d verified by SHA-256"
        % (len(changed), len(plan.files) - len(changed), len(plan.files)),
        file=out,
    )

    status = EX_OK
    if args.selftest:
        output = board.exec("import selftest\nselftest.run()", what="running the self-test")
        out.write(output)
        if "selftest: " not in output or " 0 failed" not in output:
            print("deploy: the self-test on the board failed (see above)", file=out)
            status = EX_SOFTWARE

    # 6. Reset, so the board starts main.py with the new files.
    if args.no_reset:
        print("deploy: board not reset (--no-reset)", file=out)
    else:
        board.run("reset", what="resetting the board")
        print("deploy: board reset", file=out)
    return status


def add_parser(subcommands):
    parser = subcommands.add_parser(
        "deploy",
        help="copy the firmware, CA module and config.json to a board with mpremote",
        description=(
            "Compile firmware/ to .mpy for the board's architecture, copy it with main.py (as "
            "source), the CA module and config.json to the board with mpremote, skipping files "
            "whose SHA-256 on the board already matches, verify every file by SHA-256, and reset "
            "the board. The .mpy files need MicroPython >= 1.19 on the board (.mpy version 6); "
            "this project supports >= 1.22."
        ),
        epilog="exit status: 0 deployed, 69 board not reachable, 70 self-test failed, 74 verification failed, "
        "78 bad input or invalid --config. Virtual board: --port socket://127.0.0.1:PORT --no-reset "
        "(see python -m microsmtp_tools.virtual_board)",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--port",
        required=True,
        help="board connection for mpremote: a serial device (/dev/ttyUSB0, /dev/ttyACM0, COM4) or socket://HOST:PORT",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--board",
        choices=sorted(mpy.BOARD_ARCHES),
        help="board type, which sets the .mpy architecture (default: ask the board)",
    )
    target.add_argument(
        "--arch",
        choices=[arch for arch in mpy.ARCHES if arch],
        help="mpy-cross architecture (default: from --board, else what the board reports)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the board's configuration, copied as config.json after it passes the board's own checks "
        "(firmware/alerts/config.py) on this PC; without it the board keeps its config.json, "
        "and deploy warns if there is none",
    )
    parser.add_argument(
        "--ca-module",
        metavar="FILE",
        help="CA module written by `microsmtp certs build`, copied as ca_roots.mpy (default: build/ca_roots.py)",
    )
    parser.add_argument("--no-ca-module", action="store_true", help="copy no CA module (the board keeps its own)")
    parser.add_argument(
        "--ca-file",
        metavar="FILE",
        help="PEM or DER file with the CA roots, checked here and copied to the path that smtp.ca_file in "
        "--config names; the firmware then uses it instead of the CA module",
    )
    parser.add_argument(
        "--frozen",
        action="store_true",
        help="the board runs a custom image with firmware/ and the CA module frozen in (microsmtp firmware): "
        "copy only main.py and config.json, and remove file copies that would hide the frozen modules",
    )
    parser.add_argument(
        "--firmware-dir", default=str(common.FIRMWARE_DIR), metavar="DIR", help="folder to deploy (default: firmware/)"
    )
    parser.add_argument(
        "--selftest",
        action="store_true",
        help="run selftest.run() on the board after copying; exit 70 if a check fails",
    )
    parser.add_argument(
        "--no-reset",
        action="store_true",
        help="leave the board running (use it with a virtual board, where a reset only ends a MicroPython process)",
    )
    parser.set_defaults(handler=handle)
    return parser


def handle(args):
    try:
        return run_deploy(args)
    except ToolError as error:
        return common.report("deploy", error)
