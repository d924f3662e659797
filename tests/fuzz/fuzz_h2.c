/*
 * HTTP/2 frames through the real nghttp2 server session and hcm.c's
 * callbacks (prior-knowledge h2c: the driver sends the client connection
 * preface, the input is the frames that follow), then the same stream
 * logic, filters and access log as HTTP/1. The first listener detects the
 * preface (codec AUTO), the second is HTTP2-only with three concurrent
 * streams and minimal windows. See hcm_driver.h for the input layout.
 */
#include <stddef.h>
#include <stdint.h>

#include "hcm_driver.h"

#define PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        fuzz_hcm_init("HTTP2");
        ready = 1;
    }
    fuzz_hcm_run(data, size, PREFACE, sizeof(PREFACE) - 1);
    return 0;
}
