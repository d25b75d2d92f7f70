"""The ``microsmtp sim`` command: run the alert firmware on a virtual board.

A local SMTP server (aiosmtpd in this process, STARTTLS and AUTH, certificate from a
fresh trustme CA) receives the alerts. The firmware (firmware/main.py and
firmware/alerts/) runs under the MicroPython unix port in a temporary board directory
with config.json, ca_roots.py (the test CA as DER) and the stand-in hardware modules of
sim_board/ first on MICROPYPATH. A scenario (scenarios/*.json) sets the simulated
sensors, the rules, the time speed-up, periods when the server is down and the emails
that must arrive. Exit status 0 when they arrived, 1 when not, 78 for invalid input.
"""

import copy
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import common, sim_oauth2

EX_OK = 0
EX_FAILED = 1
EX_CONFIG = 78

PACKAGE_DIR = Path(__file__).resolve().parent
SCENARIO_DIR = PACKAGE_DIR / "scenarios"
SIM_BOARD_DIR = PACKAGE_DIR / "sim_board"
# Folder of the compiled stand-ins inside the compiled firmware folder.
BOARD_MODULES = "board_modules"
DEFAULT_SCENARIO = SCENARIO_DIR / "default.json"
DEFAULT_OUTPUT = Path("build") / "sim"
PASSWORD_VARIABLE = "SMTP_PASSWORD"
SIM_USER = "sim-board"
SIM_WIFI = {"ssid": "sim-network", "password": "sim-wifi-password"}
# Exit statuses of sim_board/machine.py's reset() and deepsleep().
RESET_STATUS = 3
DEEPSLEEP_STATUS = 4
# sim_board/machine.py's reset_cause() returns the value of this environment variable,
# one of ESP32's reset causes.
RESET_CAUSE_VARIABLE = "MICROSMTP_SIM_RESET_CAUSE"
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
WATCHDOG_FILE = "watchdog.json"
# sim_board/machine.py keeps RTC memory here; a power cycle clears it.
RTC_FILE = "rtc_memory.bin"
# sim_board/esp32.py's wake_on_ext0() writes the deep-sleep wake pin and level here.
WAKE_PIN_FILE = "wake_pin.json"
# Real seconds given to the board after the scenario's end to empty its outbox.
DRAIN_S = 20.0
_SLEEP_PATTERN = re.compile(r"\[machine\] deepsleep (\d+)")
# The firmware logs the heap after a collection at boot and then hourly (alerts/app.py).
_HEAP_PATTERN = re.compile(r" INFO heap: (\d+) bytes in use, (\d+) free")
_SCENARIO_KEYS = (
    "description",
    "speed",
    "duration_s",
    "start",
    "sensors",
    "rules",
    "alerts",
    "outbox",
    "deep_sleep",
    "server_down",
    "ntp_down",
    "ntp",
    "wifi_down",
    "power_cycles",
    "resets_at_mail",
    "pins",
    "wifi",
    "watchdog_ms",
    "reject",
    "oauth2",
    "expect",
    "exact",
    "start_heaps",
)


class SimError(Exception):
    """Invalid options or scenario, or a missing tool; the message says what to fix."""


def find_firmware():
    """Return the firmware/ directory (main.py, alerts/, microsmtp/) of this checkout.

    It is beside tools/ in a checkout, and beside the imported ``microsmtp`` package in
    an editable install (``make setup``). A wheel installs only the library, not
    main.py and alerts/, so the sim then needs a checkout.
    """
    candidates = [PACKAGE_DIR.parent.parent / "firmware"]
    try:
        import microsmtp

        candidates.append(Path(microsmtp.__file__).resolve().parent.parent)
    except ImportError:
        pass
    for directory in candidates:
        if (directory / "main.py").is_file() and (directory / "alerts").is_dir():
            return directory
    raise SimError(
        "the alert firmware (main.py and alerts/) was not found in %s; an installed microsmtp package "
        "contains only the library, so run microsmtp sim from a checkout of the repository "
        "(after `make setup`)" % " or ".join(str(directory) for directory in candidates)
    )


def find_micropython():
    beside = Path(sys.executable).parent / "micropython"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        raise SimError("the MicroPython unix port `micropython` was not found; run `make setup`")
    return found


# -- scenario ---------------------------------------------------------------------------


def scenario_path(name):
    """Return the scenario file for name: a path, or the name of a shipped scenario.

    A name without a folder that is not a file here, such as ``server_down.json`` or
    ``server_down``, is looked up among the scenarios shipped in SCENARIO_DIR.
    """
    path = Path(name)
    if path.exists() or path.parent != Path("."):
        return path
    for candidate in (SCENARIO_DIR / name, SCENARIO_DIR / (name + ".json")):
        if candidate.is_file():
            return candidate
    return path


def load_scenario(path):
    try:
        scenario = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        shipped = ", ".join(sorted(item.name for item in SCENARIO_DIR.glob("*.json")))
        raise SimError(
            "cannot read scenario %s: %s; give a path, or one of the shipped scenarios: %s"
            % (path, exc.strerror or exc, shipped)
        ) from exc
    except OSError as exc:
        raise SimError("cannot read scenario %s: %s" % (path, exc.strerror or exc)) from exc
    except ValueError as exc:
        raise SimError("scenario %s is not valid JSON: %s" % (path, exc)) from exc
    if not isinstance(scenario, dict):
        raise SimError("scenario %s must contain a JSON object" % path)
    unknown = sorted(set(scenario) - set(_SCENARIO_KEYS))
    if unknown:
        raise SimError(
            "scenario %s: unknown key(s) %s; allowed: %s" % (path, ", ".join(unknown), ", ".join(_SCENARIO_KEYS))
        )
    for key in ("sensors", "expect"):
        if not isinstance(scenario.get(key), list):
            raise SimError("scenario %s: %s must be a list" % (path, key))
    speed = scenario.get("speed", 60)
    duration = scenario.get("duration_s")
    if not isinstance(speed, (int, float)) or speed <= 0:
        raise SimError("scenario %s: speed must be a positive number (simulated seconds per real second)" % path)
    if not isinstance(duration, (int, float)) or duration <= 0:
        raise SimError("scenario %s: duration_s must be a positive number of simulated seconds" % path)
    cycles = scenario.get("power_cycles", [])
    if not isinstance(cycles, list) or not all(isinstance(item, (int, float)) and item >= 0 for item in cycles):
        raise SimError("scenario %s: power_cycles must be a list of simulated seconds, e.g. [300]" % path)
    resets = scenario.get("resets_at_mail", [])
    if not isinstance(resets, list) or not all(isinstance(item, int) and item >= 1 for item in resets):
        raise SimError(
            "scenario %s: resets_at_mail must be a list of MAIL command counts from 1, e.g. [1] to reset the"
            " board when the server receives its first MAIL FROM" % path
        )
    pins = scenario.get("pins", {})
    if not isinstance(pins, dict):
        raise SimError('scenario %s: pins must map a pin to a timeline, e.g. {"14": [[0, 0], [420, 1]]}' % path)
    for pin, timeline in pins.items():
        if (
            not isinstance(timeline, list)
            or not timeline
            or not all(isinstance(item, list) and len(item) == 2 and item[1] in (0, 1) for item in timeline)
            or [item[0] for item in timeline] != sorted(item[0] for item in timeline)
        ):
            raise SimError(
                "scenario %s: pins.%s must be a list of [seconds, 0 or 1] pairs with increasing seconds" % (path, pin)
            )
    for item in scenario.get("reject", []):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("subject"), str)
            or not re.match(r"5\d\d ", str(item.get("reply", "")))
        ):
            raise SimError('scenario %s: each reject item is {"subject": TEXT, "reply": "5xx ...", "count": N}' % path)
    heaps = scenario.get("start_heaps", [])
    if not isinstance(heaps, list) or not all(
        isinstance(item, str) and re.fullmatch(r"\d+[KM]?", item) for item in heaps
    ):
        raise SimError(
            'scenario %s: start_heaps must be a list of heap sizes, one per start from the first, e.g. ["24K", "24K"]'
            % path
        )
    problem = sim_oauth2.options_problem(scenario.get("oauth2", False))
    if problem is not None:
        raise SimError(
            'scenario %s: oauth2 %s, e.g. {"expires_in": 3600, "rotate": true, "revoke_after": 0}' % (path, problem)
        )
    for item in scenario["expect"]:
        if not isinstance(item, dict) or not set(item) <= {"kind", "rule", "subject"}:
            raise SimError('scenario %s: each expect item is {"kind": ..., "rule": ..., "subject": ...}' % path)
    scenario.setdefault("speed", speed)
    scenario["name"] = Path(path).stem
    return scenario


# -- local SMTP server ----------------------------------------------------------------------


class LocalServer:
    """aiosmtpd with STARTTLS and AUTH on 127.0.0.1; can be stopped and restarted on its port.

    With a token endpoint (``tokens``, a sim_oauth2.TokenEndpoint) it offers XOAUTH2 as well
    and accepts the access tokens the endpoint issued while they are valid.
    """

    def __init__(self, users, names=("localhost", "127.0.0.1"), implicit_tls=False):
        import ssl

        import trustme

        self.ca = trustme.CA(organization_name="microsmtp sim CA")
        self.ca_der = ssl.PEM_cert_to_DER_cert(self.ca.cert_pem.bytes().decode("ascii"))
        self.cert = self.ca.issue_cert(*names)
        # True: TLS from the first byte (as on port 465) instead of STARTTLS.
        self.implicit_tls = implicit_tls
        # Called with each accepted message's record (see handle_DATA), if set.
        self.on_message = None
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(self.context)
        self.users = users
        self.tokens = None
        # XOAUTH2 logins rejected because the token was not issued or had expired.
        self.xoauth2_rejected = 0
        # [subject text, reply, count]: the first count messages whose Subject contains
        # the text are rejected with the reply after the final dot.
        self.rejects = []
        self.rejected = []
        self.host = "127.0.0.1"
        self.port = 0
        self.messages = []
        # Messages accepted in all, also those that on_message took out of messages.
        self.accepted_count = 0
        self.controller = None
        # MAIL commands counted over all sessions; at the counts in resets_at_mail the
        # handler sets reset_requested and waits until the sim has reset the board.
        self.mail_count = 0
        self.resets_at_mail = set()
        self.reset_requested = threading.Event()

    def _handler(self):
        import asyncio
        import base64
        import binascii

        from aiosmtpd.smtp import MISSING, AuthResult

        server = self

        class Handler:
            def authenticate(self, smtp, session, envelope, mechanism, auth_data):
                login = auth_data.login.decode("utf-8", "replace")
                password = auth_data.password.decode("utf-8", "replace")
                if server.users.get(login) == password:
                    # (user, mechanism), kept with each message.
                    return AuthResult(success=True, auth_data=(login, mechanism))
                return AuthResult(success=False, handled=False)

            async def auth_XOAUTH2(self, smtp, args):
                # Offered only with a token endpoint (see start()).
                if len(args) == 1:
                    payload = await smtp.challenge_auth("")
                    if payload is MISSING:
                        return AuthResult(success=False, handled=True)
                else:
                    try:
                        payload = base64.b64decode(args[1].encode(), validate=True)
                    except (binascii.Error, ValueError):
                        await smtp.push("501 5.5.2 Can't decode base64")
                        return AuthResult(success=False, handled=True)
                parsed = sim_oauth2.parse_xoauth2(payload)
                if parsed is None:
                    await smtp.push("501 5.5.2 malformed XOAUTH2 response")
                    return AuthResult(success=False, handled=True)
                user, token = parsed
                if user in server.users and server.tokens.token_valid(token):
                    return AuthResult(success=True, auth_data=(user, "XOAUTH2"))
                server.xoauth2_rejected += 1
                # As Google and Microsoft do: a 334 with the JSON status, then the error
                # after the client's empty response.
                if await smtp.challenge_auth(sim_oauth2.xoauth2_failure_status()) is MISSING:
                    return AuthResult(success=False, handled=True)
                return AuthResult(
                    success=False, handled=False, message="535 5.7.8 the access token is not valid or has expired"
                )

            async def handle_MAIL(self, smtp, session, envelope, address, mail_options):
                server.mail_count += 1
                if server.mail_count in server.resets_at_mail:
                    server.reset_requested.set()
                    # The board is killed while it waits for this reply.
                    for _ in range(500):
                        if not server.reset_requested.is_set():
                            break
                        await asyncio.sleep(0.01)
                    return "421 4.3.0 the board was reset during this session"
                envelope.mail_from = address
                envelope.mail_options.extend(mail_options)
                return "250 OK"

            async def handle_DATA(self, smtp, session, envelope):
                reply = server.rejection(bytes(envelope.original_content))
                if reply is not None:
                    return reply
                server.messages.append(
                    {
                        "mail_from": envelope.mail_from,
                        "rcpt_tos": list(envelope.rcpt_tos),
                        "content": bytes(envelope.original_content),
                        "user": session.auth_data[0] if session.authenticated else None,
                        "mechanism": session.auth_data[1] if session.authenticated else None,
                        "tls": smtp._tls_protocol is not None or server.implicit_tls,
                    }
                )
                server.accepted_count += 1
                if server.on_message is not None:
                    server.on_message(server.messages[-1])
                return "250 2.0.0 OK queued as %d" % server.accepted_count

        return Handler()

    def rejection(self, content):
        """Return the reply for a message the scenario rejects, or None to accept it."""
        subject = header(content, "Subject")
        for rule in self.rejects:
            if rule[2] > 0 and rule[0] in subject:
                rule[2] -= 1
                self.rejected.append((subject, rule[1]))
                return rule[1]
        return None

    def start(self):
        import logging

        from aiosmtpd.controller import Controller

        from .common import AIOSMTPD_LOGGER, LoginDataFilter, hide_unknown_commands, not_session_failure

        logger = logging.getLogger(AIOSMTPD_LOGGER)
        logger.addFilter(LoginDataFilter())
        logger.addFilter(hide_unknown_commands)
        # The board's log shows why its session failed (out of memory, a reset, a timeout).
        logger.addFilter(not_session_failure)

        handler = self._handler()
        if self.implicit_tls:
            tls_options = {"ssl_context": self.context}
        else:
            tls_options = {"tls_context": self.context, "require_starttls": True}
        controller = Controller(
            handler,
            hostname=self.host,
            port=self.port,
            server_hostname="localhost",
            **tls_options,
            auth_required=True,
            # aiosmtpd counts only STARTTLS as TLS; with implicit TLS every byte is encrypted.
            auth_require_tls=not self.implicit_tls,
            authenticator=handler.authenticate,
            auth_exclude_mechanism=[] if self.tokens is not None else ["XOAUTH2"],
            decode_data=False,
        )
        if self.port == 0:
            import socket

            with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET) as probe:
                probe.bind((self.host, 0))
                self.port = probe.getsockname()[1]
            controller.port = self.port
        controller.start()
        self.controller = controller

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def running(self):
        return self.controller is not None


# -- board directory --------------------------------------------------------------------------


def write_ca_module(path, roots):
    """Write ca_roots.py: ROOTS = (DER bytes, ...)."""
    lines = [
        '"""Trusted root certificates (DER), generated by microsmtp sim; never edit or commit."""',
        "",
        "ROOTS = (",
    ]
    for der in roots:
        lines.append("    %r," % bytes(der))
    lines.append(")")
    path.write_text("\n".join(lines) + "\n")


def compile_firmware(firmware, target):
    """Compile alerts/ and microsmtp/ to .mpy with mpy-cross, as a firmware build freezes them.

    Bytecode needs no compiler memory at import time, so the heap a scenario needs is
    closer to a board's. Returns target.
    """
    compiler = Path(sys.executable).parent / "mpy-cross"
    if not compiler.is_file():
        found = shutil.which("mpy-cross")
        if found is None:
            raise SimError("mpy-cross not found; run `make setup`, or use --source to run the firmware from source")
        compiler = Path(found)
    sources = []
    for package in ("alerts", "microsmtp"):
        sources += [(package, source) for source in sorted((firmware / package).glob("*.py"))]
    # The stand-ins too: a board's network and machine modules are built in and need no compiler memory.
    sources += [(BOARD_MODULES, source) for source in sorted(SIM_BOARD_DIR.glob("*.py"))]
    for package, source in sources:
        output = target / package / (source.stem + ".mpy")
        output.parent.mkdir(parents=True, exist_ok=True)
        process = subprocess.run(
            [str(compiler), "-o", str(output), "-s", "%s/%s" % (package, source.name), str(source)],
            capture_output=True,
            text=True,
        )
        if process.returncode != 0:
            raise SimError("mpy-cross failed on %s: %s" % (source, process.stderr.strip()))
    return target


def board_config(scenario, smtp):
    config = {
        "device": "sim-board",
        "wifi": dict(SIM_WIFI, timeout_s=10, retries=3),
        "smtp": smtp,
        # The virtual board's ntptime never sends a packet; this name is only recorded.
        "ntp": {"host": "ntp.sim.invalid", "retries": 2},
        "sensors": scenario["sensors"],
        "rules": scenario.get("rules", []),
        "alerts": scenario.get("alerts", {}),
        "outbox": dict({"retry_min_s": 20, "retry_max_s": 300}, **scenario.get("outbox", {})),
        "deep_sleep": scenario.get("deep_sleep", {"enabled": False}),
        "board": {"led": "LED", "watchdog_ms": scenario.get("watchdog_ms", 8000)},
    }
    config["wifi"].update(scenario.get("wifi", {}))
    config["ntp"].update(scenario.get("ntp", {}))
    return config


class Redactor:
    def __init__(self, secrets_list):
        self.forms = []
        for secret in secrets_list:
            self.add(secret)

    def add(self, secret):
        """Hide secret too, as it is and in base64; safe while another thread redacts."""
        import base64

        if secret:
            forms = self.forms + [secret, base64.b64encode(secret.encode()).decode()]
            forms.sort(key=len, reverse=True)
            self.forms = forms

    def __call__(self, text):
        for form in self.forms:
            text = text.replace(form, "<redacted>")
        return text


class Board:
    """The firmware running under micropython, restarted after reset() and deepsleep()."""

    def __init__(self, executable, directory, firmware, heap, redactor, echo, start_heaps=()):
        self.executable = executable
        self.directory = directory
        self.firmware = firmware
        self.heap = heap
        # Heaps of the first starts (the scenario's start_heaps); later starts get heap.
        self.start_heaps = list(start_heaps)
        self.redactor = redactor
        self.echo = echo
        self.process = None
        self.lines = []
        self.sent = []  # (kind, rule) of every alert the board logged as sent
        self.restarts = 0
        self.watchdog_resets = 0
        self.memory_error = False
        # Bytes in use from each heap line of the board's log, in order.
        self.heap_in_use = []
        self._reader = None

    def start(self, cause=PWRON_RESET):
        """Start the board process, in which machine.reset_cause() returns cause."""
        # A wake pin is armed again before each deep sleep.
        try:
            (self.directory / WAKE_PIN_FILE).unlink()
        except FileNotFoundError:
            pass
        command = [self.executable]
        heap = self.heap
        # A MemoryError counts as a problem only on the heap the run is checking.
        counted = True
        if self.start_heaps:
            heap = self.start_heaps.pop(0)
            counted = False
            print("sim   | board starts with a %s heap (start_heaps)" % heap, flush=True)
        if heap:
            command += ["-X", "heapsize=%s" % heap]
        # main.py runs from the board directory, as from a board's root, so the
        # interpreter does not put firmware/ (the source) first on the path.
        command.append("main.py")
        environment = {key: value for key, value in os.environ.items() if key != PASSWORD_VARIABLE}
        environment["HOME"] = str(self.directory / "home")
        environment[RESET_CAUSE_VARIABLE] = str(cause)
        # ".frozen" first keeps the unix port's frozen asyncio importable.
        board_modules = self.firmware / BOARD_MODULES
        if not board_modules.is_dir():
            board_modules = SIM_BOARD_DIR
        environment["MICROPYPATH"] = ":".join([".frozen", str(board_modules), str(self.firmware), str(self.directory)])
        self.process = subprocess.Popen(
            command,
            cwd=self.directory,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self.process, counted), daemon=True)
        self._reader.start()

    def _read(self, process, counted=True):
        for raw in process.stdout:
            line = self.redactor(raw.decode("utf-8", "replace").rstrip("\r\n"))
            self.lines.append(line)
            # The firmware logs a MemoryError it survives, and the SMTP library's
            # OutOfMemory, as "out of memory". alerts.oauth2 logs an mbedTLS buffer that
            # the GC heap cannot hold as a failed connection with ENOMEM.
            if counted and ("MemoryError" in line or "out of memory" in line or "ENOMEM" in line):
                self.memory_error = True
            heap = _HEAP_PATTERN.search(line)
            if heap:
                self.heap_in_use.append(int(heap.group(1)))
            match = re.search(r" INFO sent \S+ (\S+) (\S+) ", line)
            if match:
                self.sent.append((match.group(1), match.group(2)))
            if self.echo:
                print("board | " + "".join(ch if ch.isprintable() else "?" for ch in line), flush=True)

    def poll(self):
        return self.process.poll()

    def watchdog_expired(self):
        """Return True when the board's watchdog deadline (from machine.WDT) has passed."""
        try:
            deadline = json.loads((self.directory / WATCHDOG_FILE).read_text())["deadline_ns"]
        except (OSError, ValueError, KeyError):
            return False
        return time.time_ns() > deadline

    def clear_watchdog(self):
        """Forget the deadline: a reset or deep sleep stops the watchdog until the firmware starts it again."""
        try:
            (self.directory / WATCHDOG_FILE).unlink()
        except FileNotFoundError:
            pass

    def watchdog_reset(self):
        """End the process as the watchdog's reset would, then start the board again."""
        self.watchdog_resets += 1
        self.reset(WDT_RESET)

    def wake_pin(self, pins, elapsed):
        """Return (pin, level) when the wake pin armed before deep sleep reached its level, else None."""
        try:
            wake = json.loads((self.directory / WAKE_PIN_FILE).read_text())
        except (OSError, ValueError):
            return None
        timeline = pins.get(wake.get("pin"))
        if not timeline:
            return None
        level = timeline_value(timeline, elapsed)
        return (wake["pin"], level) if level == wake.get("level") else None

    def reset(self, cause=HARD_RESET):
        """End the process as a reset would, keeping RTC memory, then start the board again."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.wait_output()
        self.clear_watchdog()
        self.restarts += 1
        self.start(cause)

    def power_cycle(self):
        """Cut the power and restore it: the process ends at once and RTC memory is lost."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.wait_output()
        self.clear_watchdog()
        try:
            (self.directory / RTC_FILE).unlink()
        except FileNotFoundError:
            pass
        self.restarts += 1
        self.start()

    def wait_output(self):
        if self._reader is not None:
            self._reader.join(timeout=5)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.wait_output()


# -- run ---------------------------------------------------------------------------------------


def simulated_elapsed(settings):
    return (time.time_ns() - settings["wall_start_ns"]) * settings["speed"] / 1e9


def timeline_value(timeline, elapsed):
    """Return the value of a [[seconds, value], ...] timeline at elapsed simulated seconds."""
    value = timeline[0][1]
    for seconds, item in timeline:
        if seconds > elapsed:
            break
        value = item
    return value


def in_periods(elapsed, periods):
    return any(start <= elapsed < end for start, end in periods or ())


def header(content, name):
    from email import message_from_bytes, policy

    message = message_from_bytes(content, policy=policy.default)
    value = message.get(name)
    return str(value) if value is not None else ""


def check_expectations(scenario, delivered):
    """Return a list of problems comparing delivered (kind, rule, subject) triples with expect."""
    problems = []
    expected = scenario["expect"]
    index = 0
    for item in expected:
        while index < len(delivered) and not _matches(item, delivered[index]):
            if scenario.get("exact", True):
                problems.append("unexpected email: %s" % (delivered[index][2] or delivered[index][:2],))
            index += 1
        if index >= len(delivered):
            problems.append("expected email did not arrive: %s" % json.dumps(item))
            continue
        index += 1
    if scenario.get("exact", True):
        for extra in delivered[index:]:
            problems.append("unexpected email: %s" % (extra[2] or extra[:2],))
    return problems


def _matches(item, triple):
    kind, rule, subject = triple
    if "kind" in item and item["kind"] != kind:
        return False
    if "rule" in item and item["rule"] != rule:
        return False
    if "subject" in item and subject is not None and item["subject"] not in subject:
        return False
    return True


def run(args):
    scenario = load_scenario(scenario_path(args.scenario))
    if args.duration is not None and args.duration <= 0:
        raise SimError("--duration must be a positive number of simulated seconds, e.g. 30000")
    # A negative speed runs the simulated clock backwards, so the scenario would never end.
    if args.speed is not None and args.speed <= 0:
        raise SimError("--speed must be a positive number of simulated seconds per real second, e.g. 120")
    firmware = find_firmware()
    if args.micropython is not None:
        try:
            executable = common.given_micropython(args.micropython, "checking --micropython")
        except common.ToolError as exc:
            raise SimError(exc.message) from None
    else:
        executable = find_micropython()
    real = args.server is not None
    password = None
    server = None
    endpoint = None
    oauth2 = sim_oauth2.options(scenario.get("oauth2"))
    redactor = Redactor([SIM_WIFI["password"]])
    if real and oauth2 is not None:
        raise SimError(
            "scenario %s turns on oauth2, which needs the local server and token endpoint; run it without --server"
            % scenario["name"]
        )
    if real:
        host, _, port = args.server.rpartition(":")
        if not host or not port.isdigit():
            raise SimError("--server must be HOST:PORT, e.g. smtp.gmail.com:587")
        if args.password_file:
            try:
                password = Path(args.password_file).read_text().rstrip("\r\n")
            except OSError as exc:
                raise SimError("cannot read --password-file %s: %s" % (args.password_file, exc.strerror)) from exc
        else:
            password = os.environ.get(PASSWORD_VARIABLE) or None
        if args.user and not password:
            raise SimError("--user needs a password: set %s or use --password-file" % PASSWORD_VARIABLE)
        if not args.sender or not args.to:
            raise SimError("--server needs --from and --to")
        smtp = {
            "host": host,
            "port": int(port),
            "security": args.security,
            "user": args.user,
            "password": password,
            "from": args.sender,
            "to": args.to,
            "transcript": True,
        }
        if args.server_name:
            smtp["server_name"] = args.server_name
        roots = []
        for path in args.ca or ():
            roots += read_certificates(path)
        if not roots and args.security != "none":
            raise SimError("--ca FILE is required with --server: a board has no store of trusted roots")
    else:
        password = secrets.token_urlsafe(12)
        server = LocalServer({SIM_USER: password})
        server.rejects = [[item["subject"], item["reply"], item.get("count", 1)] for item in scenario.get("reject", [])]
        server.resets_at_mail = set(scenario.get("resets_at_mail", []))
        roots = [server.ca_der]
        if oauth2 is not None:
            endpoint = sim_oauth2.TokenEndpoint(server.ca, on_secret=redactor.add, **oauth2)
            for secret in (endpoint.client_secret, endpoint.refresh_token):
                redactor.add(secret)
            server.tokens = endpoint
        server.start()
        smtp = {
            "host": server.host,
            "port": server.port,
            "security": "starttls",
            "server_name": "localhost",
            "user": SIM_USER,
            "password": password,
            "from": "Sim board <sim-board@example.com>",
            "to": ["operator@example.com"],
            "transcript": True,
            "timeout_s": 20,
        }
        if endpoint is not None:
            # The board gets its access tokens itself and has no password.
            endpoint.start()
            del smtp["password"]
            smtp["oauth2"] = endpoint.settings()
    redactor.add(password)
    directory = Path(tempfile.mkdtemp(prefix="microsmtp-sim-"))
    try:
        return _run_board(args, scenario, server, smtp, roots, directory, firmware, executable, redactor, real)
    finally:
        if server is not None:
            server.stop()
        if endpoint is not None:
            endpoint.stop()
        if args.keep:
            print("board directory kept: %s" % directory)
        else:
            shutil.rmtree(directory, ignore_errors=True)


def _frozen_has(executable, module):
    """Return False when the image's list of frozen modules lacks module (True if it has no such list)."""
    # Importing alerts.oauth2 to find out would run the sim's clock stand-in, which
    # needs the sim's files, so the image's module list is read instead.
    try:
        status, out, _err = common.run_briefly([str(executable), "-c", "help('modules')"])
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SimError("listing the modules of %s failed: %s" % (executable, exc)) from None
    names = out.split()
    if status != 0 or not any(name.startswith("alerts/") for name in names):
        return True
    return module.replace(".", "/") in names


def read_certificates(path):
    from microsmtp.encoding import ca_file_roots
    from microsmtp.errors import ConfigError

    try:
        return ca_file_roots(Path(path).read_bytes())
    except OSError as exc:
        raise SimError("cannot read --ca %s: %s" % (path, exc.strerror)) from exc
    except ConfigError as exc:
        raise SimError("--ca %s is not a valid CA file: %s" % (path, exc)) from None


def check_board_config(config, firmware, name):
    """Check the board's config.json with the firmware's own checks, so that a bad scenario stops here."""
    from .deploy import load_config_module

    module = load_config_module(firmware)
    if module is None:
        return
    try:
        module.validate(copy.deepcopy(config))
    except module.ConfigError as exc:
        raise SimError(
            "scenario %s gives the board an invalid config.json: %s (its sensors, rules, alerts, outbox, "
            "deep_sleep and wifi go there)" % (name, exc)
        ) from None


def _run_board(args, scenario, server, smtp, roots, directory, firmware, executable, redactor, real):
    (directory / "home").mkdir()
    config = board_config(scenario, smtp)
    check_board_config(config, firmware, scenario["name"])
    config_path = directory / "config.json"
    config_path.write_text(json.dumps(config, indent=1))
    config_path.chmod(0o600)
    write_ca_module(directory / "ca_roots.py", roots)
    shutil.copyfile(firmware / "main.py", directory / "main.py")
    library = firmware
    if not args.source:
        library = compile_firmware(firmware, directory / "lib")
    # The unix port searches its frozen modules first, so these run instead of firmware/.
    try:
        frozen = common.frozen_packages(executable, ("alerts", "microsmtp"))
    except common.ToolError as exc:
        raise SimError("%s failed: %s" % (exc.what, exc.message)) from None
    if frozen:
        print("frozen into %s, used instead of firmware/: %s" % (executable, ", ".join(frozen)), flush=True)
    if "oauth2" in smtp and "alerts" in frozen and not _frozen_has(executable, "alerts.oauth2"):
        # The frozen alerts package hides the compiled one, so alerts.oauth2 cannot be added beside it.
        raise SimError(
            "the alerts package frozen into %s has no alerts.oauth2 (the image was built from firmware"
            " older than alerts/oauth2.py), so it cannot run a scenario with oauth2; build the image again"
            " with `microsmtp firmware --board UNIX`, or use an image without the firmware frozen in" % executable
        )
    speed = args.speed or scenario["speed"]
    settings = {
        "speed": speed,
        "start_epoch": scenario.get("start", int(time.time())),
        "wifi": SIM_WIFI,
        "ntp_down": scenario.get("ntp_down", []),
        "wifi_down": scenario.get("wifi_down", []),
        "pins": scenario.get("pins", {}),
    }
    duration = args.duration or scenario["duration_s"]
    print(
        "scenario %s: %s (%d simulated s at %gx, about %.0f s)"
        % (scenario["name"], scenario.get("description", ""), duration, speed, duration / speed),
        flush=True,
    )
    if not real:
        print("local SMTP server 127.0.0.1:%d (STARTTLS, AUTH, test CA from trustme)" % server.port, flush=True)
    if server is not None and server.tokens is not None:
        endpoint = server.tokens
        print(
            "local OAuth2 token endpoint %s (access tokens valid for %d s%s%s)"
            % (
                endpoint.url,
                endpoint.expires_in,
                ", new refresh token with each" if endpoint.rotate else "",
                ", refresh token revoked after %d" % endpoint.revoke_after if endpoint.revoke_after is not None else "",
            ),
            flush=True,
        )
    board = Board(executable, directory, library, args.heap, redactor, not args.quiet, scenario.get("start_heaps", ()))
    settings["wall_start_ns"] = time.time_ns()
    (directory / "sim.json").write_text(json.dumps(settings))
    board.start()
    problems = []
    sleep_until = None
    drain_deadline = None
    power_cycles = sorted(scenario.get("power_cycles", []))
    expected_count = len(scenario["expect"])
    try:
        while True:
            time.sleep(0.02)
            elapsed = simulated_elapsed(settings)
            if server is not None:
                down = in_periods(elapsed, scenario.get("server_down"))
                if down and server.running:
                    print("sim   | t=%ds: SMTP server down" % elapsed, flush=True)
                    server.stop()
                elif not down and not server.running:
                    print("sim   | t=%ds: SMTP server up again" % elapsed, flush=True)
                    server.start()
            if server is not None and server.reset_requested.is_set():
                print(
                    "sim   | t=%ds: board reset while the server holds its MAIL FROM (RTC memory kept)" % elapsed,
                    flush=True,
                )
                if board.poll() is None:
                    board.reset()
                server.reset_requested.clear()
                continue
            if power_cycles and elapsed >= power_cycles[0]:
                power_cycles.pop(0)
                print("sim   | t=%ds: power cycle: board off and on again" % elapsed, flush=True)
                sleep_until = None
                if board.poll() is None:
                    board.power_cycle()
                else:
                    board.restarts += 1
                    board.start()
                continue
            if sleep_until is not None:
                woken = board.wake_pin(scenario.get("pins", {}), elapsed)
                if woken is not None:
                    print(
                        "sim   | t=%ds: pin %s changed to %d: it wakes the board from deep sleep" % ((elapsed,) + woken)
                    )
                if woken is not None or time.monotonic() >= sleep_until:
                    sleep_until = None
                    board.restarts += 1
                    board.start(DEEPSLEEP_RESET)
                continue
            status = board.poll()
            if status is None and board.watchdog_expired():
                print("sim   | t=%ds: watchdog not fed in time: board reset" % elapsed, flush=True)
                board.watchdog_reset()
                continue
            if status is not None:
                board.wait_output()
                board.clear_watchdog()
                if status == DEEPSLEEP_STATUS:
                    sleep_ms = 0
                    for line in reversed(board.lines):
                        match = _SLEEP_PATTERN.search(line)
                        if match:
                            sleep_ms = int(match.group(1))
                            break
                    sleep_until = time.monotonic() + sleep_ms / 1000
                    continue
                if status == RESET_STATUS:
                    board.restarts += 1
                    # machine.WDT's feed() after its deadline ends the process as reset() does.
                    late_feed = board.lines and board.lines[-1].endswith("[machine] watchdog timeout: reset")
                    board.start(WDT_RESET if late_feed else HARD_RESET)
                    continue
                problems.append("the board stopped with exit status %d" % status)
                break
            if elapsed >= duration:
                arrived = len(board.sent) if real else len(server.messages)
                if drain_deadline is None:
                    drain_deadline = time.monotonic() + DRAIN_S
                if arrived >= expected_count or time.monotonic() >= drain_deadline:
                    break
    finally:
        board.stop()
    if board.memory_error:
        problems.append("the board ran out of memory (MemoryError) with --heap %s" % (args.heap or "default"))
    return report(args, scenario, server, board, problems, real)


def report(args, scenario, server, board, problems, real):
    delivered = []
    if real:
        delivered = [(kind, rule if rule != "-" else None, None) for kind, rule in board.sent]
    else:
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        for old in output.glob("%s-*.eml" % scenario["name"]):
            old.unlink()
        seen = set()
        for number, message in enumerate(server.messages, 1):
            content = message["content"]
            path = output / ("%s-%02d.eml" % (scenario["name"], number))
            path.write_bytes(content)
            message_id = header(content, "Message-ID")
            subject = header(content, "Subject")
            kind = header(content, "X-Alert-Kind")
            duplicate = message_id in seen
            seen.add(message_id)
            print(
                "delivered %s %s%s (TLS %s, AUTH %s) -> %s"
                % (
                    message_id,
                    subject,
                    " [duplicate]" if duplicate else "",
                    "yes" if message["tls"] else "NO",
                    "%s %s" % (message["user"], message["mechanism"]) if message["user"] else "none",
                    path,
                )
            )
            if not message["tls"] or message["user"] != SIM_USER:
                problems.append("message %s arrived without TLS or AUTH" % message_id)
            elif server.tokens is not None and message["mechanism"] != "XOAUTH2":
                problems.append(
                    "message %s arrived with AUTH %s instead of XOAUTH2" % (message_id, message["mechanism"])
                )
            if not duplicate:
                delivered.append((kind, None, subject))
    problems += check_expectations(scenario, delivered)
    for subject, reply in server.rejected if server is not None else ():
        print("rejected %s: %s" % (subject, reply))
    print(
        "summary: %d email(s) %s, %d expected, %d board restart(s), %d watchdog reset(s)"
        % (
            len(delivered),
            "accepted by the server" if real else "delivered",
            len(scenario["expect"]),
            board.restarts,
            board.watchdog_resets,
        )
    )
    if server is not None and server.tokens is not None:
        endpoint = server.tokens
        print(
            "OAuth2: %d access token(s) issued, %d token request(s) rejected with invalid_grant%s,"
            " %d XOAUTH2 login(s) refused"
            % (
                endpoint.issued,
                len(endpoint.rejected),
                " (%s)"
                % ", ".join("%s: %d" % (why, endpoint.rejected.count(why)) for why in sorted(set(endpoint.rejected)))
                if endpoint.rejected
                else "",
                server.xoauth2_rejected,
            )
        )
    if board.heap_in_use:
        print(
            "heap in use after a collection: %d bytes at the first report, %d at the last, at most %d (%d report(s))"
            % (board.heap_in_use[0], board.heap_in_use[-1], max(board.heap_in_use), len(board.heap_in_use))
        )
    for problem in problems:
        print("FAILED: " + problem)
    if not problems:
        print("OK: every expected email arrived")
    return EX_FAILED if problems else EX_OK


def run_sim(args):
    try:
        return run(args)
    except SimError as exc:
        print("microsmtp sim: error: %s" % exc, file=sys.stderr)
        return EX_CONFIG


def add_parser(subcommands):
    """Add the ``sim`` subcommand."""
    parser = subcommands.add_parser(
        "sim",
        help="run the alert firmware on a virtual board against a local SMTP server",
        description=(
            "Run firmware/main.py under the MicroPython unix port as a virtual board with simulated "
            "sensors from a scenario, deliver its alerts through verified TLS to a local SMTP server "
            "(or a real one with --server), save them as .eml files and check that the scenario's "
            "expected emails arrived. The password for --server comes from %s or --password-file." % PASSWORD_VARIABLE
        ),
        epilog="exit status: 0 every expected email arrived, 1 not, 78 invalid options or scenario",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--scenario",
        default=str(DEFAULT_SCENARIO),
        metavar="FILE",
        help="scenario JSON file, or the name of a shipped one such as server_down.json (default: %s)"
        % DEFAULT_SCENARIO.name,
    )
    parser.add_argument("--heap", metavar="SIZE", help="GC heap of the board, e.g. 192K (default: the unix port's)")
    parser.add_argument(
        "--speed", type=float, metavar="N", help="simulated seconds per real second (default: the scenario's speed)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help=(
            "simulated seconds to run, e.g. 30000 for 1000 readings every 30 s (default: the scenario's "
            "duration_s); while expected emails are still missing at the end, the board runs up to %d real "
            "seconds longer to empty its outbox" % DRAIN_S
        ),
    )
    parser.add_argument(
        "--output",
        default=str(DEFAULT_OUTPUT),
        metavar="DIR",
        help="directory for the delivered .eml files (default: build/sim)",
    )
    parser.add_argument(
        "--source", action="store_true", help="run the firmware from source instead of compiling it to .mpy first"
    )
    parser.add_argument(
        "--micropython",
        metavar="EXE",
        help=(
            "MicroPython unix port to run the board with (default: the one `make setup` installs), e.g. one "
            "built by `microsmtp firmware --board UNIX` with the firmware frozen in"
        ),
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary board directory and print its path")
    parser.add_argument("--quiet", action="store_true", help="print only the summary, not the board's log")
    real = parser.add_argument_group("real server (instead of the local one)")
    real.add_argument("--server", metavar="HOST:PORT", help="SMTP server to send through, e.g. smtp.gmail.com:587")
    real.add_argument(
        "--security",
        choices=("starttls", "tls", "none"),
        default="starttls",
        help="connection security with --server (default: starttls)",
    )
    real.add_argument("--user", metavar="NAME", help="user name for AUTH")
    real.add_argument(
        "--password-file", metavar="FILE", help="file containing the password (default: $%s)" % PASSWORD_VARIABLE
    )
    real.add_argument("--ca", action="append", metavar="FILE", help="trusted root CA, PEM or DER; repeatable; required")
    real.add_argument("--server-name", metavar="NAME", help="name the server certificate must match (default: HOST)")
    real.add_argument("--from", dest="sender", metavar="ADDR", help="sender address")
    real.add_argument("--to", action="append", metavar="ADDR", help="recipient address; repeatable")
    parser.set_defaults(handler=run_sim)
    return parser
