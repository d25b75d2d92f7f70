# Shared part of the board manifests: freezes the microsmtp library, the alert
# application, the self-test and the CA module into a MicroPython image.
# boards/BOARD/manifest.py includes it; MicroPython's build runs it with this folder
# as the working directory, so relative paths start here.
#
# main.py is deliberately not frozen. MicroPython runs a frozen main.py in preference
# to the file on the board, so a frozen one could not be replaced or disabled without
# reflashing. It stays a small file on the board's file system, copied by
# `microsmtp deploy --frozen` together with config.json.
import os

# microsmtp/cpython.py contains code that only CPython imports, so a board does not need it.
microsmtp_files = sorted(f for f in os.listdir("../firmware/microsmtp") if f.endswith(".py") and f != "cpython.py")
package("microsmtp", files=microsmtp_files, base_path="../firmware")
if os.path.isdir("../firmware/alerts"):
    package("alerts", base_path="../firmware")
module("selftest.py", base_path="../firmware")

# The CA module is generated (`microsmtp certs build`) and never committed.
# MICROSMTP_CA_MODULE names it (`microsmtp firmware` sets it); else build/ca_roots.py.
ca_module = os.path.abspath(os.environ.get("MICROSMTP_CA_MODULE") or "../build/ca_roots.py")
if os.path.basename(ca_module) != "ca_roots.py":
    raise ValueError("the CA module must be named ca_roots.py, not %s" % ca_module)
if not os.path.isfile(ca_module):
    raise ValueError("CA module %s not found: run `microsmtp certs build` or set MICROSMTP_CA_MODULE" % ca_module)
module("ca_roots.py", base_path=os.path.dirname(ca_module))
