# Image for UNIX with --stock: MicroPython's unix port (standard variant) plus the
# stand-in hardware modules of the sim (machine, network, ntptime, esp32 and the
# simulated clock), which a board has in ROM. Nothing of firmware/ is frozen, so
# `microsmtp sim --micropython` runs the firmware as the .mpy files that
# `microsmtp deploy` copies onto a board with a stock MicroPython image.
include("$(PORT_DIR)/variants/standard/manifest.py")

for name in ("esp32.py", "machine.py", "network.py", "ntptime.py", "sim_clock.py"):
    module(name, base_path="../../tools/microsmtp_tools/sim_board")
