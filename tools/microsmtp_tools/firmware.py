"""The ``microsmtp firmware`` command: build a MicroPython image with this project frozen in.

It runs MicroPython's own build with FROZEN_MANIFEST set to boards/BOARD/manifest.py,
which freezes firmware/microsmtp, firmware/alerts, selftest.py and the CA module
(see boards/manifest.py). The toolchain is the user's: ESP-IDF (``idf.py`` and
``IDF_PATH``, usually set by ``. $IDF_PATH/export.sh``) for ESP32 boards, and
``arm-none-eabi-gcc`` with CMake for Pico boards, as MicroPython's ports/esp32 and
ports/rp2 READMEs describe. The image lands in build/firmware/BOARD/.

``--board UNIX`` builds MicroPython's unix port as a virtual board instead: the same
code frozen in (without a CA module, which `microsmtp sim` writes for each run) plus the
sim's stand-in hardware modules, so that ``microsmtp sim --micropython`` and
``microsmtp bench --micropython`` measure the heap with the code in ROM, as on a board.
``--32bit`` cross-compiles it for i686 (Debian: gcc-i686-linux-gnu; libc6-i386 runs
it), whose objects have the size of a 32-bit board's. ``--tls-on-heap`` makes mbedTLS
allocate from the GC heap, as it does on the Pico W (on the ESP32 it uses ESP-IDF's
heap, as on an ordinary unix build). ``--tls13`` adds TLS 1.3 to mbedTLS, which then
offers TLS 1.3 and 1.2 (boards/UNIX/tls13/). ``--stock`` freezes only the stand-ins, for
the heap of the firmware deployed as .mpy files onto a stock MicroPython image.
"""

import os
import shutil
import subprocess
from pathlib import Path

from . import common
from .common import EX_OK, EX_SOFTWARE, ToolError

# Board -> (MicroPython port, image file the port's build writes).
BOARDS = {
    "ESP32_GENERIC": ("esp32", "firmware.bin"),
    "RPI_PICO_W": ("rp2", "firmware.uf2"),
    "UNIX": ("unix", "micropython"),
}
CA_ENVIRONMENT_VARIABLE = "MICROSMTP_CA_MODULE"
# The virtual board needs neither btree nor ffi, whose submodules a tree may lack.
UNIX_OPTIONS = ("VARIANT=standard", "MICROPY_PY_BTREE=0", "MICROPY_PY_FFI=0")
UNIX_32BIT_PREFIX = "i686-linux-gnu-"
# mbedTLS settings of the unix port, but allocating from the GC heap (see the file).
TLS_ON_HEAP_CONFIG = common.BOARDS_DIR / "UNIX" / "mbedtls_config_gc_heap.h"
# Folder passed as USER_C_MODULES. Its micropython.mk compiles mbedTLS's TLS 1.3 sources
# and adds the TLS 1.3 settings of mbedtls_config_tls13.h to the build's own.
TLS13_MODULE_DIR = common.BOARDS_DIR / "UNIX" / "tls13"


def check_tree(micropython_dir, port, board):
    root = Path(micropython_dir)
    if not (root / "py" / "mkrules.mk").is_file():
        raise ToolError(
            "checking the MicroPython source tree",
            "%s is not a MicroPython source tree (py/mkrules.mk missing); clone "
            "https://github.com/micropython/micropython (1.22 or later) and give its folder with --micropython" % root,
        )
    if port == "unix":
        if not (root / "ports" / "unix" / "variants" / "standard").is_dir():
            raise ToolError(
                "checking the MicroPython source tree",
                "%s has no ports/unix/variants/standard; use a MicroPython release of 1.22 or later" % root,
            )
        if not (root / ".git").exists():
            # Without git, `make submodules` cannot fill them in.
            for submodule in ("lib/mbedtls/library", "lib/micropython-lib/python-stdlib"):
                if not (root / submodule).is_dir():
                    raise ToolError(
                        "checking the MicroPython source tree",
                        "%s has no %s and is not a git clone; clone MicroPython with git, or unpack the "
                        "submodule there" % (root, submodule.rsplit("/", 1)[0]),
                    )
    elif not (root / "ports" / port / "boards" / board).is_dir():
        raise ToolError(
            "checking the MicroPython source tree",
            "%s has no board %s in ports/%s/boards; use a MicroPython release of 1.22 or later" % (root, board, port),
        )
    return root.resolve()


def check_toolchain(port, root, bits32=False):
    """Raise ToolError naming what to install when the port's compiler is missing."""
    if port == "unix":
        compiler = UNIX_32BIT_PREFIX + "gcc" if bits32 else "cc"
        if shutil.which(compiler) is None:
            packages = "gcc-i686-linux-gnu and libc6-i386" if bits32 else "gcc and make"
            raise ToolError(
                "finding the C compiler",
                "%s not on PATH; install it (Debian/Ubuntu: apt-get install %s), see %s/ports/unix/README.md"
                % (compiler, packages, root),
            )
    elif port == "esp32":
        if shutil.which("idf.py") is None or not os.environ.get("IDF_PATH"):
            raise ToolError(
                "finding ESP-IDF",
                "idf.py is not on PATH or IDF_PATH is not set; install the ESP-IDF version named in "
                "%s/ports/esp32/README.md and run `. $IDF_PATH/export.sh` in this shell first" % root,
            )
    elif port == "rp2":
        missing = [tool for tool in ("arm-none-eabi-gcc", "cmake") if shutil.which(tool) is None]
        if missing:
            raise ToolError(
                "finding the ARM toolchain",
                "%s not on PATH; install them (Debian/Ubuntu: apt-get install gcc-arm-none-eabi "
                "libnewlib-arm-none-eabi cmake), see %s/ports/rp2/README.md" % (" and ".join(missing), root),
            )
    if shutil.which("make") is None:
        raise ToolError("finding make", "make not on PATH; install it (Debian/Ubuntu: apt-get install make)")


def image_suffix(bits32=False, tls_on_heap=False, stock=False, tls13=False):
    """Return what a UNIX build's folder and file names end with.

    The parts come in this order: "-32bit", "-tls-on-heap", "-tls13", "-stock".
    """
    suffix = ""
    if bits32:
        suffix += "-32bit"
    if tls_on_heap:
        suffix += "-tls-on-heap"
    if tls13:
        suffix += "-tls13"
    if stock:
        suffix += "-stock"
    return suffix


def build_commands(root, port, board, manifest, jobs, bits32=False, tls_on_heap=False, stock=False, tls13=False):
    """Return the make invocations that build the image, in order, and the build folder.

    ``make submodules`` needs git, so a tree that is not a git checkout (an unpacked
    release archive) is taken with the submodules it has.
    """
    build = "build-%s-microsmtp%s" % (board, image_suffix(bits32, tls_on_heap, stock, tls13))
    port_dir = str(root / "ports" / port)
    selection = list(UNIX_OPTIONS) if port == "unix" else ["BOARD=%s" % board]
    commands = []
    if not (root / "mpy-cross" / "build" / "mpy-cross").exists():
        commands.append(["make", "-C", str(root / "mpy-cross"), "-j%d" % jobs])
    if (root / ".git").exists():
        commands.append(["make", "-C", port_dir] + selection + ["submodules"])
    build_command = ["make", "-C", port_dir, "-j%d" % jobs] + selection
    if stock:
        # The sim's stand-ins for the board's own modules, and nothing of firmware/.
        manifest = manifest.parent / "manifest_stock.py"
    build_command += ["BUILD=%s" % build, "FROZEN_MANIFEST=%s" % manifest]
    if bits32:
        build_command.append("CROSS_COMPILE=%s" % UNIX_32BIT_PREFIX)
    if tls_on_heap:
        # The backslashes reach the compiler's command line through make's shell.
        build_command.append('MBEDTLS_CONFIG_FILE=\\"%s\\"' % TLS_ON_HEAP_CONFIG)
        build_command.append("CFLAGS_EXTRA=-DMICROPY_TRACKED_ALLOC=1")
    if tls13:
        build_command.append("USER_C_MODULES=%s" % TLS13_MODULE_DIR)
    commands.append(build_command)
    return commands, Path(port_dir) / build


def stage_ca_module(args, board):
    """Copy the CA module to build/firmware/BOARD/ca_roots.py, the name the manifest freezes."""
    source = Path(args.ca_module) if args.ca_module else common.DEFAULT_CA_MODULE
    if not source.is_file():
        raise ToolError(
            "finding the CA module",
            "%s not found; build it with `microsmtp certs build` or give --ca-module FILE" % source,
        )
    target = common.BUILD_DIR / "firmware" / board / "ca_roots.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)
    return target


def run_firmware(args):
    port, image_name = BOARDS[args.board]
    if port != "unix" and (args.bits32 or args.tls_on_heap or args.tls13 or args.stock):
        raise ToolError(
            "checking the options", "--32bit, --tls-on-heap, --tls13 and --stock apply to --board UNIX only"
        )
    if args.jobs < 1:
        raise ToolError("checking the options", "--jobs must be 1 or more, not %d" % args.jobs)
    root = check_tree(args.micropython, port, args.board)
    manifest = common.BOARDS_DIR / args.board / "manifest.py"
    for path in (root, manifest):
        if " " in str(path):
            # MicroPython's makefiles split paths at spaces.
            raise ToolError(
                "checking the paths", "%s contains a space, which MicroPython's build cannot handle; move it" % path
            )
    if not manifest.is_file():
        raise ToolError("finding the board manifest", "%s not found; is this a microsmtp checkout?" % manifest)
    env = dict(os.environ)
    if port == "unix":
        # The virtual board has no CA module frozen in: `microsmtp sim` writes one per run.
        image_name += image_suffix(args.bits32, args.tls_on_heap, args.stock, args.tls13)
    else:
        env[CA_ENVIRONMENT_VARIABLE] = str(stage_ca_module(args, args.board))
    check_toolchain(port, root, args.bits32)

    commands, build_dir = build_commands(
        root, port, args.board, manifest, args.jobs, args.bits32, args.tls_on_heap, args.stock, args.tls13
    )
    if not args.dry_run:
        # MicroPython's build compiles a frozen module again only when its source is newer
        # than the cached .mpy. A source from another checkout, or an older version with
        # its old time stamp, would leave stale bytecode in the image.
        shutil.rmtree(build_dir / "frozen_mpy", ignore_errors=True)
    for command in commands:
        print("running: %s" % " ".join(command), flush=True)
        if args.dry_run:
            continue
        process = subprocess.run(command, env=env)
        if process.returncode != 0:
            raise ToolError(
                "building the image (%s)" % " ".join(command[:4]),
                "make exited with status %d; see its output above" % process.returncode,
                EX_SOFTWARE,
            )
    if args.dry_run:
        return EX_OK
    image = build_dir / ("micropython" if port == "unix" else image_name)
    if not image.is_file():
        raise ToolError("finding the built image", "%s not found after the build" % image, EX_SOFTWARE)
    target = common.BUILD_DIR / "firmware" / args.board / image_name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image, target)
    shutil.copymode(image, target)
    print("image: %s (%d bytes)" % (target, target.stat().st_size))
    if port == "unix":
        print("run the virtual board with: microsmtp sim --micropython %s" % target)
        print("measure the heap with: microsmtp bench --micropython %s" % target)
        return EX_OK
    print(
        "flash it with: microsmtp flash --board %s --firmware %s%s"
        % (args.board, target, " --port PORT" if port == "esp32" else "")
    )
    print("then copy main.py and config.json: microsmtp deploy --frozen --port PORT --config config.json")
    return EX_OK


def add_parser(subcommands):
    parser = subcommands.add_parser(
        "firmware",
        help="build a MicroPython image with microsmtp, the alerts and the CA module frozen in",
        description=(
            "Build a MicroPython image for a board with firmware/ and the CA module frozen in, "
            "using boards/BOARD/manifest.py and MicroPython's own build (make in ports/esp32 or "
            "ports/rp2). Needs a MicroPython source tree (1.22 or later) and the port's toolchain: "
            "ESP-IDF for ESP32, arm-none-eabi-gcc and CMake for Pico W. main.py is not frozen; copy "
            "it afterwards with `microsmtp deploy --frozen`. --board UNIX builds the unix port as a "
            "virtual board for `microsmtp sim --micropython` and `microsmtp bench --micropython`."
        ),
        epilog="exit status: 0 built, 70 build failed, 78 tree, toolchain or CA module missing",
        allow_abbrev=False,
    )
    parser.add_argument("--board", required=True, choices=sorted(BOARDS), help="board to build for")
    parser.add_argument("--micropython", required=True, metavar="DIR", help="MicroPython source tree (git clone)")
    parser.add_argument(
        "--ca-module", metavar="FILE", help="CA module from `microsmtp certs build` (default: build/ca_roots.py)"
    )
    parser.add_argument(
        "--32bit",
        dest="bits32",
        action="store_true",
        help="UNIX only: build for i686, with a 32-bit board's object sizes (needs gcc-i686-linux-gnu)",
    )
    parser.add_argument(
        "--tls-on-heap",
        action="store_true",
        help="UNIX only: mbedTLS allocates from the GC heap, as on the Pico W",
    )
    parser.add_argument(
        "--tls13",
        action="store_true",
        help="UNIX only: mbedTLS supports TLS 1.3 as well as 1.2 (the unix port's own build has TLS 1.2 only)",
    )
    parser.add_argument(
        "--stock",
        action="store_true",
        help=(
            "UNIX only: freeze only the sim's stand-in hardware modules, as in a stock MicroPython image, "
            "to measure the firmware as the .mpy files `microsmtp deploy` copies"
        ),
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel make jobs (default: CPU count)")
    parser.add_argument("--dry-run", action="store_true", help="check inputs and print the build commands only")
    parser.set_defaults(handler=handle)
    return parser


def handle(args):
    try:
        return run_firmware(args)
    except ToolError as error:
        return common.report("firmware", error)
