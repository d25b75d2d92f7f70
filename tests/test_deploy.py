"""`microsmtp deploy` against the virtual board: the unix port behind socat on loopback.

The board is one socat listener for the whole module. The first deploy takes about
15 s, because mpremote copies files in 256-byte steps through the pseudo-terminal.
"""

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import unix_port
from microsmtp_tools import cli, common, mpy
from microsmtp_tools import deploy as deploy_module
from microsmtp_tools.virtual_board import SOCAT_MISSING, VirtualBoard

REPO_DIR = Path(__file__).resolve().parent.parent
CONFIG_EXAMPLE = REPO_DIR / "config.example.json"
SENSOR_DRIVERS = ("dht.py", "onewire.py", "ds18x20.py")


def mpremote(board, *commands):
    executable = common.find_executable("mpremote")
    process = subprocess.run(
        [executable, "connect", board.url, "resume", *commands],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_DIR,
    )
    assert process.returncode == 0, process.stdout + process.stderr
    return process.stdout


def deploy(board, capsys, *extra):
    status = cli.main(["deploy", "--port", board.url, "--no-reset", *extra])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def board(micropython, tmp_path_factory):
    if shutil.which("socat") is None:
        pytest.fail(SOCAT_MISSING + "; run make setup or bash .ci/run", pytrace=False)
    directory = tmp_path_factory.mktemp("board")
    # The sensor drivers of config.example.json, which a board's image has and the unix
    # port lacks: the core tests' stand-ins.
    for name in SENSOR_DRIVERS:
        shutil.copyfile(REPO_DIR / "tests" / "core" / "standins" / name, directory / name)
    with VirtualBoard(directory, micropython=micropython) as running:
        yield running


@pytest.fixture(scope="module")
def ca_module(certs, tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca_roots.py"
    assert cli.main(["certs", "build", "--cert", str(certs.ca_pem_path), "-o", str(path), "--no-measure"]) == 0
    return path


@pytest.fixture(scope="module")
def first_deploy(board, ca_module):
    """Deploy once for the module; return (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["deploy", "--port", board.url, "--no-reset", "--ca-module", str(ca_module), "--config", str(CONFIG_EXAMPLE)]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, out.getvalue(), err.getvalue()


def test_first_deploy_copies_firmware(first_deploy, board):
    status, out, err = first_deploy

    assert status == 0, out + err
    assert "0 unchanged" in out
    for name in ("main.py", "ca_roots.mpy", "config.json", "selftest.mpy", "microsmtp/client.mpy"):
        assert (board.directory / name).is_file(), name
    # CPython-only code stays off the board.
    assert not (board.directory / "microsmtp" / "cpython.mpy").exists()
    staged = common.BUILD_DIR / "deploy" / "x64"
    for path in staged.rglob("*"):
        if path.is_file():
            relative = path.relative_to(staged)
            assert (board.directory / relative).read_bytes() == path.read_bytes(), relative
    assert (board.directory / "main.py").read_bytes() == (REPO_DIR / "firmware" / "main.py").read_bytes()


def test_second_deploy_skips_identical_files(first_deploy, board, ca_module, capsys):
    count = len(list((common.BUILD_DIR / "deploy" / "x64").rglob("*.*")))

    status, out, err = deploy(board, capsys, "--ca-module", str(ca_module), "--config", str(CONFIG_EXAMPLE))

    assert status == 0, out + err
    assert "deploy: 0 copied, %d unchanged, all %d verified by SHA-256" % (count, count) in out


def test_deploy_copies_only_changed_config(first_deploy, board, ca_module, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(CONFIG_EXAMPLE.read_text().replace('"greenhouse-1"', '"greenhouse-2"'))

    status, out, err = deploy(board, capsys, "--ca-module", str(ca_module), "--config", str(config))

    assert status == 0, out + err
    assert "copying   config.json" in out
    assert "deploy: 1 copied," in out
    assert b"greenhouse-2" in (board.directory / "config.json").read_bytes()


def test_deploy_removes_stale_source(first_deploy, board, ca_module, capsys):
    stale = board.directory / "microsmtp" / "client.py"
    stale.write_text("raise ImportError('stale copy')\n")
    old_module = board.directory / "microsmtp" / "removed_module.mpy"
    old_module.write_bytes(b"M\x06\x00\x1f")

    status, out, err = deploy(board, capsys, "--ca-module", str(ca_module), "--config", str(CONFIG_EXAMPLE))

    assert status == 0, out + err
    assert "removed microsmtp/client.py (stale)" in out
    assert not stale.exists()
    assert not old_module.exists()


def test_selftest_passes_on_board(first_deploy, board):
    output = mpremote(board, "exec", "import selftest\nselftest.run()")

    assert "FAIL" not in output, output
    assert "ok    import microsmtp.client" in output
    assert "ok    ca_roots.ROOTS[0]" in output
    assert "ok    config.json is valid" in output
    lines = [line for line in output.splitlines() if line.startswith("selftest: ")]
    assert len(lines) == 1, output
    assert lines[0].endswith(" passed, 0 failed"), output


def test_selftest_reports_unparsable_root(first_deploy, board, ca_module, tmp_path, capsys):
    broken = tmp_path / "ca_roots.py"
    broken.write_text("ROOTS = (b'not a certificate',)\n")

    status, out, err = deploy(board, capsys, "--ca-module", str(broken), "--config", str(CONFIG_EXAMPLE), "--selftest")
    restored, restore_out, restore_err = deploy(
        board, capsys, "--ca-module", str(ca_module), "--config", str(CONFIG_EXAMPLE)
    )

    assert status == 70, out + err
    assert "FAIL  ca_roots.ROOTS[0]" in out
    assert "selftest: " in out
    assert " 1 failed" in out
    assert restored == 0, restore_out + restore_err


def deploy_offline(capsys, ca_module, *extra, target=("--arch", "x64")):
    """Run deploy against port 1, where no board listens; return (status, stderr).

    For the checks that must stop a deploy before it contacts the board.
    """
    argv = ["deploy", "--port", "socket://127.0.0.1:1", *target, "--no-reset", "--ca-module", str(ca_module)]
    status = cli.main(argv + list(extra))
    return status, capsys.readouterr().err


def config_with_ca_file(tmp_path, ca_file):
    config = json.loads(CONFIG_EXAMPLE.read_text())
    config["smtp"]["ca_file"] = ca_file
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_deploy_copies_ca_file(first_deploy, board, ca_module, certs, tmp_path, capsys):
    config = config_with_ca_file(tmp_path, "roots/test ca.pem")

    status, out, err = deploy(
        board,
        capsys,
        "--ca-module",
        str(ca_module),
        "--config",
        str(config),
        "--ca-file",
        str(certs.ca_pem_path),
        "--selftest",
    )
    copied = (board.directory / "roots" / "test ca.pem").read_bytes()
    restored, restore_out, restore_err = deploy(
        board, capsys, "--ca-module", str(ca_module), "--config", str(CONFIG_EXAMPLE)
    )

    assert status == 0, out + err
    assert "CA file: %s has 1 root(s), copied as roots/test ca.pem" % certs.ca_pem_path in out
    assert copied == certs.ca_pem
    # The self-test checks the roots the firmware uses: the file's, not the module's.
    assert "ok    smtp.ca_file roots/test ca.pem: 1 roots" in out
    assert "ca_roots.ROOTS" not in out
    assert restored == 0, restore_out + restore_err


def test_deploy_warns_of_missing_ca_file(first_deploy, board, ca_module, tmp_path, capsys):
    config = config_with_ca_file(tmp_path, "missing.pem")

    status, out, err = deploy(board, capsys, "--ca-module", str(ca_module), "--config", str(config), "--selftest")
    restored, restore_out, restore_err = deploy(
        board, capsys, "--ca-module", str(ca_module), "--config", str(CONFIG_EXAMPLE)
    )

    assert "config.json names smtp.ca_file missing.pem, which the board does not have" in err
    assert "deploy again with --ca-file FILE" in err
    assert status == 70, out + err
    assert "FAIL  smtp.ca_file missing.pem: SenderConfigError: smtp.ca_file missing.pem cannot be read" in out
    assert restored == 0, restore_out + restore_err


@pytest.mark.parametrize(
    "content, message",
    [
        (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "certificate 1 of the PEM text"),
        (b"not a certificate\n", "neither a PEM nor a DER certificate"),
        (b"0\x03\x02\x01\x01", "certificate 1 cannot be loaded as a CA root"),
    ],
    ids=["bad-base64", "text", "not-a-certificate"],
)
def test_deploy_rejects_invalid_ca_file(ca_module, tmp_path, capsys, content, message):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(content)
    config = config_with_ca_file(tmp_path, "ca.pem")

    status, err = deploy_offline(capsys, ca_module, "--config", str(config), "--ca-file", str(ca_file))

    assert status == 78, err
    assert "microsmtp deploy: error: checking --ca-file %s failed: " % ca_file in err
    assert message in err


def ed25519_root_pem():
    """Return a self-signed CA certificate with an Ed25519 key, which OpenSSL loads and mbedTLS rejects."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import NameOID

    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ed25519 test root")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, None)
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def test_deploy_rejects_root_that_mbedtls_cannot_load(ca_module, certs, tmp_path, capsys):
    # The first root is the test CA (RSA), which both libraries load.
    ca_file = tmp_path / "bundle.pem"
    ca_file.write_bytes(certs.ca_pem + ed25519_root_pem())
    config = config_with_ca_file(tmp_path, "bundle.pem")

    status, err = deploy_offline(capsys, ca_module, "--config", str(config), "--ca-file", str(ca_file))

    assert status == 78, err
    assert "certificate 2 is rejected by mbedTLS, the TLS library of the board" in err
    assert "give a root with an RSA or ECDSA key" in err


def test_deploy_without_micropython_warns(ca_module, certs, tmp_path, capsys, monkeypatch):
    from microsmtp_tools import send_micropython

    monkeypatch.setattr(send_micropython, "find_micropython", lambda: None)
    config = config_with_ca_file(tmp_path, "ca.pem")

    # The deploy goes on after the warning, and stops at port 1, where no board listens.
    status, err = deploy_offline(capsys, ca_module, "--config", str(config), "--ca-file", str(certs.ca_pem_path))

    assert status != 0
    assert "checked with OpenSSL only; run the board's self-test" in err
    assert "checking --ca-file" not in err


@pytest.mark.parametrize(
    "path, remote",
    [("ca.pem", "ca.pem"), ("/certs/ca.pem", "certs/ca.pem"), ("certs/test ca.pem", "certs/test ca.pem")],
)
def test_ca_file_board_path(path, remote):
    assert deploy_module.board_path(path) == remote


def test_ca_file_in_nested_outbox_rejected():
    # The board's start removes files it cannot read from the outbox folder.
    with pytest.raises(common.ToolError):
        deploy_module.board_path("data/outbox/ca.json", "data/outbox")
    assert deploy_module.board_path("data/ca.pem", "data/outbox") == "data/ca.pem"


@pytest.mark.parametrize(
    "path",
    [
        "main.py",
        "config.json",
        "/board.json",
        "ca_roots.mpy",
        "alerts/ca.pem",
        "microsmtp/x.der",
        "certs/ca.py",
        "outbox/ca.pem",
        "oauth2_token.json.tmp",
        "rule_state.json",
        "a/../b.pem",
        "./ca.pem",
        "certs/",
        "certs//ca.pem",
        " ca.pem",
        "../ca.pem",
    ],
)
def test_ca_file_board_path_rejected(path):
    with pytest.raises(common.ToolError) as caught:
        deploy_module.board_path(path)
    assert caught.value.what == "checking smtp.ca_file %s" % path


def test_deploy_rejects_ca_file_named_main_py(ca_module, certs, tmp_path, capsys):
    config = config_with_ca_file(tmp_path, "main.py")

    status, err = deploy_offline(capsys, ca_module, "--config", str(config), "--ca-file", str(certs.ca_pem_path))

    assert status == 78, err
    assert "checking smtp.ca_file main.py failed: the board uses that path for code" in err


@pytest.mark.parametrize("key, value", [("from", "alerts@exa_mple.com"), ("to", ["a(b)@example.com"])])
def test_deploy_checks_addresses_with_library(key, value):
    # The board's check rejects these too; deploy's own check must, with the library's words.
    loaded = {"smtp": {"from": "alerts@example.com", "to": ["you@example.com"]}}
    loaded["smtp"][key] = value

    with pytest.raises(common.ToolError) as caught:
        deploy_module.check_addresses(loaded, "config.json")

    assert "is not an address the SMTP client can send with" in caught.value.message
    assert "not allowed" in caught.value.message


def test_deploy_rejects_invalid_address(ca_module, tmp_path, capsys):
    config = json.loads(CONFIG_EXAMPLE.read_text())
    config["smtp"]["from"] = "alerts@exa_mple.com"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))

    status, err = deploy_offline(capsys, ca_module, "--config", str(path))

    assert status == 78, err
    assert "smtp.from is invalid: expected an email address" in err


def test_deploy_rejects_watchdog_above_board_limit(ca_module, tmp_path, capsys):
    config = json.loads(CONFIG_EXAMPLE.read_text())
    config["board"] = {"watchdog_ms": 30000}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))

    status, err = deploy_offline(capsys, ca_module, "--config", str(path), target=("--board", "RPI_PICO_W"))

    assert status == 78, err
    assert "board.watchdog_ms is invalid: expected at most 8388" in err


def test_deploy_ca_file_needs_config_path(ca_module, certs, capsys):
    status, err = deploy_offline(
        capsys, ca_module, "--config", str(CONFIG_EXAMPLE), "--ca-file", str(certs.ca_pem_path)
    )

    assert status == 78, err
    assert "--ca-file needs --config with smtp.ca_file" in err


def test_selftest_reports_missing_sensor_driver(first_deploy, board):
    driver = board.directory / "ds18x20.py"
    saved = driver.read_bytes()
    driver.unlink()
    try:
        output = mpremote(board, "exec", "import selftest\nselftest.run()")
    finally:
        driver.write_bytes(saved)

    assert "FAIL  import ds18x20 for sensor type ds18b20: ImportError" in output, output
    assert "ok    import dht for sensor type dht22" in output, output
    assert "ok    import onewire for sensor type ds18b20" in output, output
    assert " 1 failed" in output, output


def test_mip_installs_package_json(first_deploy, board):
    mpremote(board, "mip", "install", "./package.json")

    library = board.directory / ".micropython" / "lib" / "microsmtp"
    for source in sorted((REPO_DIR / "firmware" / "microsmtp").glob("*.py")):
        if source.as_posix().endswith(mpy.HOST_ONLY):
            assert not (library / source.name).exists(), source.name
        else:
            assert (library / source.name).read_bytes() == source.read_bytes(), source.name
    # Without "" on the path, the import finds the mip copy, not the deployed .mpy files.
    script = "import sys\nsys.path.remove('')\nimport microsmtp\nprint('from', microsmtp.__file__)"
    output = mpremote(board, "exec", script)
    assert ".micropython/lib/microsmtp/__init__.py" in output, output


def test_deploy_unreachable_board(capsys, ca_module):
    status = cli.main(
        ["deploy", "--port", "socket://127.0.0.1:1", "--arch", "x64", "--no-reset", "--ca-module", str(ca_module)]
    )
    err = capsys.readouterr().err

    assert status == 69
    assert "microsmtp deploy: error: reading the board's files failed: mpremote exited with status" in err


def test_deploy_missing_ca_module(capsys, tmp_path):
    status = cli.main(
        ["deploy", "--port", "socket://127.0.0.1:1", "--arch", "x64", "--ca-module", str(tmp_path / "none.py")]
    )

    assert status == 78
    assert "check --ca-module" in capsys.readouterr().err


def test_deploy_without_config_warns(first_deploy, board, ca_module, tmp_path, capsys):
    on_board = board.directory / "config.json"
    saved = tmp_path / "config.json"
    shutil.move(on_board, saved)
    try:
        status, out, err = deploy(board, capsys, "--ca-module", str(ca_module))
    finally:
        shutil.move(saved, on_board)
    kept_status, kept_out, kept_err = deploy(board, capsys, "--ca-module", str(ca_module))

    assert status == 0, out + err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1, err
    assert "the board has no config.json" in warnings[0]
    assert "--config FILE" in warnings[0]
    assert kept_status == 0, kept_out + kept_err
    assert "warning" not in kept_err
    assert "kept      config.json (already on the board" in kept_out


def board_config_error(micropython, config, tmp_path):
    """Return the message the firmware's config loader raises on ``config`` under MicroPython."""
    board_dir = tmp_path / "board-check"
    board_dir.mkdir()
    shutil.copyfile(config, board_dir / "config.json")
    script = "from alerts.config import load, ConfigError\ntry:\n    load()\nexcept ConfigError as exc:\n    print(exc)"
    env = dict(os.environ, MICROPYPATH=".frozen:" + str(REPO_DIR / "firmware"))
    process = unix_port.run_micropython(["-c", script], executable=micropython, cwd=board_dir, env=env)
    assert process.returncode == 0, unix_port.format_output(process)
    return process.stdout.strip()


def test_deploy_rejects_invalid_config(micropython, ca_module, tmp_path, capsys):
    config = json.loads(CONFIG_EXAMPLE.read_text())
    config["smtp"]["port"] = "587"
    path = tmp_path / "invalid.json"
    path.write_text(json.dumps(config))

    # An unreachable port: the check must fail before mpremote is ever run.
    argv = ["deploy", "--port", "socket://127.0.0.1:1", "--arch", "x64", "--ca-module", str(ca_module)]
    status = cli.main(argv + ["--config", str(path)])
    captured = capsys.readouterr()

    board_message = board_config_error(micropython, path, tmp_path)
    assert board_message.startswith("config.json: smtp.port is invalid"), board_message
    assert status == 78, captured.out + captured.err
    assert "microsmtp deploy: error: checking %s failed: %s" % (path, board_message) in captured.err
    assert "deploy:" not in captured.out


def test_deploy_rejects_config_syntax(ca_module, tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text('{"device": "greenhouse-1",\n}')

    argv = ["deploy", "--port", "socket://127.0.0.1:1", "--arch", "x64", "--ca-module", str(ca_module)]
    status = cli.main(argv + ["--config", str(path)])
    err = capsys.readouterr().err

    assert status == 78, err
    assert "%s is not valid JSON (line 2, column 1" % path in err


# -- the virtual board as a program ---------------------------------------------------------


def processes_in(directory):
    """Return the ids of processes whose working directory is ``directory`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == directory:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def stop_board_process(process):
    """End a virtual board process with SIGTERM, so it stops its socat too, and SIGKILL as a last resort."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_virtual_board_help(tmp_path):
    command = [sys.executable, "-m", "microsmtp_tools.virtual_board", "--help"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        out, err = process.communicate(timeout=30)
    finally:
        stop_board_process(process)

    assert process.returncode == 0, err
    assert "usage: python -m microsmtp_tools.virtual_board" in out
    assert "kill PID" in out
    assert list(tmp_path.iterdir()) == []


# SIGINT runs through a launcher that sets SIGINT to its default first, because a test
# run started in the background of a script inherits SIGINT as ignored.
LAUNCHERS = {
    signal.SIGTERM: ["-m", "microsmtp_tools.virtual_board"],
    signal.SIGINT: [
        "-c",
        "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "from microsmtp_tools.virtual_board import main; sys.exit(main())",
    ],
}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_virtual_board_stops_on_signal(signum, micropython, tmp_path):
    if shutil.which("socat") is None:
        pytest.fail(SOCAT_MISSING + "; run make setup or bash .ci/run", pytrace=False)
    folder = tmp_path / "board"
    command = [sys.executable, *LAUNCHERS[signum], str(folder), "--micropython", micropython]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first_line = process.stdout.readline()
        assert first_line.startswith("virtual board in %s at socket://127.0.0.1:" % folder), first_line
        port = int(first_line.split("socket://127.0.0.1:")[1].split(";")[0])
        # A connection starts a MicroPython process, which the stop must end too.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            banner = b""
            while b">>> " not in banner:
                chunk = connection.recv(1024)
                assert chunk, banner
                banner += chunk
            running = processes_in(folder)
            assert len(running) >= 2, running

            process.send_signal(signum)
            out, err = process.communicate(timeout=30)
    finally:
        stop_board_process(process)

    assert process.returncode == 0, out + err
    assert "virtual board: stopping on %s" % signum.name in out
    assert processes_in(folder) == []


@pytest.mark.parametrize("arch", ["xtensawin", "armv6m"])
def test_board_mpy_loads_on_unix_port(arch, micropython, tmp_path):
    # Bytecode-only .mpy files carry no architecture, so a board's files load on any
    # MicroPython with .mpy version 6, including the unix port.
    target = tmp_path / "microsmtp"
    for source in sorted((REPO_DIR / "firmware" / "microsmtp").glob("*.py")):
        mpy.compile_file(source, target / (source.stem + ".mpy"), arch)
    for compiled in target.iterdir():
        header = compiled.read_bytes()[:4]
        assert header[:2] == b"M\x06", compiled.name
        assert header[2] == 0, "%s has native code (feature byte %#x)" % (compiled.name, header[2])
    process = unix_port.run_micropython(
        [
            "-c",
            "import sys; sys.path.insert(0, %r); import microsmtp.client; print(microsmtp.client.__file__)"
            % str(tmp_path),
        ],
        executable=micropython,
    )
    assert process.stdout.strip().endswith("microsmtp/client.mpy"), unix_port.format_output(process)


def test_decode_board_mpy_value():
    assert mpy.decode_sys_mpy(2822) == (6, 3, "x64")
    assert mpy.decode_sys_mpy(6 | (3 << 8) | (10 << 10)) == (6, 3, "xtensawin")
    assert mpy.decode_sys_mpy(6 | (3 << 8) | (4 << 10)) == (6, 3, "armv6m")
