// mbedTLS settings for `microsmtp firmware --board UNIX --tls-on-heap`.
//
// The same features as the unix port's own settings, but mbedTLS takes its memory
// from the MicroPython GC heap (MicroPython's bare-metal mbedTLS settings), as it does
// on the Pico W. The heap a virtual board needs then includes the TLS buffers.
#ifndef MICROSMTP_MBEDTLS_CONFIG_GC_HEAP_H
#define MICROSMTP_MBEDTLS_CONFIG_GC_HEAP_H

#define MBEDTLS_CIPHER_MODE_CTR
#define MBEDTLS_TIMING_C

#define MICROPY_MBEDTLS_CONFIG_BARE_METAL (1)
#include "extmod/mbedtls/mbedtls_config_common.h"

// A board has a hardware random source; the unix port reads the operating system's.
#undef MBEDTLS_ENTROPY_HARDWARE_ALT
#undef MBEDTLS_NO_PLATFORM_ENTROPY

#endif
