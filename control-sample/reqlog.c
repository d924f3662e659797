#include "reqlog.h"

#include <string.h>

/* A JSON string literal. Bytes of 0x80 and above pass through: names and
 * URLs are UTF-8 on the wire. */
static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

void cp_reqlog_write(FILE *f, const char *node,
                     const Envoy__Service__Discovery__V3__DiscoveryRequest *req)
{
    fputs("{\"node\":", f);
    json_string(f, node);
    fputs(",\"type_url\":", f);
    json_string(f, req->type_url);
    fputs(",\"version_info\":", f);
    json_string(f, req->version_info);
    fputs(",\"response_nonce\":", f);
    json_string(f, req->response_nonce);
    fputs(",\"resource_names\":[", f);
    for (size_t i = 0; i < req->n_resource_names; i++) {
        if (i)
            fputc(',', f);
        json_string(f, req->resource_names[i]);
    }
    fputs("],\"error_detail\":", f);
    json_string(f, req->error_detail ? req->error_detail->message : "");
    fputs("}\n", f);
    fflush(f);
}
