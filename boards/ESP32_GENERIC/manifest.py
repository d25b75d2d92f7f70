# Image for ESP32_GENERIC: the esp32 port's own manifest (asyncio, networking
# packages such as ntptime and mip) plus microsmtp. ESP32_GENERIC has no board
# manifest of its own, so the port's is the one its official image uses.
include("$(PORT_DIR)/boards/manifest.py")
include("../manifest.py")
