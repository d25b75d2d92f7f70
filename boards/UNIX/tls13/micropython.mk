# TLS 1.3 for the virtual board: `microsmtp firmware --board UNIX --tls13` passes this
# folder to MicroPython's build as USER_C_MODULES. It adds no Python module. It
# compiles the mbedTLS sources that MicroPython's extmod/extmod.mk leaves out (the
# TLS 1.3 state machines, HKDF and the PSA crypto layer that TLS 1.3 runs on), and it
# adds mbedtls_config_tls13.h to the mbedTLS settings of the build, which are the unix
# port's own or those of --tls-on-heap.
MICROSMTP_MBEDTLS_LIBRARY := lib/mbedtls/library
MICROSMTP_TLS13_SOURCES := \
	$(notdir $(wildcard $(TOP)/$(MICROSMTP_MBEDTLS_LIBRARY)/ssl_tls13_*.c)) \
	$(notdir $(wildcard $(TOP)/$(MICROSMTP_MBEDTLS_LIBRARY)/psa_*.c)) \
	hkdf.c

# Paths relative to the MicroPython tree, as extmod.mk gives the other mbedTLS
# sources, so their objects land in BUILD/lib/mbedtls/library/ next to the rest.
SRC_USERMOD_LIB_C += $(addprefix $(MICROSMTP_MBEDTLS_LIBRARY)/,$(MICROSMTP_TLS13_SOURCES))

# mbedTLS reads MBEDTLS_USER_CONFIG_FILE after MBEDTLS_CONFIG_FILE (build_info.h).
CFLAGS_USERMOD += -DMBEDTLS_USER_CONFIG_FILE=\"$(USERMOD_DIR)/mbedtls_config_tls13.h\"
