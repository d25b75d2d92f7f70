"""`microsmtp flash`: the esptool invocation per chip and the UF2 copy onto a BOOTSEL drive.

No board is attached here, so the ESP32 tests check the exact command and that
esptool itself accepts it (it then fails only at opening the missing port).
"""

import subprocess
import sys

import pytest

from microsmtp_tools import cli, flash

ESP_IMAGE = b"\xe9\x03\x02\x20" + bytes(1020)
UF2_IMAGE = b"UF2\n" + bytes(508)
INFO_UF2 = "UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n"


@pytest.fixture
def esp_image(tmp_path):
    path = tmp_path / "ESP32_GENERIC-v1.29.0.bin"
    path.write_bytes(ESP_IMAGE)
    return path


@pytest.fixture
def uf2_image(tmp_path):
    path = tmp_path / "RPI_PICO_W-v1.29.0.uf2"
    path.write_bytes(UF2_IMAGE)
    return path


@pytest.fixture
def drive(tmp_path):
    path = tmp_path / "media" / "user" / "RPI-RP2"
    path.mkdir(parents=True)
    (path / "INFO_UF2.TXT").write_text(INFO_UF2)
    (path / "INDEX.HTM").write_text("<html></html>")
    return path


@pytest.mark.parametrize(
    "board, chip, offset",
    [
        ("ESP32_GENERIC", "esp32", "0x1000"),
        ("ESP32_GENERIC_S2", "esp32s2", "0x1000"),
        ("ESP32_GENERIC_S3", "esp32s3", "0x0"),
        ("ESP32_GENERIC_C3", "esp32c3", "0x0"),
        ("ESP32_GENERIC_C6", "esp32c6", "0x0"),
    ],
)
def test_esptool_command_per_chip(board, chip, offset, esp_image, capsys):
    commands = flash.esptool_command(flash.ESP_BOARDS[board], "/dev/ttyUSB0", 460800, esp_image)

    assert commands == [
        [
            sys.executable,
            "-m",
            "esptool",
            "--chip",
            chip,
            "--port",
            "/dev/ttyUSB0",
            "--baud",
            "460800",
            "write-flash",
            "-z",
            offset,
            str(esp_image),
        ],
    ]
    status = cli.main(["flash", "--board", board, "--port", "/dev/ttyUSB0", "--firmware", str(esp_image), "--dry-run"])
    out = capsys.readouterr().out
    assert status == 0
    assert "would run: esptool --chip %s --port /dev/ttyUSB0 --baud 460800 write-flash -z %s" % (chip, offset) in out


def test_esp_dry_run_flashes_nothing(esp_image, capsys):
    argv = ["flash", "--board", "ESP32_GENERIC", "--port", "/dev/ttyUSB0", "--firmware", str(esp_image)]

    status = cli.main(argv + ["--dry-run", "--erase"])

    out = capsys.readouterr().out
    assert status == 0
    assert "would run: esptool --chip esp32 --port /dev/ttyUSB0 --baud 460800 erase-flash" in out
    assert "would run: esptool --chip esp32 --port /dev/ttyUSB0 --baud 460800 write-flash -z 0x1000" in out
    assert "dry run: nothing was erased or flashed" in out
    assert "flashed %s" % esp_image.name not in out
    assert "running:" not in out


def test_uf2_dry_run_without_drive(uf2_image, tmp_path, monkeypatch, capsys):
    # No drive is mounted and no picotool is on PATH, which makes a real run fail.
    monkeypatch.setattr(flash, "DRIVE_PATTERNS", (str(tmp_path / "no-media") + "/*/%s",))
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))

    status = cli.main(["flash", "--board", "RPI_PICO_W", "--firmware", str(uf2_image), "--dry-run"])

    out = capsys.readouterr().out
    assert status == 0, out
    assert "would copy %s to <RPI-RP2 drive>/%s" % (uf2_image, uf2_image.name) in out
    assert "no RPI-RP2 drive is mounted now" in out
    assert "dry run: nothing was copied" in out


def test_uf2_dry_run_with_drive(uf2_image, drive, tmp_path, capsys):
    unmounted = tmp_path / "not-mounted" / "RPI-RP2"
    argv = ["flash", "--board", "RPI_PICO_W", "--firmware", str(uf2_image), "--dry-run"]

    status = cli.main(argv + ["--drive", str(drive)])
    out = capsys.readouterr().out
    planned = cli.main(argv + ["--drive", str(unmounted)])
    planned_out = capsys.readouterr().out

    assert status == 0, out
    assert "would copy %s to %s" % (uf2_image, drive / uf2_image.name) in out
    assert "dry run: nothing was copied" in out
    assert "copied; the board restarts" not in out
    assert not (drive / uf2_image.name).exists()
    assert planned == 0, planned_out
    assert "would copy %s to %s" % (uf2_image, unmounted / uf2_image.name) in planned_out
    assert "note: %s does not exist now" % unmounted in planned_out
    assert not unmounted.exists()


def test_esptool_erase_and_baud(esp_image):
    commands = flash.esptool_command("esp32s3", "COM4", 115200, esp_image, erase=True)

    assert commands[0][3:] == ["--chip", "esp32s3", "--port", "COM4", "--baud", "115200", "erase-flash"]
    assert commands[1][-3:] == ["-z", "0x0", str(esp_image)]


def test_esptool_accepts_command(esp_image, tmp_path):
    missing_port = str(tmp_path / "ttyUSB-missing")
    command = flash.esptool_command("esp32", missing_port, 460800, esp_image)[0]

    process = subprocess.run(command, capture_output=True, text=True, timeout=120)

    output = process.stdout + process.stderr
    assert process.returncode != 0
    # A usage error ("No such option", "Usage:") would mean the syntax is wrong; esptool
    # parsed the command when the failure is opening the missing port.
    assert "Usage:" not in output, output
    assert "Could not open %s" % missing_port in output, output


def test_uf2_copied_to_drive(uf2_image, drive, capsys):
    status = cli.main(["flash", "--board", "RPI_PICO_W", "--firmware", str(uf2_image), "--drive", str(drive)])

    assert status == 0, capsys.readouterr()
    assert (drive / uf2_image.name).read_bytes() == UF2_IMAGE


def test_uf2_drive_found_by_label(uf2_image, drive, monkeypatch):
    monkeypatch.setattr(flash, "DRIVE_PATTERNS", (str(drive.parent.parent) + "/*/%s",))

    assert flash.find_drive("RPI_PICO_W") == drive


def test_uf2_drive_without_info_file(uf2_image, tmp_path, capsys):
    not_a_board = tmp_path / "usbstick"
    not_a_board.mkdir()

    status = cli.main(["flash", "--board", "RPI_PICO_W", "--firmware", str(uf2_image), "--drive", str(not_a_board)])

    assert status == 78
    assert "no INFO_UF2.TXT" in capsys.readouterr().err
    assert not (not_a_board / uf2_image.name).exists()


def test_uf2_drive_of_other_board(uf2_image, drive, capsys):
    status = cli.main(["flash", "--board", "RPI_PICO2_W", "--firmware", str(uf2_image), "--drive", str(drive)])

    assert status == 78
    assert "does not name Board-ID RP2350" in capsys.readouterr().err


@pytest.mark.parametrize(
    "board, image_fixture, message",
    [
        ("RPI_PICO_W", "esp_image", "is not a UF2 file"),
        ("ESP32_GENERIC", "uf2_image", "is not an ESP32 .bin image"),
    ],
)
def test_wrong_image_type(board, image_fixture, message, request, drive, capsys):
    image = request.getfixturevalue(image_fixture)

    status = cli.main(
        [
            "flash",
            "--board",
            board,
            "--firmware",
            str(image),
            "--port",
            "/dev/ttyUSB0",
            "--drive",
            str(drive),
            "--dry-run",
        ]
    )

    assert status == 78
    assert message in capsys.readouterr().err


def test_missing_image_names_download_page(tmp_path, capsys):
    status = cli.main(
        ["flash", "--board", "ESP32_GENERIC", "--port", "/dev/ttyUSB0", "--firmware", str(tmp_path / "x.bin")]
    )

    assert status == 78
    assert "https://micropython.org/download/ESP32_GENERIC/" in capsys.readouterr().err
