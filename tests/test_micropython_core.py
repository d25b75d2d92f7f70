"""Run the core tests (tests/core/test_*.py) under the MicroPython unix port.

Each module runs in its own `micropython` process through tests/core/run.py with
a bounded heap, so a module that needs CPython-only features or too much memory
fails here even though it passes under pytest.
"""

import subprocess
import sys

import pytest

import unix_port

CORE_MODULES = sorted(path.stem for path in unix_port.CORE_TESTS_DIR.glob("test_*.py"))


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_under_micropython(micropython, module):
    process = unix_port.run_micropython(
        [str(unix_port.CORE_RUNNER), module], executable=micropython
    )
    output = unix_port.format_output(process)
    assert process.returncode == 0, output
    assert " passed, 0 failed" in process.stdout, output


def write_sample_tests(directory):
    path = directory / "test_runner_sample.py"
    path.write_text(
        "def test_passes():\n"
        "    assert 1 + 1 == 2\n"
        "\n"
        "def test_fails():\n"
        "    assert 1 + 1 == 3, 'arithmetic is off'\n"
    )
    return path


def test_runner_reports_failures_under_micropython(micropython, tmp_path):
    sample = write_sample_tests(tmp_path)
    process = unix_port.run_micropython(
        [str(unix_port.CORE_RUNNER), str(sample)], executable=micropython
    )
    output = unix_port.format_output(process)
    assert process.returncode == 1, output
    assert process.stdout.splitlines()[-1] == "1 passed, 1 failed", output
    assert "FAIL test_runner_sample.test_fails" in process.stdout, output
    assert "arithmetic is off" in process.stdout, output


def test_runner_fails_when_no_test_ran(micropython, tmp_path):
    empty = tmp_path / "test_runner_empty.py"
    empty.write_text("VALUE = 1\n")
    process = unix_port.run_micropython(
        [str(unix_port.CORE_RUNNER), str(empty)], executable=micropython
    )
    output = unix_port.format_output(process)
    assert process.returncode == 1, output
    assert process.stdout.splitlines()[-1] == "0 passed, 0 failed", output


def test_runner_reports_failures_under_cpython(tmp_path):
    sample = write_sample_tests(tmp_path)
    process = subprocess.run(
        [sys.executable, str(unix_port.CORE_RUNNER), str(sample)],
        capture_output=True,
        text=True,
        timeout=unix_port.DEFAULT_TIMEOUT,
    )
    output = unix_port.format_output(process)
    assert process.returncode == 1, output
    assert process.stdout.splitlines()[-1] == "1 passed, 1 failed", output
    assert "arithmetic is off" in process.stdout, output
