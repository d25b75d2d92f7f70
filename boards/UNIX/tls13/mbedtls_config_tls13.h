// mbedTLS settings added for `microsmtp firmware --board UNIX --tls13`.
//
// mbedTLS reads this file after the build's own settings (MBEDTLS_USER_CONFIG_FILE,
// set by micropython.mk in this folder). It adds TLS 1.3 to the unix port's settings
// or to those of --tls-on-heap (mbedtls_config_gc_heap.h), and keeps how each of them
// allocates memory. TLS 1.2 and its key exchanges stay as they are, so the client
// offers both versions and the server picks one.
#ifndef MICROSMTP_MBEDTLS_CONFIG_TLS13_H
#define MICROSMTP_MBEDTLS_CONFIG_TLS13_H

#define MBEDTLS_SSL_PROTO_TLS1_3

// Full handshakes with ECDHE only (the settings have no DHM_C for finite-field groups).
// Without the PSK modes there is no resumption or early data, so no session tickets.
#define MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL_ENABLED

// Middlebox compatibility mode (RFC 8446 D.4): a session ID and ChangeCipherSpec
// records let the handshake through middleboxes that only know TLS 1.2. mbedTLS's own
// default settings enable it too.
#define MBEDTLS_SSL_TLS1_3_COMPATIBILITY_MODE

// mbedTLS 3.6 implements TLS 1.3 only with the peer's certificate kept in the session.
#define MBEDTLS_SSL_KEEP_PEER_CERTIFICATE

// TLS 1.3 derives its keys with HKDF through the PSA crypto API. PSA uses the mbedTLS
// modules enabled above (CTR_DRBG and entropy included) and allocates through
// mbedtls_calloc, so with --tls-on-heap it allocates from the GC heap too. No PSA key
// storage module is enabled, so no key is ever written anywhere.
#define MBEDTLS_PSA_CRYPTO_C
#define MBEDTLS_HKDF_C

// RSA-PSS: a TLS 1.3 server with an RSA certificate signs the handshake with RSA-PSS
// (RFC 8446 4.2.3), and mbedTLS offers RSA-PSS only with X509_RSASSA_PSS_SUPPORT.
// Without it such a server ends the handshake with an alert instead of falling back
// to TLS 1.2.
// NOTE: mbedTLS 3.6.6 offers RSA-PSS in TLS 1.2 too but rejects it there. A server that
// offers only TLS 1.2 and signs with an RSA key picks RSA-PSS (OpenSSL does), so the
// handshake fails.
#define MBEDTLS_PKCS1_V21
#define MBEDTLS_X509_RSASSA_PSS_SUPPORT

#endif
