"""pytest configuration: import paths, Hypothesis profiles and shared fixtures.

Fixtures:
    certs: session-wide servers.CertificateSet (test CA, good and bad server certificates).
    smtp_server: factory that starts a servers.SMTPTestServer and stops it at teardown.
    micropython: path of the MicroPython unix port; fails the test when it is missing.
"""

import contextlib
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent

# firmware/ first, so the tests import the library from the source tree even
# when another copy is installed. tests/core/ provides `helpers` to the core tests.
for directory in (TESTS_DIR, TESTS_DIR / "core", REPO_DIR / "firmware"):
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))

import servers  # noqa: E402
import unix_port  # noqa: E402

pytest_plugins = ["conftest_mta"]

# Run time per example varies with machine load, so examples have no deadline.
settings.register_profile("dev", deadline=None)
settings.register_profile(
    "ci", deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """Test CA and server certificates; see servers.CertificateSet."""
    return servers.CertificateSet(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def smtp_server(certs):
    """Return a factory that starts loopback SMTP servers for this test.

    ``smtp_server(mode="starttls", cert=None, **options)`` takes the options of
    servers.SMTPTestServer; ``cert`` defaults to ``certs.server_cert``. Every
    server started through the factory is stopped when the test ends.
    """
    with contextlib.ExitStack() as stack:

        def start(mode="starttls", cert=None, **options):
            if cert is None and mode != "plain":
                cert = certs.server_cert
            server = servers.SMTPTestServer(mode, cert, **options)
            # ExitStack calls every stop() even when an earlier one raises.
            stack.callback(server.stop)
            return server

        yield start


@pytest.fixture(scope="session")
def micropython():
    """Path of the `micropython` executable. Fails (never skips) when it is missing."""
    path = unix_port.find_micropython()
    if path is None:
        pytest.fail(unix_port.MISSING_MESSAGE % sys.executable, pytrace=False)
    return path
