"""Delivery rounds (alerts.delivery) and loading the CA roots (alerts.sender.load_ca_roots)."""

import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from alerts import clock
from alerts.outbox import Outbox
from alerts.sender import SenderConfigError, load_ca_roots

from helpers import fresh_directory, raises, remove_tree


class RoundApp:
    """The App attributes a delivery round reads, without WiFi or NTP settings.

    A round that brings up the network fails with KeyError on the missing "wifi" section.
    """

    def __init__(self, outbox):
        self.outbox = outbox
        self.config = {"outbox": {"retry_min_s": 30, "retry_max_s": 300}, "smtp": {"security": "starttls"}}
        self.last_ntp = None
        self.network_failures = 0
        self.network_retry_at = 0
        self.send_failures = 0


def alert_record():
    return {"kind": "alert", "rule": "hot", "sensor": "t", "value": 40, "unit": "C", "time": clock.now()}


def test_round_with_nothing_due_skips_network():
    from alerts.delivery import deliver

    directory = fresh_directory("alerts-delivery-test")
    try:
        outbox = Outbox(directory)
        outbox.recover()
        name = outbox.put(alert_record(), clock.now())
        outbox.retry_later(name, outbox.load(name), clock.now(), 600)
        wait = asyncio.run(deliver(RoundApp(outbox)))
        assert wait is not None and 590 <= wait <= 600, wait
        assert outbox.pending() == [name]
    finally:
        remove_tree(directory)


def test_round_with_empty_outbox_returns_none():
    from alerts.delivery import deliver

    directory = fresh_directory("alerts-delivery-test")
    try:
        outbox = Outbox(directory)
        outbox.recover()
        assert asyncio.run(deliver(RoundApp(outbox))) is None
    finally:
        remove_tree(directory)


def load_broken_ca_module(text):
    directory = fresh_directory("alerts-delivery-test")
    with open(directory + "/ca_roots.py", "w") as file:
        file.write(text)
    sys.path.insert(0, directory)
    sys.modules.pop("ca_roots", None)
    try:
        return raises(SenderConfigError, load_ca_roots, {"smtp": {"ca_file": None}})
    finally:
        sys.path.remove(directory)
        sys.modules.pop("ca_roots", None)
        remove_tree(directory)


def test_truncated_ca_module_is_config_error():
    error = load_broken_ca_module("ROOTS = (\n    b'0\\x82',\n")
    message = str(error)
    assert "ca_roots cannot be loaded (SyntaxError" in message, message
    assert "copy ca_roots.py to the board again or set smtp.ca_file" in message, message


def test_ca_module_without_roots_is_config_error():
    error = load_broken_ca_module("OTHER = 1\n")
    assert "ca_roots cannot be loaded (AttributeError" in str(error), str(error)


def load_ca_file(content):
    """Return the SenderConfigError of load_ca_roots() with smtp.ca_file holding content, and the file's path."""
    directory = fresh_directory("alerts-delivery-test")
    path = directory + "/ca.pem"
    with open(path, "w") as file:
        file.write(content)
    try:
        return raises(SenderConfigError, load_ca_roots, {"smtp": {"ca_file": path}}), path
    finally:
        remove_tree(directory)


def test_ca_file_with_invalid_base64_is_config_error():
    for body in ("abcde", "!!!!"):
        error, path = load_ca_file("-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n" % body)
        message = str(error)
        assert "smtp.ca_file %s is not a valid CA file: certificate 1 of the PEM text" % path in message, message


def test_ca_file_with_comments_is_pem():
    # A root cut out of a bundle, with the bundle's comment lines and a byte order mark.
    directory = fresh_directory("alerts-delivery-test")
    path = directory + "/ca.pem"
    with open(path, "wb") as file:
        file.write(
            b"\xef\xbb\xbf# Issuer: CN=Test Root\n-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n"
        )
    try:
        assert load_ca_roots({"smtp": {"ca_file": path}}) == [b"0\x03\x02\x01\x01"]
    finally:
        remove_tree(directory)


def test_ca_file_of_other_text_is_config_error():
    error, path = load_ca_file("this is not a certificate\n")
    message = str(error)
    expected = "smtp.ca_file %s is not a valid CA file: it is neither a PEM nor a DER certificate" % path
    assert expected in message, message


def test_ehlo_name_from_device():
    from alerts.sender import ehlo_name

    assert ehlo_name("greenhouse-1") == "greenhouse-1"
    assert ehlo_name("Greenhouse 1") == "Greenhouse-1"
    assert ehlo_name("K\u00fchlraum.Nord") == "K-hlraum.Nord"
    assert ehlo_name(" pump (north) ") == "pump--north"
    assert ehlo_name("\u6e29\u5ba4") == "board"
    assert ehlo_name("a..b.-c-.") == "a.b.c"
    assert ehlo_name("1234") == "board-1234"
    assert ehlo_name("10.0.0.1") == "board-10.0.0.1"
    assert ehlo_name("x" * 70) == "x" * 63
    long_name = ehlo_name(".".join(["y" * 60] * 6))
    assert len(long_name) <= 253, len(long_name)
    assert long_name == ".".join(["y" * 60] * 4)


def sender_config():
    from alerts.config import validate

    return validate(
        {
            "device": "greenhouse-1",
            "wifi": {"ssid": "home", "password": "wifi-secret"},
            "smtp": {
                "host": "127.0.0.1",
                "user": "alerts@example.com",
                "password": "smtp-secret",
                "from": "alerts@example.com",
                "to": ["you@example.com"],
            },
            "ntp": {"host": "pool.ntp.org"},
            "sensors": [{"name": "t", "type": "simulated", "values": [[0, 20]]}],
            "rules": [{"name": "hot", "sensor": "t", "above": 35}],
        }
    )


def run_out_of_memory(where):
    """Run a Sender session in which ``where`` raises MemoryError.

    Returns (sender, outbox, name of the queued alert, delay, outbox directory).
    """
    from alerts.sender import Sender

    from microsmtp.client import SMTP

    replaced = {}

    async def no_memory(self, *args):
        raise MemoryError()

    async def connected(self):
        return None

    async def closed(self):
        return None

    directory = fresh_directory("alerts-delivery-test")
    outbox = Outbox(directory)
    outbox.recover()
    name = outbox.put(alert_record(), clock.now())
    methods = {"connect": connected, "close": closed, "quit": closed}
    methods[where] = no_memory
    for method in methods:
        replaced[method] = getattr(SMTP, method)
        setattr(SMTP, method, methods[method])
    try:
        sender = Sender(sender_config(), outbox, [b"0"])
        delay = asyncio.run(sender.run_session())
    finally:
        for method in replaced:
            setattr(SMTP, method, replaced[method])
    return sender, outbox, name, delay, directory


def test_memory_error_in_session_keeps_alert_for_retry():
    # A MemoryError while connecting or sending (no heap for TLS buffers or for the
    # message) ends the session like a transient failure: the alert stays, with a
    # backoff, and the board is not reset.
    for where in ("connect", "send_message"):
        sender, outbox, name, delay, directory = run_out_of_memory(where)
        try:
            assert 15 <= delay <= 30, (where, delay)
            assert outbox.pending() == [name], where
            assert outbox.due(clock.now()) > 0, where
            assert sender.failures == 1, where
            assert sender.last_error == "out of memory", where
            assert outbox.in_flight is None, where
        finally:
            remove_tree(directory)
