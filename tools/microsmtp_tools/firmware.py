"""The ``microsmtp firmware`` command: build a MicroPython image with this project frozen in.

It runs MicroPython's own build with FROZEN_MANIFEST set to boards/BOARD/manifest.py,
which freezes firmware/microsmtp, firmware/alerts, selftest.py and the CA module
(see boards/manifest.py). The toolchain is the user's: ESP-IDF (``idf.py`` and
``IDF_PATH``, usually set by ``. $IDF_PATH/export.sh``) for ESP32 boards, and
``arm-none-eabi-gcc`` with CMake for Pico boards, as MicroPython's ports/esp32 and
ports/rp2 READMEs describe. The image lands in build/firmware/BOARD/.
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
}
CA_ENVIRONMENT_VARIABLE = "MICROSMTP_CA_MODULE"


def check_tree(micropython_dir, port, board):
    root = Path(micropython_dir)
    if not (root / "py" / "mkrules.mk").is_file():
        raise ToolError(
            "checking the MicroPython source tree",
            "%s is not a MicroPython source tree (py/mkrules.mk missing); clone "
            "https://github.com/micropython/micropython (1.22 or later) and give its folder with --micropython" % root,
        )
    if not (root / "ports" / port / "boards" / board).is_dir():
        raise ToolError(
            "checking the MicroPython source tree",
            "%s has no board %s in ports/%s/boards; use a MicroPython release of 1.22 or later" % (root, board, port),
        )
    return root.resolve()


def check_toolchain(port, root):
    """Raise ToolError naming what to install when the port's compiler is missing."""
    if port == "esp32":
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


def build_commands(root, port, board, manifest, jobs):
    """Return the make invocations that build the image, in order."""
    build = "build-%s-microsmtp" % board
    port_dir = str(root / "ports" / port)
    commands = []
    if not (root / "mpy-cross" / "build" / "mpy-cross").exists():
        commands.append(["make", "-C", str(root / "mpy-cross"), "-j%d" % jobs])
    commands.append(["make", "-C", port_dir, "BOARD=%s" % board, "submodules"])
    commands.append(
        ["make", "-C", port_dir, "-j%d" % jobs, "BOARD=%s" % board, "BUILD=%s" % build, "FROZEN_MANIFEST=%s" % manifest]
    )
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
    root = check_tree(args.micropython, port, args.board)
    manifest = common.BOARDS_DIR / args.board / "manifest.py"
    if not manifest.is_file():
        raise ToolError("finding the board manifest", "%s not found; is this a microsmtp checkout?" % manifest)
    ca_module = stage_ca_module(args, args.board)
    check_toolchain(port, root)

    env = dict(os.environ)
    env[CA_ENVIRONMENT_VARIABLE] = str(ca_module)
    commands, build_dir = build_commands(root, port, args.board, manifest, args.jobs)
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
    image = build_dir / image_name
    if not image.is_file():
        raise ToolError("finding the built image", "%s not found after the build" % image, EX_SOFTWARE)
    target = common.BUILD_DIR / "firmware" / args.board / image_name
    shutil.copyfile(image, target)
    print("image: %s (%d bytes)" % (target, target.stat().st_size))
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
            "it afterwards with `microsmtp deploy --frozen`."
        ),
        epilog="exit status: 0 built, 70 build failed, 78 tree, toolchain or CA module missing",
        allow_abbrev=False,
    )
    parser.add_argument("--board", required=True, choices=sorted(BOARDS), help="board to build for")
    parser.add_argument("--micropython", required=True, metavar="DIR", help="MicroPython source tree (git clone)")
    parser.add_argument(
        "--ca-module", metavar="FILE", help="CA module from `microsmtp certs build` (default: build/ca_roots.py)"
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
