"""A transient reply to one message (4xx to its MAIL, RCPT, DATA or content) defers that
alert alone, and the others go in the same session. The deferred alert waits for its own
retry time. After alerts.sender.GIVE_UP_TRIES such replies over GIVE_UP_S it is set aside
and reported. A failure of the connection still ends the session for every alert."""

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from alerts.outbox import Outbox
from test_alerts_delivery import sender_config

from helpers import FixedClock, fresh_directory, remove_tree
from microsmtp.client import SMTP
from microsmtp.errors import ConnectionLost, ReplyError

T0 = 1767225600  # 2026-01-01 00:00:00 UTC


class FakeSession:
    usable = True


class Result:
    reply = None
    refused = {}


class Server:
    """Replaces SMTP's network methods; replies[alert value] lists errors to raise in turn."""

    def __init__(self):
        self.replies = {}
        self.refuse_connect = False
        self.accepted = []
        self.attempted = []
        self.connects = 0
        self.saved = {}

    def __enter__(self):
        server = self

        async def connect(smtp):
            server.connects += 1
            if server.refuse_connect:
                raise ConnectionLost("connection refused", stage="connect")
            smtp.session = FakeSession()

        async def send_message(smtp, message):
            value = server.value_of(message)
            server.attempted.append(value)
            errors = server.replies.get(value)
            if errors:
                error = errors.pop(0)
                if error.code == 421:
                    # The server closes the connection with its reply.
                    smtp.session.usable = False
                raise error
            server.accepted.append(value)
            return Result()

        async def closed(smtp):
            return None

        methods = {"connect": connect, "send_message": send_message, "close": closed, "quit": closed}
        for name in methods:
            self.saved[name] = getattr(SMTP, name)
            setattr(SMTP, name, methods[name])
        return self

    def __exit__(self, *args):
        for name in self.saved:
            setattr(SMTP, name, self.saved[name])

    def value_of(self, message):
        for value in self.ids:
            if self.ids[value] == message.message_id:
                return value
        raise AssertionError("unknown message %s" % message.message_id)


def alert(value):
    return {"kind": "alert", "rule": "hot", "sensor": "t", "value": value, "unit": "C", "time": T0}


def busy(stage="rcpt"):
    return ReplyError("rejected 451", 451, "4.3.0", "try again later", stage)


class Setup:
    def __init__(self, values):
        from alerts.sender import Sender

        self.directory = fresh_directory("alerts-hold-test")
        self.outbox = Outbox(self.directory, retry_max=3600)
        self.outbox.recover()
        self.server = Server()
        self.server.ids = {}
        self.names = {}
        for value in values:
            self.add(value)
        config = sender_config()
        config["outbox"]["retry_min_s"] = 30
        config["outbox"]["retry_max_s"] = 3600
        self.sender = Sender(config, self.outbox, [b"0"])

    def add(self, value):
        name = self.outbox.put(alert(value), T0)
        self.names[value] = name
        self.server.ids[value] = self.outbox.load(name)["id"]

    def session(self):
        return asyncio.run(self.sender.run_session())

    def close(self):
        remove_tree(self.directory)


def test_deferred_message_lets_others_go():
    setup = Setup((41, 42, 43))
    try:
        setup.server.replies[41] = [busy()]
        with setup.server, FixedClock(T0):
            delay = setup.session()
        # One session: the first alert is refused for now, the two behind it go.
        assert setup.server.connects == 1
        assert setup.server.accepted == [42, 43], setup.server.accepted
        assert setup.outbox.pending() == [setup.names[41]]
        entry = setup.outbox.load(setup.names[41])
        assert entry["attempts"] == 1, entry
        assert entry["own"], entry
        assert entry["failing"] == T0, entry
        # It waits for its own retry time, which the session returns.
        assert 15 <= delay <= 30, delay
        assert abs(setup.outbox.due(T0) - delay) < 0.01
        # The session itself did not fail.
        assert setup.sender.failures == 0
    finally:
        setup.close()


def test_new_alert_goes_while_held_alert_waits():
    setup = Setup((41,))
    try:
        setup.server.replies[41] = [busy("mail")]
        with setup.server, FixedClock(T0):
            setup.session()
            setup.add(44)
            # The new alert is due at once although the held one is older.
            assert setup.outbox.due(T0 + 1) == 0
            setup.session()
        assert setup.server.attempted == [41, 44], setup.server.attempted
        assert setup.server.accepted == [44]
        # Its retry time come, the held alert is tried again and goes.
        with setup.server, FixedClock(T0 + 40):
            assert setup.outbox.due(T0 + 40) == 0
            assert setup.session() is None
        assert setup.server.accepted == [44, 41], setup.server.accepted
        assert setup.outbox.pending() == []
    finally:
        setup.close()


def test_connection_failure_holds_every_alert():
    setup = Setup((41, 42))
    try:
        setup.server.replies[41] = [busy()]
        with setup.server, FixedClock(T0):
            setup.session()
            setup.server.refuse_connect = True
            setup.add(45)
            delay = setup.session()
        assert setup.server.connects == 2
        assert delay > 0
        assert setup.sender.failures == 1
        # The session's back-off is stored on the first alert it tried, and every alert waits for it.
        entry = setup.outbox.load(setup.names[45])
        assert not entry.get("own"), entry
        assert setup.outbox.due(T0 + 1) > 0
        assert setup.outbox.due(T0 + delay + 1) == 0
    finally:
        setup.close()


def test_reply_that_closes_the_connection_ends_the_session():
    setup = Setup((41, 42))
    try:
        setup.server.replies[41] = [ReplyError("closing", 421, "4.3.2", "shutting down", "mail")]
        with setup.server, FixedClock(T0):
            delay = setup.session()
        assert setup.server.attempted == [41]
        assert setup.outbox.pending() == [setup.names[41], setup.names[42]]
        assert setup.sender.failures == 1
        assert abs(setup.outbox.due(T0) - delay) < 0.01
    finally:
        setup.close()


def test_refused_for_days_set_aside():
    from alerts.sender import GIVE_UP_S, GIVE_UP_TRIES

    setup = Setup((41,))
    try:
        setup.server.replies[41] = [busy("data") for _ in range(GIVE_UP_TRIES)]
        # Tries 1 to 19 spread over the 5 days: the alert stays queued.
        for index in range(GIVE_UP_TRIES - 1):
            with setup.server, FixedClock(T0 + index * (GIVE_UP_S // GIVE_UP_TRIES)):
                setup.session()
        assert setup.outbox.pending() == [setup.names[41]]
        assert setup.outbox.aside() == []
        # The 20th, after 5 days.
        with setup.server, FixedClock(T0 + GIVE_UP_S + 3600):
            assert setup.session() is None
        assert setup.outbox.pending() == []
        assert setup.outbox.aside() == [setup.names[41]]
        names, entries, dropped = setup.outbox.report()
        reply = entries[0]["reply"]
        assert reply.startswith("still refused after 20 tries over 5 days: 451 4.3.0"), reply
        assert setup.server.accepted == []
    finally:
        setup.close()


def test_clock_jump_forward_does_not_give_up():
    setup = Setup((41,))
    try:
        setup.server.replies[41] = [busy(), busy()]
        with setup.server, FixedClock(T0):
            setup.session()
        # A wrong NTP reply moves the clock 2 years ahead: one more refusal is no reason to give up.
        with setup.server, FixedClock(T0 + 2 * 365 * 86400):
            setup.session()
        assert setup.outbox.pending() == [setup.names[41]]
        assert setup.outbox.aside() == []
        assert setup.outbox.load(setup.names[41])["held"] == 2
    finally:
        setup.close()


def test_failed_connections_are_no_tries():
    from alerts.sender import GIVE_UP_S

    setup = Setup((41,))
    try:
        setup.server.replies[41] = [busy(), busy()]
        with setup.server, FixedClock(T0):
            setup.session()
        setup.server.refuse_connect = True
        for day in range(1, 6):
            with setup.server, FixedClock(T0 + day * 86400):
                setup.session()
        setup.server.refuse_connect = False
        with setup.server, FixedClock(T0 + GIVE_UP_S + 3600):
            setup.session()
        # Two refusals 5 days apart, with only failed connections in between: still queued.
        assert setup.outbox.pending() == [setup.names[41]]
        assert setup.outbox.aside() == []
    finally:
        setup.close()


def test_held_alerts_share_one_retry_time():
    values = tuple(range(41, 51))
    setup = Setup(values)
    try:
        for value in values:
            setup.server.replies[value] = [busy()]
        with setup.server, FixedClock(T0):
            delay = setup.session()
        times = [setup.outbox.load(setup.names[value])["next"] for value in values]
        # One retry time for all, so a server that defers every message gets one session per retry.
        assert times == [T0 + delay] * len(values), times
        assert setup.outbox.due(T0 + delay - 1) > 0
        with setup.server, FixedClock(T0 + delay):
            setup.session()
        assert setup.server.connects == 2
        assert setup.server.accepted == list(values)
    finally:
        setup.close()


def test_memory_error_building_next_alert_keeps_it():
    from alerts import sender

    setup = Setup((41, 42))
    real_build = sender._build
    built = []

    def build(entry, config, report):
        built.append(entry["alert"]["value"])
        if len(built) == 2:
            raise MemoryError()
        return real_build(entry, config, report)

    sender._build = build
    try:
        with setup.server, FixedClock(T0):
            delay = setup.session()
        assert setup.server.accepted == [41]
        # The alert whose message found no heap gets the retry time, not the one sent before it.
        assert setup.outbox.pending() == [setup.names[42]]
        entry = setup.outbox.load(setup.names[42])
        assert entry["attempts"] == 1, entry
        assert entry["next"] == T0 + delay, entry
    finally:
        sender._build = real_build
        setup.close()


def session_failure_line(error, oauth2=False):
    """Return the log line of a session whose connect raised error."""
    from alerts import log

    setup = Setup((41,))
    lines = []
    real_write = log._write

    async def connect(smtp):
        raise error

    log._write = lambda level, message: lines.append(message)
    try:
        with setup.server, FixedClock(T0):
            SMTP.connect = connect
            if oauth2:
                setup.sender._oauth2 = {}
                setup.sender._get_token = lambda: asyncio.sleep(0)
            setup.session()
    finally:
        log._write = real_write
        setup.close()
    return [line for line in lines if line.startswith("sending failed")][0]


def test_rejected_password_names_config_keys():
    from microsmtp.errors import AuthError

    line = session_failure_line(AuthError("authentication failed: 535 5.7.8 bad credentials", 535, stage="auth"))
    assert line.startswith("sending failed (auth, permanent): authentication failed: 535 5.7.8 bad credentials; "), line
    assert "check smtp.user and smtp.password (Gmail and Outlook want an app password, or smtp.oauth2)" in line
    line = session_failure_line(AuthError("authentication failed: 535", 535, stage="auth"), oauth2=True)
    assert "authentication failed: 535; check smtp.user and the smtp.oauth2 grant; " in line, line


def test_certificate_failure_names_config_keys():
    from microsmtp.errors import SecurityError

    error = SecurityError("TLS certificate verification failed for x (ValueError); check ca_roots and server_hostname")
    error.stage = "tls"
    line = session_failure_line(error)
    assert "check smtp.ca_file (or ca_roots.py) and smtp.server_name; " in line, line
    assert "ca_roots and" not in line


def test_dropped_oldest_hands_on_the_back_off():
    setup = Setup((41, 42, 43))
    try:
        setup.outbox.max_entries = 3
        setup.server.refuse_connect = True
        with setup.server, FixedClock(T0):
            delay = setup.session()
        assert setup.outbox.due(T0 + 1) > 0
        # A new alert in a full outbox drops the oldest, which carried the session's back-off.
        setup.add(44)
        assert setup.names[41] not in setup.outbox.pending()
        assert abs(setup.outbox.due(T0 + 1) - (delay - 1)) < 0.01
    finally:
        setup.close()


# -- on a full flash -------------------------------------------------------------------------


def test_full_flash_deferral_gives_up():
    from alerts import log
    from alerts.sender import GIVE_UP_S, GIVE_UP_TRIES
    from test_alerts_outbox_faults import FullFlash

    setup = Setup((41,))
    name = setup.names[41]
    saved = log._write
    log._write = lambda level, message: None
    try:
        setup.server.replies[41] = [busy("data") for _ in range(GIVE_UP_TRIES)]
        with FullFlash():
            for index in range(GIVE_UP_TRIES - 1):
                with setup.server, FixedClock(T0 + index * (GIVE_UP_S // GIVE_UP_TRIES)):
                    setup.session()
                if index == 0:
                    # The entry on flash is as it was, and the deferral counts all the same.
                    entry = setup.outbox.load(name)
                    assert entry["held"] == 1, entry
                    assert entry["attempts"] == 1, entry
                    assert entry["own"] is True, entry
            assert setup.outbox.load(name)["held"] == GIVE_UP_TRIES - 1
            # The 20th, after 5 days: set aside (moved as it is, without the server's reply).
            with setup.server, FixedClock(T0 + GIVE_UP_S + 3600):
                assert setup.session() is None
        assert setup.outbox.pending() == []
        assert setup.outbox.aside() == [name]
        assert len(setup.server.attempted) == GIVE_UP_TRIES
    finally:
        log._write = saved
        setup.close()


def test_full_flash_deferral_lets_others_go():
    from alerts import log
    from test_alerts_outbox_faults import FullFlash

    setup = Setup((41,))
    saved = log._write
    log._write = lambda level, message: None
    try:
        setup.server.replies[41] = [busy("data")]
        with FullFlash(), setup.server, FixedClock(T0):
            assert setup.session() > 0
        # Room again for a new alert: it goes at once, while 41 waits for its own retry time.
        setup.add(42)
        assert setup.outbox.due(T0 + 1) == 0
        assert setup.outbox.ready(T0 + 1) == [setup.names[42]]
        # The write that worked took the deferred entry to flash as well.
        assert Outbox(setup.directory).load(setup.names[41])["own"] is True
    finally:
        log._write = saved
        setup.close()


def test_unmovable_rejection_waits():
    from alerts import log
    from test_alerts_outbox_faults import FullFlash

    setup = Setup((41,))
    saved = log._write
    log._write = lambda level, message: None
    try:
        # A retry_max_s below the 600 s wait that set_aside() gives an entry it cannot move.
        setup.outbox.retry_max = 60
        setup.sender.retry_max = 60
        setup.server.replies[41] = [ReplyError("rejected", 550, "5.7.1", "policy", "data") for _ in range(5)]
        with FullFlash(rename=False), setup.server, FixedClock(T0):
            delays = [setup.session() for _ in range(3)]
        # One attempt, then a wait, not a new session at once for each.
        assert len(setup.server.attempted) == 1, setup.server.attempted
        assert delays == [60, 60, 60], delays
        assert setup.outbox.pending() == [setup.names[41]]
    finally:
        log._write = saved
        setup.close()
