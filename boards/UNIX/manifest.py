# Image for UNIX, the virtual board: MicroPython's unix port (standard variant: asyncio,
# ssl and the rest) with the alert firmware frozen in, so that `microsmtp sim
# --micropython` and `microsmtp bench --micropython` run the code from ROM, as a board
# with a firmware image does, and measure only what it puts on the heap.
#
# The stand-in hardware modules of the sim (machine, network, ntptime, esp32 and the
# simulated clock) are frozen too, because a board has its own in ROM. The CA module is
# not: `microsmtp sim` writes one with its test CA for each run.
include("$(PORT_DIR)/variants/standard/manifest.py")

package("microsmtp", base_path="../../firmware")
package("alerts", base_path="../../firmware")
module("selftest.py", base_path="../../firmware")
for name in ("esp32.py", "machine.py", "network.py", "ntptime.py", "sim_clock.py"):
    module(name, base_path="../../tools/microsmtp_tools/sim_board")
