"""Board manifests and `microsmtp firmware`, without a MicroPython tree or cross compiler.

The manifests are run with the manifest functions of MicroPython's build
(tools/manifestfile.py) replaced by stubs that record what would be frozen; the
build is run with a stand-in `make` and `idf.py` on PATH.
"""

import os
import stat
from pathlib import Path

import pytest

from microsmtp_tools import cli, common

REPO_DIR = Path(__file__).resolve().parent.parent
BOARDS = ("ESP32_GENERIC", "RPI_PICO_W")
UNIX_DIR = REPO_DIR / "boards" / "UNIX"


class ManifestRecorder:
    """Runs a manifest as MicroPython's build does and records what it freezes."""

    def __init__(self, path_vars):
        self.path_vars = path_vars
        self.frozen = []
        self.external_includes = []
        # Package folder -> the files the manifest listed, or None for all of them.
        self.package_files = {}

    def _resolve(self, path):
        for name, value in self.path_vars.items():
            path = path.replace("$(%s)" % name, value)
        return os.path.abspath(path)

    def run(self, manifest):
        manifest = self._resolve(str(manifest))
        if os.path.isdir(manifest):
            manifest = os.path.join(manifest, "manifest.py")
        if not manifest.startswith(str(REPO_DIR)):
            # MicroPython's own manifests are not here; record that they are included.
            self.external_includes.append(manifest)
            return
        previous = os.getcwd()
        # MicroPython's include() runs each manifest from its own folder.
        os.chdir(os.path.dirname(manifest))
        try:
            exec(Path(manifest).read_text(), self.globals())
        finally:
            os.chdir(previous)

    def globals(self):
        def package(package_path, files=None, base_path=".", opt=None):
            path = Path(self._resolve(base_path)) / package_path
            self.frozen.append(("package", path))
            self.package_files[path] = None if files is None else list(files)

        def module(module_path, base_path=".", opt=None):
            self.frozen.append(("module", Path(self._resolve(base_path)) / module_path))

        def freeze(path, script=None, opt=None):
            self.frozen.append(("freeze", Path(self._resolve(path)) / (script or "")))

        def unexpected(*args, **kwargs):
            raise AssertionError("the board manifests use only include, package and module")

        return {
            "include": lambda path, **kwargs: self.run(path),
            "package": package,
            "module": module,
            "freeze": freeze,
            "require": unexpected,
            "add_library": unexpected,
            "metadata": unexpected,
            "options": None,
        }


@pytest.fixture
def ca_module(tmp_path, monkeypatch):
    path = tmp_path / "ca_roots.py"
    path.write_text("ROOTS = (b'0',)\n")
    monkeypatch.setenv("MICROSMTP_CA_MODULE", str(path))
    return path


def path_vars(tmp_path, board):
    port = {"ESP32_GENERIC": "esp32", "RPI_PICO_W": "rp2", "UNIX": "unix"}[board]
    return {
        "MPY_DIR": str(tmp_path / "micropython"),
        "PORT_DIR": str(tmp_path / "micropython" / "ports" / port),
        "BOARD_DIR": str(tmp_path / "micropython" / "ports" / port / "boards" / board),
    }


@pytest.mark.parametrize("board", BOARDS)
def test_manifest_freezes_existing_paths(board, ca_module, tmp_path):
    recorder = ManifestRecorder(path_vars(tmp_path, board))

    recorder.run(REPO_DIR / "boards" / board / "manifest.py")

    frozen = {path for _kind, path in recorder.frozen}
    for kind, path in recorder.frozen:
        if kind == "package":
            assert path.is_dir(), path
            assert (path / "__init__.py").is_file(), path
        else:
            assert path.is_file(), path
    assert REPO_DIR / "firmware" / "microsmtp" in frozen
    assert REPO_DIR / "firmware" / "selftest.py" in frozen
    assert ca_module in frozen
    if (REPO_DIR / "firmware" / "alerts").is_dir():
        assert REPO_DIR / "firmware" / "alerts" in frozen
    assert REPO_DIR / "firmware" / "main.py" not in frozen


def test_manifests_include_micropython_base(ca_module, tmp_path):
    esp32 = ManifestRecorder(path_vars(tmp_path, "ESP32_GENERIC"))
    esp32.run(REPO_DIR / "boards" / "ESP32_GENERIC" / "manifest.py")
    pico = ManifestRecorder(path_vars(tmp_path, "RPI_PICO_W"))
    pico.run(REPO_DIR / "boards" / "RPI_PICO_W" / "manifest.py")

    assert esp32.external_includes == [str(tmp_path / "micropython/ports/esp32/boards/manifest.py")]
    # The Pico W board manifest includes the port's and adds the networking bundle.
    assert pico.external_includes == [str(tmp_path / "micropython/ports/rp2/boards/RPI_PICO_W/manifest.py")]


def test_unix_manifests_freeze_no_ca_module(tmp_path, monkeypatch):
    # No CA module at all: the virtual board's manifest must not need one.
    monkeypatch.setenv("MICROSMTP_CA_MODULE", str(tmp_path / "missing" / "ca_roots.py"))
    recorder = ManifestRecorder(path_vars(tmp_path, "UNIX"))

    recorder.run(REPO_DIR / "boards" / "UNIX" / "manifest.py")

    frozen = [path for _kind, path in recorder.frozen]
    for path in frozen:
        assert path.exists(), path
    stand_ins = REPO_DIR / "tools" / "microsmtp_tools" / "sim_board"
    assert set(frozen) == {
        REPO_DIR / "firmware" / "microsmtp",
        REPO_DIR / "firmware" / "alerts",
        REPO_DIR / "firmware" / "selftest.py",
    } | set(stand_ins.glob("*.py"))
    assert recorder.external_includes == [str(tmp_path / "micropython/ports/unix/variants/standard/manifest.py")]

    stock = ManifestRecorder(path_vars(tmp_path, "UNIX"))
    stock.run(UNIX_DIR / "manifest_stock.py")
    assert {path for _kind, path in stock.frozen} == set(stand_ins.glob("*.py"))


@pytest.mark.parametrize("board", BOARDS + ("UNIX",))
def test_manifests_omit_cpython_module(board, ca_module, tmp_path):
    recorder = ManifestRecorder(path_vars(tmp_path, board))

    recorder.run(REPO_DIR / "boards" / board / "manifest.py")

    package = REPO_DIR / "firmware" / "microsmtp"
    expected = sorted(path.name for path in package.glob("*.py") if path.name != "cpython.py")
    assert "client.py" in expected
    assert recorder.package_files[package] == expected


def test_manifest_requires_ca_module(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROSMTP_CA_MODULE", str(tmp_path / "ca_roots.py"))
    recorder = ManifestRecorder(path_vars(tmp_path, "ESP32_GENERIC"))

    with pytest.raises(ValueError, match="run `microsmtp certs build`"):
        recorder.run(REPO_DIR / "boards" / "ESP32_GENERIC" / "manifest.py")


def fake_tree(tmp_path, port, board, git=True):
    root = tmp_path / "micropython"
    (root / "py").mkdir(parents=True)
    (root / "py" / "mkrules.mk").write_text("")
    if port == "unix":
        (root / "ports" / "unix" / "variants" / "standard").mkdir(parents=True)
        (root / "lib" / "mbedtls" / "library").mkdir(parents=True)
        (root / "lib" / "micropython-lib" / "python-stdlib").mkdir(parents=True)
    else:
        (root / "ports" / port / "boards" / board).mkdir(parents=True)
    if git:
        (root / ".git").mkdir()
    return root


def executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_firmware_missing_tree(ca_module, tmp_path, capsys):
    status = cli.main(
        ["firmware", "--board", "ESP32_GENERIC", "--micropython", str(tmp_path / "none"), "--ca-module", str(ca_module)]
    )

    assert status == 78
    assert "is not a MicroPython source tree" in capsys.readouterr().err


def test_firmware_missing_esp_idf(ca_module, tmp_path, monkeypatch, capsys):
    root = fake_tree(tmp_path, "esp32", "ESP32_GENERIC")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("IDF_PATH", raising=False)

    status = cli.main(
        ["firmware", "--board", "ESP32_GENERIC", "--micropython", str(root), "--ca-module", str(ca_module)]
    )

    assert status == 78
    assert "idf.py is not on PATH or IDF_PATH is not set" in capsys.readouterr().err


def test_firmware_missing_arm_toolchain(ca_module, tmp_path, monkeypatch, capsys):
    root = fake_tree(tmp_path, "rp2", "RPI_PICO_W")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    status = cli.main(["firmware", "--board", "RPI_PICO_W", "--micropython", str(root), "--ca-module", str(ca_module)])

    assert status == 78
    assert "arm-none-eabi-gcc and cmake not on PATH" in capsys.readouterr().err


def test_firmware_runs_port_build(ca_module, tmp_path, monkeypatch, capsys):
    root = fake_tree(tmp_path, "rp2", "RPI_PICO_W")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "make.log"
    # Stand-in for make: logs its arguments and the CA variable, and writes the image
    # where the rp2 port's build does.
    executable(
        bin_dir / "make",
        '#!/bin/sh\necho "$* CA=$MICROSMTP_CA_MODULE" >> %s\n'
        'for a in "$@"; do case $a in BUILD=*) b=${a#BUILD=};; esac; done\n'
        'if [ -n "$b" ]; then mkdir -p "$2/$b" && printf \'UF2\\n\' > "$2/$b/firmware.uf2"; fi\n' % log,
    )
    executable(bin_dir / "arm-none-eabi-gcc", "#!/bin/sh\n")
    executable(bin_dir / "cmake", "#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    monkeypatch.setattr(common, "BUILD_DIR", tmp_path / "build")

    status = cli.main(
        ["firmware", "--board", "RPI_PICO_W", "--micropython", str(root), "--ca-module", str(ca_module), "--jobs", "2"]
    )

    out = capsys.readouterr().out
    assert status == 0, out
    calls = log.read_text().splitlines()
    staged = tmp_path / "build" / "firmware" / "RPI_PICO_W" / "ca_roots.py"
    manifest = REPO_DIR / "boards" / "RPI_PICO_W" / "manifest.py"
    assert calls[0] == "-C %s -j2 CA=%s" % (root / "mpy-cross", staged)
    assert calls[1] == "-C %s BOARD=RPI_PICO_W submodules CA=%s" % (root / "ports" / "rp2", staged)
    assert calls[2] == "-C %s -j2 BOARD=RPI_PICO_W BUILD=build-RPI_PICO_W-microsmtp FROZEN_MANIFEST=%s CA=%s" % (
        root / "ports" / "rp2",
        manifest,
        staged,
    )
    assert staged.read_bytes() == ca_module.read_bytes()
    assert (tmp_path / "build" / "firmware" / "RPI_PICO_W" / "firmware.uf2").read_bytes() == b"UF2\n"
    assert "microsmtp flash --board RPI_PICO_W --firmware" in out


def fake_make(bin_dir, log, image):
    """A stand-in make on PATH that logs its arguments and writes ``image`` into BUILD=."""
    bin_dir.mkdir(exist_ok=True)
    executable(
        bin_dir / "make",
        '#!/bin/sh\necho "$*" >> %s\n'
        'for a in "$@"; do case $a in BUILD=*) b=${a#BUILD=};; esac; done\n'
        'if [ -n "$b" ]; then mkdir -p "$2/$b" && printf \'ELF\\n\' > "$2/$b/%s" && chmod +x "$2/$b/%s"; fi\n'
        % (log, image, image),
    )


def test_firmware_unix_32bit_tls_on_heap(tmp_path, monkeypatch, capsys):
    root = fake_tree(tmp_path, "unix", "UNIX", git=False)
    bin_dir = tmp_path / "bin"
    log = tmp_path / "make.log"
    fake_make(bin_dir, log, "micropython")
    executable(bin_dir / "i686-linux-gnu-gcc", "#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    monkeypatch.setattr(common, "BUILD_DIR", tmp_path / "build")

    status = cli.main(
        ["firmware", "--board", "UNIX", "--32bit", "--tls-on-heap", "--micropython", str(root), "--jobs", "2"]
    )

    out = capsys.readouterr().out
    assert status == 0, out
    calls = log.read_text().splitlines()
    # Not a git checkout: no `make submodules`, the tree is used as it is.
    assert calls == [
        "-C %s -j2" % (root / "mpy-cross"),
        "-C %s -j2 VARIANT=standard MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0 BUILD=build-UNIX-microsmtp-32bit-tls-on-heap "
        'FROZEN_MANIFEST=%s CROSS_COMPILE=i686-linux-gnu- MBEDTLS_CONFIG_FILE=\\"%s\\" '
        "CFLAGS_EXTRA=-DMICROPY_TRACKED_ALLOC=1"
        % (root / "ports" / "unix", UNIX_DIR / "manifest.py", UNIX_DIR / "mbedtls_config_gc_heap.h"),
    ]
    image = tmp_path / "build" / "firmware" / "UNIX" / "micropython-32bit-tls-on-heap"
    assert image.read_bytes() == b"ELF\n"
    assert os.access(image, os.X_OK)
    assert "microsmtp sim --micropython %s" % image in out
    assert not (tmp_path / "build" / "firmware" / "UNIX" / "ca_roots.py").exists()


def unix_build_setup(tmp_path, monkeypatch, git=True, compiler="cc"):
    """A UNIX tree with mpy-cross built, a stand-in make and compiler on PATH; return (root, make log)."""
    root = fake_tree(tmp_path, "unix", "UNIX", git=git)
    (root / "mpy-cross" / "build").mkdir(parents=True)
    (root / "mpy-cross" / "build" / "mpy-cross").write_text("")
    bin_dir = tmp_path / "bin"
    log = tmp_path / "make.log"
    fake_make(bin_dir, log, "micropython")
    executable(bin_dir / compiler, "#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    monkeypatch.setattr(common, "BUILD_DIR", tmp_path / "build")
    return root, log


def test_firmware_unix_runs_submodules_in_a_git_checkout(tmp_path, monkeypatch, capsys):
    root, log = unix_build_setup(tmp_path, monkeypatch)

    status = cli.main(["firmware", "--board", "UNIX", "--micropython", str(root), "--jobs", "1"])

    assert status == 0, capsys.readouterr()
    calls = log.read_text().splitlines()
    port = root / "ports" / "unix"
    assert calls == [
        "-C %s VARIANT=standard MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0 submodules" % port,
        "-C %s -j1 VARIANT=standard MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0 BUILD=build-UNIX-microsmtp FROZEN_MANIFEST=%s"
        % (port, REPO_DIR / "boards" / "UNIX" / "manifest.py"),
    ]
    assert (tmp_path / "build" / "firmware" / "UNIX" / "micropython").is_file()


def test_firmware_build_drops_cached_frozen_bytecode(tmp_path, monkeypatch, capsys):
    # The cached .mpy is newer than a source taken from another checkout, so MicroPython's
    # build would keep it: the cache must go before each build.
    root, log = unix_build_setup(tmp_path, monkeypatch, git=False)
    cached = root / "ports" / "unix" / "build-UNIX-microsmtp" / "frozen_mpy" / "alerts" / "sender.mpy"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"M\x06")

    status = cli.main(["firmware", "--board", "UNIX", "--micropython", str(root), "--jobs", "1"])

    assert status == 0, capsys.readouterr()
    assert not cached.parent.parent.exists()
    assert (root / "ports" / "unix" / "build-UNIX-microsmtp" / "micropython").is_file()


def test_firmware_unix_32bit_needs_cross_compiler(tmp_path, monkeypatch, capsys):
    root = fake_tree(tmp_path, "unix", "UNIX")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    status = cli.main(["firmware", "--board", "UNIX", "--32bit", "--micropython", str(root)])

    assert status == 78
    assert "i686-linux-gnu-gcc not on PATH" in capsys.readouterr().err


def test_firmware_unix_stock_freezes_only_stand_ins(tmp_path, monkeypatch, capsys):
    root, log = unix_build_setup(tmp_path, monkeypatch, git=False)

    status = cli.main(["firmware", "--board", "UNIX", "--stock", "--micropython", str(root), "--jobs", "1"])

    assert status == 0, capsys.readouterr()
    assert log.read_text().splitlines() == [
        "-C %s -j1 VARIANT=standard MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0 BUILD=build-UNIX-microsmtp-stock "
        "FROZEN_MANIFEST=%s" % (root / "ports" / "unix", UNIX_DIR / "manifest_stock.py")
    ]
    assert (tmp_path / "build" / "firmware" / "UNIX" / "micropython-stock").is_file()


def test_firmware_unix_tls13_build_command(tmp_path, monkeypatch, capsys):
    root, log = unix_build_setup(tmp_path, monkeypatch, git=False)

    status = cli.main(["firmware", "--board", "UNIX", "--tls13", "--micropython", str(root), "--jobs", "2"])

    out = capsys.readouterr().out
    assert status == 0, out
    assert log.read_text().splitlines() == [
        "-C %s -j2 VARIANT=standard MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0 BUILD=build-UNIX-microsmtp-tls13 "
        "FROZEN_MANIFEST=%s USER_C_MODULES=%s" % (root / "ports" / "unix", UNIX_DIR / "manifest.py", UNIX_DIR / "tls13")
    ]
    image = tmp_path / "build" / "firmware" / "UNIX" / "micropython-tls13"
    assert image.read_bytes() == b"ELF\n"
    assert "microsmtp bench --micropython %s" % image in out


def test_firmware_unix_tls13_with_all_options(tmp_path, monkeypatch, capsys):
    root, log = unix_build_setup(tmp_path, monkeypatch, git=False, compiler="i686-linux-gnu-gcc")

    status = cli.main(
        [
            "firmware",
            "--board",
            "UNIX",
            "--stock",
            "--tls13",
            "--tls-on-heap",
            "--32bit",
            "--micropython",
            str(root),
            "--jobs",
            "1",
        ]
    )

    assert status == 0, capsys.readouterr()
    # The suffixes come in a fixed order, whatever the order of the options.
    assert log.read_text().splitlines() == [
        "-C %s -j1 VARIANT=standard MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0 "
        "BUILD=build-UNIX-microsmtp-32bit-tls-on-heap-tls13-stock FROZEN_MANIFEST=%s "
        'CROSS_COMPILE=i686-linux-gnu- MBEDTLS_CONFIG_FILE=\\"%s\\" CFLAGS_EXTRA=-DMICROPY_TRACKED_ALLOC=1 '
        "USER_C_MODULES=%s"
        % (
            root / "ports" / "unix",
            UNIX_DIR / "manifest_stock.py",
            UNIX_DIR / "mbedtls_config_gc_heap.h",
            UNIX_DIR / "tls13",
        )
    ]
    assert (tmp_path / "build" / "firmware" / "UNIX" / "micropython-32bit-tls-on-heap-tls13-stock").is_file()


def test_unix_tls13_module_names_settings_file():
    # MicroPython's build includes DIR/micropython.mk for USER_C_MODULES=DIR. The
    # settings file that it passes to mbedTLS must be in the same folder.
    makefile = (UNIX_DIR / "tls13" / "micropython.mk").read_text()
    settings = UNIX_DIR / "tls13" / "mbedtls_config_tls13.h"

    assert '-DMBEDTLS_USER_CONFIG_FILE=\\"$(USERMOD_DIR)/%s\\"' % settings.name in makefile
    assert "#define MBEDTLS_SSL_PROTO_TLS1_3\n" in settings.read_text()


@pytest.mark.parametrize("option", ["--32bit", "--tls-on-heap", "--tls13", "--stock"])
def test_firmware_unix_options_rejected_for_real_boards(option, ca_module, tmp_path, capsys):
    root = fake_tree(tmp_path, "rp2", "RPI_PICO_W")

    status = cli.main(
        ["firmware", "--board", "RPI_PICO_W", option, "--micropython", str(root), "--ca-module", str(ca_module)]
    )

    assert status == 78
    assert "apply to --board UNIX only" in capsys.readouterr().err


def test_firmware_rejects_paths_with_spaces(tmp_path, monkeypatch, capsys):
    root = fake_tree(tmp_path / "my trees", "unix", "UNIX")

    status = cli.main(["firmware", "--board", "UNIX", "--micropython", str(root)])

    assert status == 78
    assert "contains a space, which MicroPython's build cannot handle" in capsys.readouterr().err


def test_firmware_needs_make_and_jobs(tmp_path, monkeypatch, capsys):
    root = fake_tree(tmp_path, "unix", "UNIX")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "cc", "#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(bin_dir))

    no_make = cli.main(["firmware", "--board", "UNIX", "--micropython", str(root)])
    no_make_err = capsys.readouterr().err
    no_jobs = cli.main(["firmware", "--board", "UNIX", "--micropython", str(root), "--jobs", "0"])

    assert no_make == 78
    assert "make not on PATH" in no_make_err
    assert no_jobs == 78
    assert "--jobs must be 1 or more, not 0" in capsys.readouterr().err


def test_firmware_unix_needs_submodules_without_git(tmp_path, capsys):
    root = fake_tree(tmp_path, "unix", "UNIX", git=False)
    (root / "lib" / "mbedtls" / "library").rmdir()

    status = cli.main(["firmware", "--board", "UNIX", "--micropython", str(root)])

    assert status == 78
    assert "has no lib/mbedtls and is not a git clone" in capsys.readouterr().err
