"""Round trip through a real server: what aiosmtpd stores decodes to what was given.

Messages built from generated text travel through the whole client (message builder,
DATA or BDAT encoding, STARTTLS) to aiosmtpd, and CPython's email package decodes the
stored bytes independently.
"""

import asyncio
import email
import email.policy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_message_roundtrip import body_text, expected_body, filename, header_text

from microsmtp import SMTP, Attachment, Message

DATE = (2026, 12, 4, 20, 10, 26, 4, 338)


@pytest.fixture(scope="module")
def server_and_roots(certs):
    import servers

    server = servers.SMTPTestServer("starttls", certs.server_cert, ehlo_extra=("PIPELINING",))
    yield server, [certs.ca_der]
    server.stop()


async def send_all(server, roots, messages):
    smtp = SMTP(
        server.host,
        server.port,
        username="alice",
        password="secret",
        ca_roots=roots,
        server_hostname="localhost",
        timeout_ms=20000,
    )
    await smtp.connect()
    try:
        return await smtp.send_messages(messages)
    finally:
        await smtp.quit()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    subject=header_text,
    text=body_text,
    attachment=st.one_of(st.none(), st.tuples(filename, st.binary(max_size=2000))),
)
def test_server_copy_decodes_to_input(server_and_roots, subject, text, attachment):
    server, roots = server_and_roots
    attachments = [Attachment(attachment[0], attachment[1])] if attachment else []
    message = Message(
        "Sensor <board@example.com>", "ops@example.com", subject, text, attachments=attachments, date=DATE
    )
    before = len(server.messages)
    (transaction,) = asyncio.run(send_all(server, roots, [message]))
    assert transaction.ok, transaction.error
    stored = server.wait_for_messages(before + 1)[before].content
    assert stored == message.to_bytes()

    parsed = email.message_from_bytes(stored, policy=email.policy.default)
    if subject:
        assert str(parsed["Subject"]) == subject
    else:
        assert parsed["Subject"] is None
    parts = list(parsed.walk())
    text_parts = [part for part in parts if part.get_content_type() == "text/plain" and not part.get_filename()]
    if text or not attachment:
        assert len(text_parts) == 1
        assert text_parts[0].get_content().replace("\r\n", "\n") == expected_body(text)
    else:
        # A message with attachments and no text has no text part at all.
        assert text_parts == []
    if attachment:
        files = [part for part in parts if part.get_filename() is not None]
        assert len(files) == 1
        assert files[0].get_payload(decode=True) == attachment[1]
