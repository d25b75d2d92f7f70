# Image for RPI_PICO_W: the board's own manifest from MicroPython, which includes
# the rp2 port's manifest ($(PORT_DIR)/boards/manifest.py: asyncio, drivers) and adds
# the networking bundle (ntptime, mip, requests) and aioble, plus microsmtp. The
# port manifest alone would leave out ntptime, which the alerts need to set the clock.
include("$(BOARD_DIR)/manifest.py")
include("../manifest.py")
