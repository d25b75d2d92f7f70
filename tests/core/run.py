"""Run the core tests without pytest, under MicroPython or CPython.

Usage::

    micropython tests/core/run.py [-v] [MODULE ...]
    python3 tests/core/run.py [-v] [MODULE ...]

MODULE is a module name from tests/core (``test_reply``), its file name
(``test_reply.py``) or the path to any test file; with no MODULE every
tests/core/test_*.py runs. Every top-level function whose name starts with
``test_`` is called without arguments and passes when it returns None without
raising. A failure prints the test name and the traceback. The last line is
``N passed, N failed``, and the exit status is 1 when a test failed, a module
did not import, or no test ran.

The runner puts firmware/ and tests/core/ on sys.path itself, relative to this
file, so MICROPYPATH need not be set.
"""

import gc
import os
import sys


def normalize_path(path):
    """Return an absolute path with "." and ".." segments resolved.

    MicroPython has no os.path, so this works on strings alone.
    """
    if not path.startswith("/"):
        path = os.getcwd() + "/" + path
    parts = []
    for part in path.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def split_path(path):
    """Split a path into (directory, file name); the directory is "" when absent."""
    index = path.rfind("/")
    if index < 0:
        return "", path
    return path[:index], path[index + 1 :]


CORE_DIR = split_path(normalize_path(__file__))[0]
REPO_DIR = split_path(split_path(CORE_DIR)[0])[0]
FIRMWARE_DIR = REPO_DIR + "/firmware"


def add_to_sys_path(directory):
    if directory not in sys.path:
        sys.path.insert(0, directory)


def list_directory(directory):
    if hasattr(os, "ilistdir"):
        return [entry[0] for entry in os.ilistdir(directory)]
    return os.listdir(directory)


def discover_modules():
    names = []
    for filename in list_directory(CORE_DIR):
        if filename.startswith("test_") and filename.endswith(".py"):
            names.append(filename[:-3])
    names.sort()
    return names


def module_name_from_argument(argument):
    """Turn a module name, file name or path into an importable module name.

    A path outside tests/core adds its directory to sys.path.
    """
    directory, name = split_path(argument)
    if name.endswith(".py"):
        name = name[:-3]
    if directory:
        add_to_sys_path(normalize_path(directory))
    return name


def print_traceback(exc):
    if hasattr(sys, "print_exception"):
        sys.print_exception(exc, sys.stdout)
    else:
        import traceback

        traceback.print_exception(exc, file=sys.stdout)


def collect_tests(module):
    """Return the sorted (name, function) pairs of the module's test functions."""
    tests = []
    for name in dir(module):
        if not name.startswith("test_"):
            continue
        value = getattr(module, name)
        if callable(value) and not isinstance(value, type):
            tests.append((name, value))
    tests.sort(key=lambda pair: pair[0])
    return tests


def run_module(module_name, verbose):
    """Import one module and run its tests; return (passed, failed)."""
    passed = 0
    failed = 0
    try:
        module = __import__(module_name)
    except Exception as exc:
        print("ERROR %s: import failed" % module_name)
        print_traceback(exc)
        return 0, 1

    for test_name, test in collect_tests(module):
        full_name = "%s.%s" % (module_name, test_name)
        # MicroPython's collector is conservative, so a collection deep inside a test may
        # keep garbage that stale stack slots point to. One here, where the stack is
        # shallow, frees it. Without it a test that needed a 2 KB block failed when all
        # modules ran in one process at 512K. With 364 tests, that run needs 560K, with
        # about 270 KB free in blocks too small for the fake server's 2 KB buffers.
        gc.collect()
        try:
            result = test()
        except Exception as exc:
            failed += 1
            print("FAIL %s" % full_name)
            print_traceback(exc)
            continue
        if result is not None:
            # An `async def` test or one containing `yield` returns without running its body.
            if hasattr(result, "close"):
                result.close()
            failed += 1
            print(
                "FAIL %s: returned %r, expected None (async or generator test?)"
                % (full_name, result)
            )
            continue
        passed += 1
        if verbose:
            print("ok   %s" % full_name)

    # Free the module before the next one; MicroPython runs with a small fixed heap.
    if module_name in sys.modules:
        del sys.modules[module_name]
    module = None
    gc.collect()
    return passed, failed


def main(arguments):
    verbose = False
    requested = []
    for argument in arguments:
        if argument in ("-v", "--verbose"):
            verbose = True
        elif argument in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            requested.append(argument)

    add_to_sys_path(CORE_DIR)
    add_to_sys_path(FIRMWARE_DIR)

    if requested:
        module_names = [module_name_from_argument(argument) for argument in requested]
    else:
        module_names = discover_modules()

    passed = 0
    failed = 0
    for module_name in module_names:
        module_passed, module_failed = run_module(module_name, verbose)
        passed += module_passed
        failed += module_failed

    if passed + failed == 0:
        print("no tests found in: %s" % (", ".join(module_names) or CORE_DIR))
    print("%d passed, %d failed" % (passed, failed))
    if failed or passed == 0:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
