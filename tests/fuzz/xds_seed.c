/*
 * xds-seed: writes fuzz_xds seeds. Reads a YAML file of DiscoveryResponses
 * (YAML documents separated by "---" lines, resources as Any objects with
 * "@type") through legate's converter and writes their protobuf encodings
 * separated as fuzz_xds expects. Run by tests/fuzz/make-seeds.sh.
 *   xds-seed IN.yaml OUT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "xds/convert.h"

#define SEPARATOR "--xds--"

int main(int argc, char **argv)
{
    char err[1024];
    size_t len;
    if (argc != 3) {
        fprintf(stderr, "usage: xds-seed IN.yaml OUT\n");
        return 2;
    }
    char *text = xds_read_file(argv[1], &len);
    FILE *out = fopen(argv[2], "wb");
    if (text == NULL || out == NULL) {
        perror(text ? argv[2] : argv[1]);
        return 1;
    }
    int n = 0;
    for (char *doc = text; doc; n++) {
        char *next = strstr(doc, "\n---\n");
        if (next) {
            *next = '\0';
            next += 5;
        }
        ProtobufCMessage *m;
        if (xds_convert_text(doc, strlen(doc), &envoy__service__discovery__v3__discovery_response__descriptor, &m,
                             err, sizeof(err)) != 0) {
            fprintf(stderr, "%s: document %d: %s\n", argv[1], n + 1, err);
            free(text);
            fclose(out);
            return 1;
        }
        size_t sz = protobuf_c_message_get_packed_size(m);
        uint8_t *buf = malloc(sz + 1);
        if (buf == NULL)
            abort();
        protobuf_c_message_pack(m, buf);
        if (n)
            fwrite(SEPARATOR, 1, strlen(SEPARATOR), out);
        fwrite(buf, 1, sz, out);
        free(buf);
        protobuf_c_message_free_unpacked(m, NULL);
        doc = next;
    }
    free(text);
    return fclose(out) == 0 ? 0 : 1;
}
