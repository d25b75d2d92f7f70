"""The ``microsmtp flash`` command: write a MicroPython image the user supplies onto a board.

ESP32 family: esptool ``write-flash`` at the chip's offset. Raspberry Pi Pico (W): copy
the .uf2 file onto the RPI-RP2 drive the board shows in BOOTSEL mode, or use picotool
when no drive is found. Nothing is downloaded: official images are on
https://micropython.org/download/BOARD/ (e.g. /download/ESP32_GENERIC/), and
``microsmtp firmware`` builds one with this project frozen in.
"""

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import common
from .common import EX_OK, EX_UNAVAILABLE, ToolError

# Flash offset of the MicroPython image per chip: deploy_options.flash_offset in
# ports/esp32/boards/ESP32_GENERIC*/board.json of MicroPython (1.2x, checked against
# the tree of August 2026); the ESP32 and ESP32-S2 ROM loaders expect the bootloader
# at 0x1000, the newer chips at 0x0.
ESP_OFFSETS = {
    "esp32": 0x1000,
    "esp32s2": 0x1000,
    "esp32s3": 0x0,
    "esp32c3": 0x0,
    "esp32c6": 0x0,
}

ESP_BOARDS = {
    "ESP32_GENERIC": "esp32",
    "ESP32_GENERIC_S2": "esp32s2",
    "ESP32_GENERIC_S3": "esp32s3",
    "ESP32_GENERIC_C3": "esp32c3",
    "ESP32_GENERIC_C6": "esp32c6",
}

# Drive label and the Board-ID line of INFO_UF2.TXT the BOOTSEL bootloader shows.
RP2_BOARDS = {
    "RPI_PICO": ("RPI-RP2", "RPI-RP2"),
    "RPI_PICO_W": ("RPI-RP2", "RPI-RP2"),
    "RPI_PICO2_W": ("RP2350", "RP2350"),
}

DEFAULT_BAUD = 460800
UF2_MAGIC = b"UF2\n"
DRIVE_PATTERNS = ("/media/*/%s", "/run/media/*/%s", "/media/%s", "/Volumes/%s")


def esptool_command(chip, port, baud, firmware, erase=False):
    """Return the esptool invocations (lists of arguments) that flash ``firmware``."""
    esptool = [sys.executable, "-m", "esptool", "--chip", chip, "--port", port, "--baud", str(baud)]
    commands = []
    if erase:
        commands.append(esptool + ["erase-flash"])
    commands.append(esptool + ["write-flash", "-z", "0x%x" % ESP_OFFSETS[chip], str(firmware)])
    return commands


def _check_image(firmware, board):
    path = Path(firmware)
    if not path.is_file():
        raise ToolError(
            "reading the firmware image",
            "%s not found; download the image for %s from https://micropython.org/download/%s/ "
            "or build one with `microsmtp firmware`" % (path, board, board),
        )
    head = path.read_bytes()[:4]
    if board in RP2_BOARDS:
        if head != UF2_MAGIC:
            raise ToolError(
                "reading the firmware image", "%s is not a UF2 file; the %s needs the .uf2 image" % (path, board)
            )
    elif head[:1] != b"\xe9":
        # Every ESP32 image starts with the ESP image magic byte 0xE9.
        raise ToolError(
            "reading the firmware image",
            "%s is not an ESP32 .bin image (first byte is not 0xE9); use the .bin for %s" % (path, board),
        )
    return path


def flash_esp(args):
    chip = args.chip or ESP_BOARDS[args.board]
    if not args.port:
        raise ToolError("choosing the serial port", "give --port, e.g. /dev/ttyUSB0, /dev/ttyACM0 or COM4")
    firmware = _check_image(args.firmware, args.board)
    commands = esptool_command(chip, args.port, args.baud, firmware, args.erase)
    if args.dry_run:
        for command in commands:
            # command[:3] is "python -m esptool".
            print("would run: esptool %s" % " ".join(command[3:]))
        changed = "erased or flashed" if args.erase else "flashed"
        print("dry run: nothing was %s; leave out --dry-run to flash" % changed)
        return EX_OK
    for command in commands:
        print("running: esptool %s" % " ".join(command[3:]), flush=True)
        # esptool prints its own progress on the terminal.
        process = subprocess.run(command)
        if process.returncode != 0:
            raise ToolError(
                "esptool",
                "exited with status %d; check --port, hold BOOT while it connects, or lower --baud"
                % process.returncode,
                EX_UNAVAILABLE,
            )
    print("flashed %s at 0x%x on %s" % (firmware.name, ESP_OFFSETS[chip], args.port))
    return EX_OK


def find_drive(board, drive=None):
    """Return the mounted BOOTSEL drive of an rp2 board, checked by INFO_UF2.TXT, or None."""
    label, board_id = RP2_BOARDS[board]
    if drive is not None:
        candidates = [drive]
    else:
        candidates = []
        for pattern in DRIVE_PATTERNS:
            candidates.extend(sorted(glob.glob(pattern % label)))
    for candidate in candidates:
        info = Path(candidate) / "INFO_UF2.TXT"
        try:
            text = info.read_text(errors="replace")
        except OSError:
            if drive is not None:
                raise ToolError(
                    "checking the drive %s" % drive,
                    "it has no INFO_UF2.TXT, so it is not a board in BOOTSEL mode; hold BOOTSEL while plugging in",
                ) from None
            continue
        if "Board-ID: %s" % board_id in text:
            return Path(candidate)
        if drive is not None:
            raise ToolError(
                "checking the drive %s" % drive,
                "INFO_UF2.TXT does not name Board-ID %s; is this the right board?" % board_id,
            )
    return None


def plan_rp2(args, firmware):
    """Print what flash_rp2 would copy or run, change nothing, and return EX_OK.

    A dry run works without a board. With no drive mounted, the plan names the drive by
    its label and, when picotool is installed, shows the command a real run would use.
    """
    label = RP2_BOARDS[args.board][0]
    if args.drive is not None and Path(args.drive).exists():
        # An existing --drive is checked as in a real run, so a wrong drive shows up now.
        drive = find_drive(args.board, args.drive)
    else:
        drive = find_drive(args.board) if args.drive is None else None
    if drive is not None:
        print("would copy %s to %s" % (firmware, drive / firmware.name))
    else:
        where = args.drive if args.drive is not None else "<%s drive>" % label
        print("would copy %s to %s" % (firmware, Path(where) / firmware.name))
        if args.drive is None:
            print("note: no %s drive is mounted now; hold BOOTSEL while plugging the board in" % label)
        else:
            print("note: %s does not exist now; hold BOOTSEL while plugging the board in" % args.drive)
        picotool = shutil.which("picotool")
        if picotool is not None and args.drive is None:
            print("      without the drive, a real run would use: %s" % " ".join(picotool_command(picotool, firmware)))
    print("dry run: nothing was copied; leave out --dry-run to flash")
    return EX_OK


def picotool_command(picotool, firmware):
    return [picotool, "load", "-x", str(firmware), "-f"]


def flash_rp2(args):
    firmware = _check_image(args.firmware, args.board)
    if args.erase:
        print("note: --erase is not supported for rp2 boards; the file system is kept (use picotool erase)")
    if args.dry_run:
        return plan_rp2(args, firmware)
    drive = find_drive(args.board, args.drive)
    if drive is not None:
        target = drive / firmware.name
        print("copying %s to %s" % (firmware, target), flush=True)
        with open(firmware, "rb") as source, open(target, "wb") as output:
            shutil.copyfileobj(source, output)
            output.flush()
            os.fsync(output.fileno())
        print("copied; the board restarts into MicroPython when the copy is complete")
        return EX_OK
    picotool = shutil.which("picotool")
    if picotool is None:
        label = RP2_BOARDS[args.board][0]
        raise ToolError(
            "finding the board",
            "no %s drive is mounted under /media, /run/media or /Volumes, and picotool is not installed; "
            "hold BOOTSEL while plugging the board in, then give --drive PATH if it is mounted elsewhere" % label,
            EX_UNAVAILABLE,
        )
    command = picotool_command(picotool, firmware)
    print("running: %s" % " ".join(command), flush=True)
    process = subprocess.run(command)
    if process.returncode != 0:
        raise ToolError(
            "picotool",
            "exited with status %d; put the board into BOOTSEL mode" % process.returncode,
            EX_UNAVAILABLE,
        )
    return EX_OK


def run_flash(args):
    if args.board in ESP_BOARDS:
        return flash_esp(args)
    return flash_rp2(args)


def add_parser(subcommands):
    boards = sorted(ESP_BOARDS) + sorted(RP2_BOARDS)
    parser = subcommands.add_parser(
        "flash",
        help="write a MicroPython image onto a board (esptool, UF2 copy or picotool)",
        description=(
            "Write a MicroPython firmware image onto a board. ESP32 boards: esptool writes the .bin "
            "at the chip's offset (esp32 and esp32s2 0x1000, esp32s3, esp32c3 and esp32c6 0x0). "
            "Pico boards: the .uf2 is copied onto the drive the board mounts in BOOTSEL mode, or "
            "loaded with picotool. Nothing is downloaded: official images are at "
            "https://micropython.org/download/BOARD/ (e.g. https://micropython.org/download/RPI_PICO_W/), "
            "and `microsmtp firmware` builds one with this project frozen in."
        ),
        epilog="exit status: 0 flashed (or, with --dry-run, planned), 69 board or tool failed, 78 bad input",
        allow_abbrev=False,
    )
    parser.add_argument("--board", required=True, choices=boards, help="board type")
    parser.add_argument(
        "--firmware", required=True, metavar="FILE", help="image to write: .bin for ESP32, .uf2 for Pico"
    )
    parser.add_argument("--port", help="serial port of an ESP32 board (/dev/ttyUSB0, /dev/ttyACM0, COM4)")
    parser.add_argument(
        "--chip",
        choices=sorted(ESP_OFFSETS),
        help="ESP32 chip, when the board type does not say (default: from --board)",
    )
    parser.add_argument(
        "--baud", type=int, default=DEFAULT_BAUD, help="esptool serial speed in bit/s (default: %d)" % DEFAULT_BAUD
    )
    parser.add_argument(
        "--erase", action="store_true", help="erase the whole flash first, including the file system (ESP32 only)"
    )
    parser.add_argument("--drive", metavar="PATH", help="mounted BOOTSEL drive of a Pico (default: searched)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the esptool commands or the copy that would run, and change nothing; "
        "works without a board attached (the serial port is not opened, the drive need not be mounted)",
    )
    parser.set_defaults(handler=handle)
    return parser


def handle(args):
    try:
        return run_flash(args)
    except ToolError as error:
        return common.report("flash", error)
