"""Session-wide Postfix + Dovecot fixture (see mta.py), loaded by tests/conftest.py.

Fixture:
    mta: a running mta.MailServer, started on first use and stopped at the end of the
        session. Fails (never skips) when Postfix or Dovecot is not installed.
"""

import mta as mta_module
import pytest


@pytest.fixture(scope="session")
def mta(certs):
    """A private Postfix with Dovecot SASL on 127.0.0.1; see mta.MailServer."""
    missing = mta_module.missing_programs()
    if missing:
        pytest.fail(mta_module.MISSING_MESSAGE % " and ".join(missing), pytrace=False)
    server = mta_module.MailServer(certs.server_cert)
    try:
        server.start()
    except mta_module.MTAError as exc:
        pytest.fail("could not start Postfix and Dovecot from %s: %s" % (server.directory, exc), pytrace=False)
    yield server
    server.stop()
    server.cleanup()
