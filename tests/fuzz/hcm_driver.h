/*
 * The connection-manager driver shared by fuzz_http1 and fuzz_h2: one
 * worker (its loop run from the fuzzer's thread, no worker thread), a
 * static snapshot built once from YAML by the real converter and config
 * builder, and per input one accepted connection (one end of a
 * socketpair handed to dp_listener_accept, exactly as a worker's accept
 * callback does).
 *
 * Nothing connects upstream: routes answer directly, redirect, or name
 * clusters that have no endpoints (or do not exist), so the router fails
 * them locally with 503.
 *
 * Input layout: the first byte is a control byte, the next (ctl & 3) bytes
 * cut the rest into chunks written one at a time (each byte a fraction of
 * what remains), and the rest is what the client sends.
 *   ctl & 0x04  connection of the second listener (small limits)
 *   ctl & 0x08  half-close (shutdown SHUT_WR) after the last chunk,
 *               reading the responses to the end, instead of a full close
 *   ctl & 0x10  drain the connection (dp_hcm_drain, as an LDS update or
 *               /drain_listeners does) after the first chunk
 *   ctl & 0x20  fire every armed timer of the connection and its streams
 *               after the last chunk (header, idle, stream, route, drain
 *               timeouts), as if their time had come
 *   ctl & 0x40  give the connection the identity of a verified client
 *               certificate, as TLS would (mTLS filter, XFCC, access log)
 */
#ifndef LEGATE_FUZZ_HCM_DRIVER_H
#define LEGATE_FUZZ_HCM_DRIVER_H

#include <stddef.h>
#include <stdint.h>

/** Builds the config and the worker once (aborts on failure). codec is
 *  "AUTO", "HTTP1" or "HTTP2": the codec_type of the second listener (the
 *  first is always AUTO). */
void fuzz_hcm_init(const char *codec);

/** Runs one input. prefix (may be NULL) is sent before the client's bytes,
 *  in the first chunk (the HTTP/2 connection preface). Every connection is
 *  gone and freed on return. */
void fuzz_hcm_run(const uint8_t *data, size_t size, const char *prefix, size_t prefix_len);

#endif
