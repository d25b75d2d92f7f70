# Image for UNIX, the virtual board: MicroPython's unix port (standard variant: asyncio,
# ssl and the rest) with the alert firmware frozen in. `microsmtp sim --micropython` and
# `microsmtp bench --micropython` then run the code from ROM, as a board with a firmware
# image does, and measure only what it puts on the heap.
#
# manifest_stock.py adds the stand-in hardware modules of the sim, which a board has in
# ROM. The CA module is not frozen: `microsmtp sim` writes one with its test CA per run.
import os

include("manifest_stock.py")

# Leave out microsmtp/cpython.py, which only CPython imports, as on a board.
microsmtp_files = sorted(f for f in os.listdir("../../firmware/microsmtp") if f.endswith(".py") and f != "cpython.py")
package("microsmtp", files=microsmtp_files, base_path="../../firmware")
package("alerts", base_path="../../firmware")
module("selftest.py", base_path="../../firmware")
