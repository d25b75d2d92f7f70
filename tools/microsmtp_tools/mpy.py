"""Compiling firmware/ to .mpy bytecode with mpy-cross, and the .mpy format facts it needs.

A .mpy file starts with b"M", the format version and a feature byte (sub-version and
native architecture, py/persistentcode.h in MicroPython). MicroPython loads a
bytecode-only .mpy when the version byte matches its own (6 since MicroPython 1.19);
the sub-version and architecture are checked only for files with native code, and
mpy-cross writes them only for such files. firmware/ has no native code, so the
.mpy files of mpy-cross 1.29 (format 6.3) load on every MicroPython >= 1.19, which
covers the 1.22 this project supports.
"""

import subprocess
from pathlib import Path

from . import common
from .common import ToolError

# Index = the architecture number in sys.implementation._mpy and in .mpy headers
# (MP_NATIVE_ARCH_* in py/persistentcode.h); values are mpy-cross -march names.
ARCHES = (
    None,
    "x86",
    "x64",
    "armv6",
    "armv6m",
    "armv7m",
    "armv7em",
    "armv7emsp",
    "armv7emdp",
    "xtensa",
    "xtensawin",
    "rv32imc",
    "rv64imc",
)

# mpy-cross architecture of each board this project has defaults for.
BOARD_ARCHES = {
    "ESP32_GENERIC": "xtensawin",
    "ESP32_GENERIC_S2": "xtensawin",
    "ESP32_GENERIC_S3": "xtensawin",
    "ESP32_GENERIC_C3": "rv32imc",
    "ESP32_GENERIC_C6": "rv32imc",
    "RPI_PICO": "armv6m",
    "RPI_PICO_W": "armv6m",
    "RPI_PICO2_W": "armv7emsp",
}

MPY_VERSION = 6

# Modules kept as source: MicroPython runs boot.py and main.py only as .py files.
SOURCE_ONLY = ("boot.py", "main.py")

# Modules that only CPython imports (microsmtp.client loads cpython.py when it is not on
# MicroPython), so a board does not get them. Paths end with these.
HOST_ONLY = ("/microsmtp/cpython.py",)


def decode_sys_mpy(value):
    """Return (version, sub_version, arch name or None) from sys.implementation._mpy."""
    version = value & 0xFF
    sub_version = (value >> 8) & 3
    arch_index = value >> 10
    arch = ARCHES[arch_index] if arch_index < len(ARCHES) else None
    return version, sub_version, arch


def mpy_cross():
    return common.require_executable("mpy-cross", "compiling to .mpy", package="mpy-cross")


def mpy_cross_version():
    """Return mpy-cross's version line, e.g. "MicroPython v1.29.0 ...; mpy-cross emitting mpy v6.3"."""
    process = subprocess.run([mpy_cross(), "--version"], capture_output=True, text=True, timeout=30)
    return process.stdout.strip()


def compile_file(source, target, arch, source_name=None):
    """Compile one .py to .mpy for ``arch``; raise ToolError with the compiler's message."""
    target.parent.mkdir(parents=True, exist_ok=True)
    command = [mpy_cross(), "-o", str(target), "-march=" + arch]
    if source_name:
        # The name stored in the .mpy, shown in tracebacks on the board.
        command += ["-s", source_name]
    command.append(str(source))
    process = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if process.returncode != 0:
        raise ToolError("compiling %s" % source, (process.stderr or process.stdout).strip() or "mpy-cross failed")


def python_files(directory, board=False):
    """Return the .py files under directory, sorted, skipping __pycache__, and HOST_ONLY when ``board``."""
    files = sorted(path for path in Path(directory).rglob("*.py") if "__pycache__" not in path.parts)
    if board:
        files = [path for path in files if not path.resolve().as_posix().endswith(HOST_ONLY)]
    return files


def compile_tree(source_dir, target_dir, arch, keep_source=SOURCE_ONLY):
    """Compile every .py under source_dir that a board needs into target_dir; return [(relative path, file)].

    Files named in keep_source at the top level are copied as source.
    """
    source_dir = Path(source_dir)
    results = []
    for source in python_files(source_dir, board=True):
        relative = source.relative_to(source_dir)
        if len(relative.parts) == 1 and relative.name in keep_source:
            target = Path(target_dir) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
        else:
            relative = relative.with_suffix(".mpy")
            target = Path(target_dir) / relative
            compile_file(source, target, arch, source_name=source.relative_to(source_dir).as_posix())
        results.append((relative.as_posix(), target))
    return results
