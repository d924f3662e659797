/* xds/httpd.c, the HTTP/1.1 request server both admin APIs share, over a
 * socketpair: a request, keep-alive and pipelining, one request per
 * connection, headers to on_header, bodies and 100-continue, and each kind
 * of bad input with its status. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "xds/httpd.h"

struct pair {
    int client, server;
    struct xds_httpd_conn h;
    char headers[512]; /* what on_header saw, "name=value;" */
    int begun;
};

static void on_begin(struct xds_httpd_conn *c)
{
    struct pair *p = c->data;
    p->begun++;
    p->headers[0] = '\0';
}

static void on_header(struct xds_httpd_conn *c, const char *name, const char *value)
{
    struct pair *p = c->data;
    size_t n = strlen(p->headers);
    snprintf(p->headers + n, sizeof(p->headers) - n, "%s=%s;", name, value ? value : "(long)");
}

static const struct xds_httpd_opts keep = {
    .url_max = 64, .body_max = 16, .in_max = 4096, .keep_alive = 1, .on_begin = on_begin, .on_header = on_header};
static const struct xds_httpd_opts once = {.url_max = 64, .body_max = 0, .in_max = 4096, .keep_alive = 0};

static struct pair *pair_new(const struct xds_httpd_opts *o)
{
    struct pair *p = calloc(1, sizeof(*p));
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    p->client = sv[0];
    p->server = sv[1];
    xds_httpd_init(&p->h, p->server, o, p);
    return p;
}

static void pair_free(struct pair *p)
{
    xds_httpd_free(&p->h);
    close(p->client);
    close(p->server);
    free(p);
}

static void say(struct pair *p, const char *s)
{
    assert_int_equal(write(p->client, s, strlen(s)), (ssize_t)strlen(s));
}

/* What the server has written so far. */
static const char *heard(struct pair *p)
{
    static char buf[8192];
    fcntl(p->client, F_SETFL, O_NONBLOCK);
    ssize_t n = read(p->client, buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static void answer(struct pair *p, const char *body)
{
    xds_httpd_respond(&p->h, 200, "text/plain", "x-a: b\r\n", body, strlen(body));
}

static void test_request_and_keep_alive(void **state)
{
    struct pair *p = pair_new(&keep);
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_AGAIN);
    say(p, "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n");
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_REQUEST);
    assert_int_equal(p->h.method, HTTP_GET);
    assert_string_equal(p->h.url, "/a?b=1");
    assert_int_equal(xds_httpd_error(&p->h), XDS_HTTPD_E_NONE);
    assert_string_equal(p->headers, "Host=x;Authorization=Bearer t;");
    answer(p, "hi\n");
    assert_true(xds_httpd_want_write(&p->h));
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_AGAIN);
    assert_false(xds_httpd_want_write(&p->h));
    assert_string_equal(heard(p), "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n"
                                  "connection: keep-alive\r\nx-a: b\r\n\r\nhi\n");

    /* Two pipelined: answered in order, the second's headers its own. */
    say(p, "GET /1 HTTP/1.1\r\nA: 1\r\n\r\nDELETE /2 HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_REQUEST);
    assert_string_equal(p->h.url, "/1");
    assert_string_equal(p->headers, "A=1;");
    answer(p, "one");
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_REQUEST);
    assert_int_equal(p->h.method, HTTP_DELETE);
    assert_string_equal(p->h.url, "/2");
    assert_string_equal(p->headers, "Connection=close;");
    answer(p, "two");
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_CLOSE);
    const char *out = heard(p);
    assert_non_null(strstr(out, "keep-alive\r\nx-a: b\r\n\r\noneHTTP/1.1 200 OK"));
    assert_non_null(strstr(out, "connection: close\r\nx-a: b\r\n\r\ntwo"));
    assert_int_equal(p->begun, 3);
    pair_free(p);
}

static void test_one_request_per_connection(void **state)
{
    struct pair *p = pair_new(&once);
    say(p, "POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /y HTTP/1.1\r\n\r\n");
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_REQUEST);
    assert_string_equal(p->h.url, "/x");
    assert_int_equal(p->h.body.len, 0); /* body_max 0: read and dropped */
    answer(p, "");
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_CLOSE);
    assert_non_null(strstr(heard(p), "connection: close\r\n"));
    pair_free(p);
}

static void test_body_and_continue(void **state)
{
    struct pair *p = pair_new(&keep);
    say(p, "PUT /b HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_AGAIN);
    assert_string_equal(heard(p), "HTTP/1.1 100 Continue\r\n\r\n");
    say(p, "wxyz");
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_REQUEST);
    assert_int_equal(p->h.body.len, 4);
    assert_memory_equal(p->h.body.p, "wxyz", 4);
    answer(p, "");
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_AGAIN);
    /* Answered: the body is wiped (it may hold a key). */
    assert_memory_equal(p->h.body.p, "\0\0\0\0", 4);

    /* Over body_max: no 100, and 413 at once. */
    say(p, "PUT /b HTTP/1.1\r\nContent-Length: 17\r\nExpect: 100-continue\r\n\r\n");
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_AGAIN);
    say(p, "0123456789abcdefg");
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_REQUEST);
    assert_int_equal(xds_httpd_error(&p->h), XDS_HTTPD_E_BODY);
    assert_int_equal(xds_httpd_error_status(&p->h), 413);
    xds_httpd_respond(&p->h, 413, "text/plain", NULL, "", 0);
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_CLOSE);
    const char *out = heard(p);
    assert_null(strstr(out, "100 Continue"));
    assert_non_null(strstr(out, "HTTP/1.1 413 Payload Too Large\r\n"));
    assert_non_null(strstr(out, "connection: close\r\n"));
    pair_free(p);
}

static void expect_error(const char *req, enum xds_httpd_error e, int status)
{
    struct pair *p = pair_new(&keep);
    say(p, req);
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_REQUEST);
    assert_int_equal(xds_httpd_error(&p->h), e);
    assert_int_equal(xds_httpd_error_status(&p->h), status);
    xds_httpd_respond(&p->h, status, "text/plain", NULL, "", 0);
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_CLOSE);
    char line[64];
    snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status, xds_httpd_reason(status));
    assert_non_null(strstr(heard(p), line));
    pair_free(p);
}

static void test_bad_input(void **state)
{
    expect_error("BLAH / HTTP/1.1\r\n\r\n", XDS_HTTPD_E_SYNTAX, 400);
    char req[256];
    snprintf(req, sizeof(req), "GET /%065d HTTP/1.1\r\n\r\n", 0);
    expect_error(req, XDS_HTTPD_E_URL, 414);

    /* A header section over http_parser's 80 KiB. */
    size_t n = 90 * 1024;
    char *big = malloc(n + 64);
    int k = snprintf(big, n + 64, "GET / HTTP/1.1\r\nX: ");
    memset(big + k, 'b', n);
    strcpy(big + k + n, "\r\n\r\n");
    struct pair *p = pair_new(&(struct xds_httpd_opts){.url_max = 64, .in_max = 1 << 20, .keep_alive = 1});
    fcntl(p->client, F_SETFL, O_NONBLOCK);
    size_t off = 0, len = strlen(big);
    int ev = XDS_HTTPD_AGAIN;
    while (ev == XDS_HTTPD_AGAIN && off < len) {
        ssize_t w = write(p->client, big + off, len - off);
        if (w > 0)
            off += (size_t)w;
        ev = xds_httpd_io(&p->h);
    }
    assert_int_equal(ev, XDS_HTTPD_REQUEST);
    assert_int_equal(xds_httpd_error(&p->h), XDS_HTTPD_E_HEADERS);
    assert_int_equal(xds_httpd_error_status(&p->h), 431);
    assert_string_equal(xds_httpd_reason(431), "Request Header Fields Too Large");
    pair_free(p);
    free(big);
}

static void test_long_header_value(void **state)
{
    struct pair *p = pair_new(&keep);
    char req[2200];
    int k = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nAuthorization: ");
    memset(req + k, 't', 1500);
    strcpy(req + k + 1500, "\r\nB: c\r\n\r\n");
    say(p, req);
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_REQUEST);
    assert_string_equal(p->headers, "Authorization=(long);B=c;");
    pair_free(p);
}

static void test_peer_closes(void **state)
{
    struct pair *p = pair_new(&keep);
    say(p, "GET / HTT");
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_AGAIN);
    shutdown(p->client, SHUT_WR);
    assert_int_equal(xds_httpd_io(&p->h), XDS_HTTPD_CLOSE);
    pair_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_and_keep_alive),
        cmocka_unit_test(test_one_request_per_connection),
        cmocka_unit_test(test_body_and_continue),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_long_header_value),
        cmocka_unit_test(test_peer_closes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
