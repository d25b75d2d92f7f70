"""Load and validate config.json: every check names the key and the expected form.

``load(path)`` returns a plain dict with defaults filled in and raises ConfigError on
the first problem. Values of secret keys (passwords, tokens) never appear in a message.
"""

SECRET_KEYS = ("password", "oauth2_token", "oauth2", "refresh_token", "client_secret")

SECURITY_MODES = ("starttls", "tls", "none")
SENSOR_TYPES = ("mcu_temperature", "adc", "digital", "dht11", "dht22", "ds18b20", "simulated")
_REQUIRED = object()


class ConfigError(Exception):
    """An invalid or missing configuration value; ``key`` is its dotted path."""

    def __init__(self, key, message):
        super().__init__(message)
        self.key = key
        self.message = message

    def __str__(self):
        return self.message


def _describe(key, value):
    if key.split(".")[-1] in SECRET_KEYS:
        return "a value that is not shown because it is secret"
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return text


def _fail(key, expected, value):
    raise ConfigError(key, "config.json: %s is invalid: expected %s, got %s" % (key, expected, _describe(key, value)))


def _check_keys(section, allowed, prefix):
    for key in section:
        if key not in allowed:
            raise ConfigError(
                prefix + key,
                "config.json: unknown key %s%s; allowed keys here: %s" % (prefix, key, ", ".join(allowed)),
            )


def _is_number(value):
    """Return True for an int or a finite float; 1e999 in JSON reads as infinity."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    # NaN is not equal to itself, and infinity minus itself is NaN.
    return isinstance(value, int) or (value == value and value - value == 0)


def _field(section, prefix, key, kind, default=_REQUIRED, minimum=None, maximum=None, choices=None):
    path = prefix + key
    if key not in section or section[key] is None:
        if default is _REQUIRED:
            raise ConfigError(
                path, "config.json: %s is missing: expected %s" % (path, _expected(kind, minimum, maximum, choices))
            )
        section[key] = default
        return default
    value = section[key]
    ok = True
    if kind == "str":
        ok = isinstance(value, str) and value != "" and "\r" not in value and "\n" not in value and "\x00" not in value
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "number":
        ok = _is_number(value)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "pin":
        ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or (
            isinstance(value, str) and value != ""
        )
    if ok and choices is not None:
        ok = value in choices
    if ok and minimum is not None:
        ok = value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        expected = _expected(kind, minimum, maximum, choices)
        if kind == "number" and isinstance(value, float):
            # Name the reason when the value is infinity or NaN.
            expected = "a finite" + expected[1:]
        _fail(path, expected, value)
    return value


def _expected(kind, minimum, maximum, choices):
    if choices is not None:
        return "one of " + ", ".join([str(choice) for choice in choices])
    text = {
        "str": "a non-empty string on one line",
        "int": "an integer",
        "number": "a number",
        "bool": "true or false",
        "pin": 'a pin number or name such as 4 or "LED"',
    }[kind]
    if minimum is not None and maximum is not None:
        text += " from %s to %s" % (minimum, maximum)
    elif minimum is not None:
        text += " of at least %s" % minimum
    return text


def _section(config, key, required=True):
    value = config.get(key)
    if value is None:
        if required:
            raise ConfigError(key, "config.json: section %s is missing: expected an object {...}" % key)
        value = {}
        config[key] = value
    if not isinstance(value, dict):
        _fail(key, "an object {...}", value)
    return value


_ADDRESS_EXPECTED = "an email address on one line such as alerts@example.com or Greenhouse <alerts@example.com>"


def _address_ok(value):
    """Return True if microsmtp.message.parse_address(value) accepts it; keep the two alike.

    Importing that function loads the whole SMTP library. In `microsmtp sim` (MicroPython
    unix port, deep_sleep.json with start_heaps) that raised the heap the boot needs from
    80K to more than 96K, so the rules are repeated here instead.
    tests/core/test_alerts_input_checks.py compares both on a table of addresses, display
    names included.
    """
    try:
        value.encode("utf-8")
    except UnicodeError:
        # A lone surrogate (CPython only), which UTF-8 cannot encode.
        return False
    if "\x00" in value or "\r" in value or "\n" in value:
        # Header text: CR, LF or NUL anywhere, display name included, could inject lines.
        return False
    address = value.strip(" \t")
    if address.endswith(">"):
        # The address starts after the first "<" outside quotes; backslash escapes count in quotes.
        quoted = escaped = False
        start = -1
        for index in range(len(address)):
            char = address[index]
            if escaped:
                escaped = False
            elif char == "\\" and quoted:
                escaped = True
            elif char == '"':
                quoted = not quoted
            elif char == "<" and not quoted:
                start = index
                break
        if start < 0:
            return False
        address = address[start + 1 : -1]
    return _addr_spec_ok(address)


def _addr_spec_ok(address):
    """Return True for an RFC 5321 addr-spec as microsmtp.checks.addr_spec_problem() accepts it."""
    at = address.rfind("@")
    local, domain = address[:at], address[at + 1 :]
    if at < 1 or not domain or len(local.encode()) > 64 or len(address.encode()) > 254:
        return False
    if [char for char in address if "\x7f" <= char <= "\x9f" or char in "\u2028\u2029"]:
        return False
    if local[0] == '"':
        escaped = False
        for char in local[1:-1]:
            if char < " " or (char == '"' and not escaped):
                return False
            escaped = char == "\\" and not escaped
        if len(local) < 2 or local[-1] != '"' or escaped:
            return False
    elif (
        [char for char in local if not ("!" <= char <= "~" and char not in '"(),:;<>@[\\]' or char >= "\x80")]
        or local[0] == "."
        or local[-1] == "."
        or ".." in local
    ):
        return False
    if domain[0] == "[" and domain[-1] == "]":
        return len(domain) > 2 and not [char for char in domain[1:-1] if not "!" <= char <= "~" or char in "[]\\"]
    for label in domain.split("."):
        if not label or label[0] == "-" or label[-1] == "-":
            return False
        if [
            char
            for char in label
            if not ("a" <= char <= "z" or "A" <= char <= "Z" or "0" <= char <= "9" or char == "-" or char >= "\x80")
        ]:
            return False
    return True


def _address(section, prefix, key):
    value = _field(section, prefix, key, "str")
    if not _address_ok(value):
        _fail(prefix + key, _ADDRESS_EXPECTED, value)
    return value


def _validate_wifi(config):
    wifi = _section(config, "wifi")
    _check_keys(wifi, ("ssid", "password", "timeout_s", "retries"), "wifi.")
    _field(wifi, "wifi.", "ssid", "str")
    if "password" in wifi and wifi["password"] is not None and not isinstance(wifi["password"], str):
        _fail("wifi.password", "a string (empty for an open network)", wifi["password"])
    if wifi.get("password") is None:
        wifi["password"] = ""
    _field(wifi, "wifi.", "timeout_s", "number", 20, 1, 300)
    _field(wifi, "wifi.", "retries", "int", 3, 1, 100)


def _validate_smtp(config):
    smtp = _section(config, "smtp")
    _check_keys(
        smtp,
        (
            "host",
            "port",
            "security",
            "user",
            "password",
            "oauth2_token",
            "oauth2",
            "from",
            "to",
            "ca_file",
            "server_name",
            "timeout_s",
            "transcript",
        ),
        "smtp.",
    )
    _field(smtp, "smtp.", "host", "str")
    security = _field(smtp, "smtp.", "security", "str", "starttls", choices=SECURITY_MODES)
    default_port = {"starttls": 587, "tls": 465, "none": 25}[security]
    _field(smtp, "smtp.", "port", "int", default_port, 1, 65535)
    user = smtp.get("user")
    if user is not None:
        _field(smtp, "smtp.", "user", "str")
    password = smtp.get("password")
    token = smtp.get("oauth2_token")
    for key, value in (("password", password), ("oauth2_token", token)):
        # SMTP AUTH cannot carry CR, LF or NUL, so the client would refuse every session.
        if value is not None and not (isinstance(value, str) and value and not [c for c in value if c in "\r\n\x00"]):
            _fail("smtp." + key, "a non-empty string without CR, LF or NUL", value)
    if password is not None and token is not None:
        raise ConfigError(
            "smtp.oauth2_token", "config.json: smtp.password and smtp.oauth2_token are both set; keep one"
        )
    oauth2 = _validate_oauth2(smtp)
    if oauth2 is not None and (password is not None or token is not None):
        other = "smtp.password" if password is not None else "smtp.oauth2_token"
        raise ConfigError(
            "smtp.oauth2",
            "config.json: smtp.oauth2 and %s are both set; keep one (smtp.oauth2 gets the token itself)" % other,
        )
    if user is not None and password is None and token is None and oauth2 is None:
        raise ConfigError(
            "smtp.password",
            "config.json: smtp.password is missing: smtp.user needs a password, an oauth2_token or an oauth2 object",
        )
    if user is None and (password is not None or token is not None or oauth2 is not None):
        raise ConfigError("smtp.user", "config.json: smtp.user is missing: a password or token needs the user name")
    if user is not None and security == "none":
        raise ConfigError(
            "smtp.security",
            "config.json: smtp.security is none, which would send the password in plaintext; use starttls or tls",
        )
    for key in ("user", "password", "oauth2_token", "oauth2"):
        smtp.setdefault(key, None)
    _address(smtp, "smtp.", "from")
    recipients = smtp.get("to")
    if recipients is None:
        raise ConfigError("smtp.to", "config.json: smtp.to is missing: expected an address or a list of addresses")
    if isinstance(recipients, str):
        recipients = [recipients]
        smtp["to"] = recipients
    if not isinstance(recipients, list) or not recipients:
        _fail("smtp.to", "an address or a non-empty list of addresses", recipients)
    for index in range(len(recipients)):
        value = recipients[index]
        if not isinstance(value, str) or not _address_ok(value):
            _fail("smtp.to[%d]" % index, _ADDRESS_EXPECTED, value)
    _field(smtp, "smtp.", "ca_file", "str", None)
    _field(smtp, "smtp.", "server_name", "str", None)
    _field(smtp, "smtp.", "timeout_s", "number", 60, 5, 600)
    _field(smtp, "smtp.", "transcript", "bool", False)


_OAUTH2_KEYS = ("token_url", "client_id", "refresh_token", "client_secret", "scope")


def _validate_oauth2(smtp):
    """Check smtp.oauth2, the settings of the refresh-token grant; return it, or None when absent."""
    oauth2 = smtp.get("oauth2")
    if oauth2 is None:
        return None
    if not isinstance(oauth2, dict):
        _fail("smtp.oauth2", "an object {...} with token_url, client_id and refresh_token", oauth2)
    _check_keys(oauth2, _OAUTH2_KEYS, "smtp.oauth2.")
    for key in _OAUTH2_KEYS:
        required = key in ("token_url", "client_id", "refresh_token")
        value = _field(oauth2, "smtp.oauth2.", key, "str", _REQUIRED if required else None)
        if value is None:
            continue
        if key == "scope":
            ok = value == value.strip() and "  " not in value and "\t" not in value
            expected = "scopes separated by single spaces"
        else:
            ok = " " not in value and "\t" not in value
            expected = "a string without spaces"
        if ok and key == "token_url":
            ok = _https_url_ok(value)
            expected = "an https URL such as https://login.microsoftonline.com/consumers/oauth2/v2.0/token"
        if not ok:
            _fail("smtp.oauth2." + key, expected, value)
    return oauth2


_HOST_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._"


def _https_url_ok(url):
    """Return True for the URLs that alerts.oauth2.split_url() accepts (keep the two alike).

    A valid URL is https:// with a host name, an IPv4 address or an IPv6 address in brackets,
    an optional port from 1 to 65535, then a path, a query or a fragment. Every character
    is printable ASCII other than a space.
    """
    if not url.startswith("https://") or [char for char in url if not " " < char <= "~"]:
        return False
    authority = url[8:]
    for mark in "/?#":
        authority = authority.split(mark)[0]
    if authority.startswith("["):
        host, bracket, port = authority[1:].partition("]")
        allowed = "0123456789ABCDEFabcdef:." if bracket and ":" in host else ""
        if port and port[0] != ":":
            return False
        port = port[1:] if port else "443"
    else:
        host, colon, port = authority.partition(":")
        allowed = _HOST_CHARS
        if not colon:
            port = "443"
    if not host or [char for char in host if char not in allowed]:
        return False
    return port.isdigit() and 0 < int(port) < 65536


def _validate_ntp(config):
    ntp = _section(config, "ntp")
    _check_keys(ntp, ("host", "retries", "resync_h"), "ntp.")
    _field(ntp, "ntp.", "host", "str")
    _field(ntp, "ntp.", "retries", "int", 3, 1, 100)
    _field(ntp, "ntp.", "resync_h", "number", 24, 1, 8760)


_SENSOR_KEYS = {
    "mcu_temperature": (),
    "adc": ("pin", "scale", "offset"),
    "digital": ("pin", "pull", "invert"),
    "dht11": ("pin", "measure"),
    "dht22": ("pin", "measure"),
    "ds18b20": ("pin", "index"),
    "simulated": ("values", "failures", "hangs", "repeat_s"),
}


def _validate_sensors(config):
    sensors = config.get("sensors")
    if sensors is None:
        raise ConfigError("sensors", "config.json: sensors is missing: expected a non-empty list of sensor objects")
    if not isinstance(sensors, list) or not sensors:
        _fail("sensors", "a non-empty list of sensor objects", sensors)
    names = []
    for index in range(len(sensors)):
        prefix = "sensors[%d]." % index
        sensor = sensors[index]
        if not isinstance(sensor, dict):
            _fail(prefix[:-1], "an object {...}", sensor)
        kind = _field(sensor, prefix, "type", "str", choices=SENSOR_TYPES)
        _check_keys(sensor, ("name", "type", "unit", "interval_s") + _SENSOR_KEYS[kind], prefix)
        name = _field(sensor, prefix, "name", "str")
        if name in names:
            raise ConfigError(
                prefix + "name",
                "config.json: %sname %s is used twice; sensor names must be unique" % (prefix, repr(name)),
            )
        names.append(name)
        unit = sensor.get("unit")
        if unit != "":
            # "" is the default, and may be given: no unit.
            if unit is not None and not (isinstance(unit, str) and not [c for c in unit if c in "\r\n\x00"]):
                _fail(prefix + "unit", 'a string on one line ("" for none)', unit)
            _field(sensor, prefix, "unit", "str", "")
        _field(sensor, prefix, "interval_s", "number", 1 if kind == "digital" else 60, 0.1, 86400)
        if kind in ("adc", "digital", "dht11", "dht22", "ds18b20"):
            _field(sensor, prefix, "pin", "pin")
        if kind == "adc":
            _field(sensor, prefix, "scale", "number", 1)
            _field(sensor, prefix, "offset", "number", 0)
        elif kind == "digital":
            _field(sensor, prefix, "pull", "str", "none", choices=("up", "down", "none"))
            _field(sensor, prefix, "invert", "bool", False)
        elif kind in ("dht11", "dht22"):
            _field(sensor, prefix, "measure", "str", "temperature", choices=("temperature", "humidity"))
        elif kind == "ds18b20":
            _field(sensor, prefix, "index", "int", 0, 0)
        elif kind == "simulated":
            _validate_timeline(sensor, prefix, "values", True)
            _validate_timeline(sensor, prefix, "failures", False)
            _validate_timeline(sensor, prefix, "hangs", False)
            _field(sensor, prefix, "repeat_s", "number", 0, 0, 31536000)
    return names


def _validate_timeline(sensor, prefix, key, required):
    """Check values ([seconds, number] pairs) or a list of [start_s, end_s] periods."""
    values = sensor.get(key)
    if values is None and not required:
        sensor[key] = []
        return
    periods = key != "values"
    if periods:
        expected = "a list of [start_s, end_s] periods in increasing order"
    else:
        expected = "a list of [seconds, value] pairs with increasing seconds"
    if not isinstance(values, list) or (required and not values):
        _fail(prefix + key, expected, values)
    last = -1
    for item in values:
        if not isinstance(item, list) or len(item) != 2 or not _is_number(item[0]):
            _fail(prefix + key, expected, item)
        if item[0] < last or (item[0] == last and not periods):
            _fail(prefix + key, expected, item)
        if not _is_number(item[1]) or (periods and item[1] <= item[0]):
            _fail(prefix + key, expected + (" (end after start)" if periods else " (numbers)"), item)
        last = item[1] if periods else item[0]


def _validate_rules(config, sensor_names):
    rules = config.get("rules")
    if rules is None:
        rules = []
        config["rules"] = rules
    if not isinstance(rules, list):
        _fail("rules", "a list of rule objects", rules)
    names = []
    for index in range(len(rules)):
        prefix = "rules[%d]." % index
        rule = rules[index]
        if not isinstance(rule, dict):
            _fail(prefix[:-1], "an object {...}", rule)
        _check_keys(
            rule, ("name", "sensor", "above", "below", "hysteresis", "state", "on_change", "min_interval_s"), prefix
        )
        name = _field(rule, prefix, "name", "str")
        if name in names:
            raise ConfigError(
                prefix + "name",
                "config.json: %sname %s is used twice; rule names must be unique" % (prefix, repr(name)),
            )
        names.append(name)
        _field(rule, prefix, "sensor", "str", choices=sensor_names)
        conditions = [key for key in ("above", "below", "state", "on_change") if rule.get(key) is not None]
        if len(conditions) != 1:
            raise ConfigError(
                prefix + "above",
                "config.json: %s needs exactly one of above, below, state or on_change, got %s"
                % (prefix[:-1], ", ".join(conditions) or "none"),
            )
        if conditions[0] in ("above", "below"):
            _field(rule, prefix, conditions[0], "number")
        elif conditions[0] == "state":
            _field(rule, prefix, "state", "int", choices=(0, 1))
        elif rule["on_change"] is not True:
            _fail(prefix + "on_change", "true (leave the key out for a rule of another kind)", rule["on_change"])
        _field(rule, prefix, "hysteresis", "number", 0, 0)
        _field(rule, prefix, "min_interval_s", "number", 0, 0, 2592000)


# Folders of the firmware's code on the board; the outbox must not share them.
_CODE_FOLDERS = ("alerts", "microsmtp", "lib", ".micropython")


def _outbox_dir(path):
    """Reject an outbox folder that would hold the firmware's own files.

    The folder must be one of its own, such as outbox or data/outbox. It must not be
    the board's root, the folder the firmware runs in (where config.json is) or a code
    folder, and it must be a plain path without ".", ".." or empty parts.
    """
    import os

    parts = path.strip("/").split("/")
    bad = [part for part in parts if part in ("", ".", "..") or part != part.strip()]
    if not bad and path.startswith("/"):
        try:
            here = os.getcwd().rstrip("/") + "/"
        except (AttributeError, OSError):
            here = None
        # An absolute path to the firmware's folder or to a folder that contains it.
        bad = here is not None and here.startswith(path.rstrip("/") + "/")
    if bad or parts[0] in _CODE_FOLDERS or [part for part in parts if part.endswith((".py", ".mpy"))]:
        _fail(
            "outbox.dir",
            "a folder of its own such as outbox or data/outbox (not the board's root, the firmware's folder "
            "or a code folder, and no . or .. parts), because the outbox owns the files in it",
            path,
        )


def _validate_rest(config, limits):
    alerts = _section(config, "alerts", required=False)
    _check_keys(alerts, ("max_per_hour", "heartbeat_h", "history", "sensor_failures"), "alerts.")
    _field(alerts, "alerts.", "max_per_hour", "int", 10, 1, 1000)
    _field(alerts, "alerts.", "heartbeat_h", "number", 0, 0, 8760)
    _field(alerts, "alerts.", "history", "int", 30, 0, 500)
    _field(alerts, "alerts.", "sensor_failures", "int", 3, 1, 1000)

    outbox = _section(config, "outbox", required=False)
    _check_keys(outbox, ("dir", "max_entries", "max_aside", "retry_min_s", "retry_max_s"), "outbox.")
    _outbox_dir(_field(outbox, "outbox.", "dir", "str", "outbox"))
    _field(outbox, "outbox.", "max_entries", "int", 50, 1, 10000)
    _field(outbox, "outbox.", "max_aside", "int", 10, 1, 1000)
    # A wait is one asyncio sleep, and MicroPython's tick arithmetic ends at 2**29 ms (6.2
    # days). So a day is the longest wait that a retry or a deep sleep may take.
    retry_min = _field(outbox, "outbox.", "retry_min_s", "number", 30, 1, 86400)
    _field(outbox, "outbox.", "retry_max_s", "number", 3600, retry_min, 86400)

    sleep = _section(config, "deep_sleep", required=False)
    _check_keys(sleep, ("enabled", "interval_s"), "deep_sleep.")
    _field(sleep, "deep_sleep.", "enabled", "bool", False)
    _field(sleep, "deep_sleep.", "interval_s", "number", 600, 10, 86400)

    board = _section(config, "board", required=False)
    _check_keys(board, ("led", "led_active_high", "watchdog_ms"), "board.")
    _field(board, "board.", "led", "pin", None)
    _field(board, "board.", "led_active_high", "bool", True)
    maximum = limits.get("watchdog_ms") if isinstance(limits, dict) else None
    watchdog_ms = _field(board, "board.", "watchdog_ms", "int", 0, 0, 3600000)
    # Only a positive whole number counts as a limit; board.json is not the user's file.
    if isinstance(maximum, int) and not isinstance(maximum, bool) and maximum > 0 and watchdog_ms > maximum:
        _fail(
            "board.watchdog_ms",
            "at most %d, the longest this board's watchdog takes (board.json)" % maximum,
            watchdog_ms,
        )


def validate(config, limits=None):
    """Check a parsed config, fill in defaults in place and return it.

    ``limits`` is the "limits" object of the board's board.json, such as the longest
    watchdog_ms its port accepts.
    """
    if not isinstance(config, dict):
        raise ConfigError("", "config.json must contain one JSON object {...}")
    _check_keys(
        config,
        ("device", "wifi", "smtp", "ntp", "sensors", "rules", "alerts", "outbox", "deep_sleep", "board"),
        "",
    )
    _field(config, "", "device", "str")
    _validate_wifi(config)
    _validate_smtp(config)
    _validate_ntp(config)
    names = _validate_sensors(config)
    _validate_rules(config, names)
    _validate_rest(config, limits)
    return config


def merge_board_defaults(config, board):
    """Fill board.* keys missing from config with a board.json's "defaults"."""
    defaults = board.get("defaults") if isinstance(board, dict) else None
    if not isinstance(defaults, dict):
        return config
    section = config.get("board")
    if section is None:
        section = {}
        config["board"] = section
    if isinstance(section, dict):
        for key in ("led", "led_active_high", "watchdog_ms"):
            if key in defaults and section.get(key) is None:
                section[key] = defaults[key]
    return config


def _json_position(exc):
    """Return where a JSON error is: line and column on CPython; MicroPython gives none."""
    if hasattr(exc, "lineno"):
        return "line %d, column %d: %s" % (exc.lineno, exc.colno, exc.msg)
    return "%s; MicroPython does not say where" % exc


_WHITESPACE = " \t\n\r"
_STRUCTURE = "{}[]:,"
_VALUE_HELP = "a string in double quotes, a number, true, false, null, an object or a list"


def _is_json_number(token):
    """Return True for a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?"""
    index = 1 if token.startswith("-") else 0

    def digits(start):
        end = start
        while end < len(token) and "0" <= token[end] <= "9":
            end += 1
        return end

    end = digits(index)
    if end == index or (token[index] == "0" and end > index + 1):
        return False
    if end < len(token) and token[end] == ".":
        index = end + 1
        end = digits(index)
        if end == index:
            return False
    if end < len(token) and token[end] in "eE":
        index = end + 1
        if index < len(token) and token[index] in "+-":
            index += 1
        end = digits(index)
        if end == index:
            return False
    return end == len(token)


def check_json(text):
    """Return None for valid JSON syntax, else "line L, column C: problem".

    MicroPython's json.loads accepts some invalid text (a trailing or a missing comma,
    ``{"a": }`` as ``{}``), so config.json is checked here first, with the same result
    on both runtimes. Only the structure and the form of bare values are checked, and a
    message never repeats the text, which may be a password.
    """
    # What comes next: "value", "key" (or "}" right after "{"), ":" or "after" (a value ended).
    expect = "value"
    stack = []
    just_opened = False
    line = 1
    line_start = 0
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char in _WHITESPACE:
            if char == "\n":
                line += 1
                line_start = index + 1
            index += 1
            continue
        where = "line %d, column %d: " % (line, index - line_start + 1)
        if expect == "after" and not stack:
            return where + "extra text after the end of the JSON value"
        if char == '"':
            if expect not in ("value", "key"):
                return where + _missing_comma(stack)
            index += 1
            while index < length and text[index] != '"':
                if text[index] == "\\":
                    index += 1
                elif text[index] < " ":
                    return where + "line break or control character inside a string; is a closing quote missing?"
                index += 1
            if index >= length:
                return where + "string without its closing double quote"
            index += 1
            expect = ":" if expect == "key" else "after"
            just_opened = False
            continue
        if char in "{[":
            if expect != "value":
                return where + (_missing_comma(stack) if expect == "after" else _json_expected(expect, char))
            stack.append(char)
            expect = "key" if char == "{" else "value"
            just_opened = True
        elif char in "}]":
            opener = "{" if char == "}" else "["
            if not stack or stack[-1] != opener:
                return where + "%s does not match %s" % (
                    repr(char),
                    repr(stack[-1]) if stack else "any opening bracket",
                )
            if expect != "after" and not just_opened:
                if _previous_character(text, index) == ",":
                    return where + "comma before %s; remove it" % repr(char)
                return where + _json_expected(expect, char)
            stack.pop()
            expect = "after"
            just_opened = False
        elif char == ":":
            if expect != ":":
                return where + _json_expected(expect, char)
            expect = "value"
        elif char == ",":
            if expect != "after" or not stack:
                return where + _json_expected(expect, char)
            expect = "key" if stack[-1] == "{" else "value"
            just_opened = False
        else:
            start = index
            while (
                index < length
                and text[index] not in _WHITESPACE
                and text[index] not in _STRUCTURE
                and text[index] != '"'
            ):
                index += 1
            if expect == "after":
                return where + _missing_comma(stack)
            if expect != "value":
                return where + _json_expected(expect, "")
            token = text[start:index]
            if token not in ("true", "false", "null") and not _is_json_number(token):
                return where + "invalid value: expected " + _VALUE_HELP
            expect = "after"
            just_opened = False
            continue
        index += 1
    where = "line %d, column %d: " % (line, index - line_start + 1)
    if stack:
        return where + "text ends with %d bracket(s) not closed" % len(stack)
    if expect != "after":
        return where + "no JSON value"
    return None


def _previous_character(text, index):
    """Return the last character before index that is not whitespace, or ""."""
    index -= 1
    while index >= 0 and text[index] in _WHITESPACE:
        index -= 1
    return text[index] if index >= 0 else ""


def _missing_comma(stack):
    return "missing comma before this value" if stack else "extra text after the end of the JSON value"


def _json_expected(expect, found):
    found = (" before " + repr(found)) if found else ""
    if expect == "key":
        return "expected a key in double quotes" + found
    if expect == ":":
        return "expected ':' after the key" + found
    if expect == "value":
        return "expected a value (%s)%s" % (_VALUE_HELP, found)
    return "expected a comma or a closing bracket" + found


def load(path="config.json", board_path="board.json"):
    """Read, merge board defaults into, and validate the config file; return the dict."""
    import json

    try:
        with open(path) as file:
            text = file.read()
    except OSError as exc:
        if exc.args and exc.args[0] == 2:  # ENOENT
            raise ConfigError(
                "", "%s not found: copy config.example.json to the board as %s and edit it" % (path, path)
            ) from None
        raise ConfigError(
            "", "%s cannot be read (%s): check the filesystem, then copy it again" % (path, exc)
        ) from None
    problem = check_json(text)
    if problem is None:
        try:
            config = json.loads(text)
        except ValueError as exc:
            problem = _json_position(exc)
    if problem is not None:
        raise ConfigError("", "%s is not valid JSON (%s): check commas, quotes and brackets there" % (path, problem))
    text = None
    try:
        with open(board_path) as file:
            board = json.loads(file.read())
    except (OSError, ValueError):
        board = None
    limits = None
    if isinstance(board, dict):
        merge_board_defaults(config, board)
        limits = board.get("limits")
    return validate(config, limits)


def describe(config):
    """Return a one-line summary of a validated config without secrets, for the log."""
    smtp = config["smtp"]
    user = smtp["user"] or "no AUTH"
    if smtp.get("oauth2"):
        user += " (OAuth2 tokens from %s)" % smtp["oauth2"]["token_url"].split("/")[2].split("?")[0].split("#")[0]
    return "device %s, SMTP %s:%d (%s) as %s, %d sensor(s), %d rule(s)%s" % (
        config["device"],
        smtp["host"],
        smtp["port"],
        smtp["security"],
        user,
        len(config["sensors"]),
        len(config["rules"]),
        ", deep sleep" if config["deep_sleep"]["enabled"] else "",
    )
