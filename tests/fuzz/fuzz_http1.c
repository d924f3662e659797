/*
 * HTTP/1.1 request bytes through the real codec (http-parser and hcm.c's
 * callbacks), the stream logic, the filters (mTLS, router) and the access
 * log, on a connection accepted the way a worker accepts one. See
 * hcm_driver.h for the input layout.
 */
#include <stddef.h>
#include <stdint.h>

#include "hcm_driver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        fuzz_hcm_init("HTTP1");
        ready = 1;
    }
    fuzz_hcm_run(data, size, NULL, 0);
    return 0;
}
