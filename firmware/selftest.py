"""Self-test of what is installed on a board: modules, config.json, sensor drivers and CA roots.

The roots are those of config.json's smtp.ca_file when it names one, else the ca_roots
module. ``import selftest; selftest.run()`` prints one line per check, then
"selftest: N passed, N failed", and returns the number of failed checks. It sends
nothing over the network. ``microsmtp deploy --selftest`` runs it after copying.
"""

import gc
import sys

# Modules that the drivers of these sensor types import, which a board's image may lack.
SENSOR_MODULES = {"dht11": ("dht",), "dht22": ("dht",), "ds18b20": ("onewire", "ds18x20")}
# Used when the package folder cannot be listed (modules frozen into the image).
LIBRARY_MODULES = ("errors", "reply", "session", "auth", "message", "client", "transaction")


class _Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, name, detail=""):
        self.passed += 1
        print("ok    %s%s" % (name, (": " + detail) if detail else ""))

    def fail(self, name, error):
        self.failed += 1
        print("FAIL  %s: %s: %s" % (name, type(error).__name__, error))

    def note(self, name, detail):
        print("skip  %s: %s" % (name, detail))


def _package_modules(package, fallback):
    """Return (module names, listed): listed from the package folder, else ``fallback``."""
    import os

    folder = getattr(package, "__file__", "").rpartition("/")[0]
    try:
        names = os.listdir(folder)
    except (OSError, TypeError):
        return fallback, False
    modules = []
    for name in names:
        for suffix in (".py", ".mpy"):
            if name.endswith(suffix) and name != "__init__" + suffix:
                base = name[: -len(suffix)]
                if base not in modules:
                    modules.append(base)
    modules.sort()
    return modules, True


def _missing(exc, name):
    # "No module named 'x'" on CPython, "no module named 'x'" on MicroPython.
    return "'%s'" % name in str(exc)


def _check_imports(results, package_name, fallback, required):
    try:
        package = __import__(package_name)
    except ImportError as exc:
        if not required and _missing(exc, package_name):
            results.note("import " + package_name, "not installed")
        else:
            results.fail("import " + package_name, exc)
        return None
    except Exception as exc:
        results.fail("import " + package_name, exc)
        return None
    results.ok("import " + package_name)
    modules, listed = _package_modules(package, fallback)
    for name in modules:
        full = package_name + "." + name
        try:
            __import__(full)
        except ImportError as exc:
            # A frozen library older than the fallback list may lack a module.
            if not listed and _missing(exc, full):
                results.note("import " + full, "not present")
            else:
                results.fail("import " + full, exc)
            continue
        except Exception as exc:
            results.fail("import " + full, exc)
            continue
        results.ok("import " + full)
        gc.collect()
    return package


def _check_ca_roots(results):
    try:
        import ca_roots
    except ImportError as exc:
        results.fail("import ca_roots", exc)
        return
    roots = getattr(ca_roots, "ROOTS", None)
    if not isinstance(roots, tuple) or not roots:
        results.fail("ca_roots.ROOTS", ValueError("expected a non-empty tuple of DER bytes"))
        return
    results.ok("import ca_roots", "%d roots" % len(roots))
    _check_roots(results, "ca_roots.ROOTS", roots)


def _check_ca_file(results, path):
    """Check the roots of smtp.ca_file as the firmware loads them, which then ignores ca_roots."""
    try:
        from alerts.sender import load_ca_roots

        roots = load_ca_roots({"smtp": {"ca_file": path}})
    except Exception as exc:
        results.fail("smtp.ca_file " + path, exc)
        return
    results.ok("smtp.ca_file " + path, "%d roots" % len(roots))
    _check_roots(results, path, roots)


def _check_roots(results, label, roots):
    import ssl

    for index, der in enumerate(roots):
        name = "%s[%d]" % (label, index)
        try:
            if not isinstance(der, bytes):
                raise TypeError("expected DER bytes, got %s" % type(der).__name__)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.load_verify_locations(cadata=der)
        except Exception as exc:
            results.fail(name, exc)
        else:
            results.ok(name, "%d bytes, parsed" % len(der))
        context = None
        gc.collect()


def _check_config(results, path):
    """Check config.json; return what it parsed to (None when absent or invalid JSON)."""
    import json

    try:
        with open(path) as file:
            text = file.read()
    except OSError:
        results.note(path, "not present")
        return None
    try:
        config = json.loads(text)
    except ValueError as exc:
        results.fail(path + " parses", exc)
        return None
    results.ok(path + " parses")
    try:
        from alerts import config as config_module
    except ImportError:
        results.note(path + " is valid", "alerts.config is not installed, so only the JSON syntax was checked")
        return config
    load = getattr(config_module, "load", None)
    if load is None:
        results.note(path + " is valid", "alerts.config has no load(), so only the JSON syntax was checked")
        return config
    try:
        # As at boot: with the defaults and limits of board.json.
        load(path)
    except Exception as exc:
        # alerts.config's messages never contain secret values.
        results.fail(path + " is valid", exc)
    else:
        results.ok(path + " is valid")
    return config


def _check_sensor_modules(results, config):
    """Check that the modules of the configured sensor types can be imported."""
    sensors = config.get("sensors")
    kinds = []
    for sensor in sensors if isinstance(sensors, list) else ():
        kind = sensor.get("type") if isinstance(sensor, dict) else None
        if isinstance(kind, str) and kind in SENSOR_MODULES and kind not in kinds:
            kinds.append(kind)
    for kind in kinds:
        for name in SENSOR_MODULES[kind]:
            try:
                __import__(name)
            except Exception as exc:
                # The firmware would log these sensors as unavailable and not read them.
                results.fail("import %s for sensor type %s" % (name, kind), exc)
            else:
                results.ok("import %s for sensor type %s" % (name, kind))


def run(config_path="config.json"):
    """Run every check, print the results and return the number of failed checks."""
    results = _Results()
    print("selftest on %s %s" % (sys.implementation.name, sys.version))
    _check_imports(results, "microsmtp", LIBRARY_MODULES, True)
    _check_imports(results, "alerts", (), False)
    config = _check_config(results, config_path)
    if not isinstance(config, dict):
        config = {}
    _check_sensor_modules(results, config)
    smtp = config.get("smtp")
    ca_file = smtp.get("ca_file") if isinstance(smtp, dict) else None
    config = None
    gc.collect()
    if isinstance(ca_file, str) and ca_file:
        _check_ca_file(results, ca_file)
    else:
        _check_ca_roots(results)
    gc.collect()
    print("selftest: %d passed, %d failed" % (results.passed, results.failed))
    return results.failed
