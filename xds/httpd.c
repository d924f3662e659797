#include "httpd.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>

#define HTTPD_F_COMPLETE 0x1   /* a whole request is in: answer it */
#define HTTPD_F_URL_LONG 0x2   /* the URL did not fit */
#define HTTPD_F_HDR_LONG 0x4   /* the header value being read did not fit */
#define HTTPD_F_BODY_LARGE 0x8 /* over body_max */
#define HTTPD_F_CONTINUE 0x10  /* Expect: 100-continue */
#define HTTPD_F_CLOSE 0x20     /* close once the response is out */
#define HTTPD_F_NAME_LONG 0x40 /* a header name not passed on */
#define HTTPD_F_VALUE 0x80     /* reading a header value */
#define HTTPD_F_ANSWERING 0x100 /* the request was handed to the server */

const char *xds_httpd_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
    }
}

/* ---- parsing ------------------------------------------------------------------ */

static void header_done(struct xds_httpd_conn *c)
{
    if (c->hname_len > 0 && !(c->flags & HTTPD_F_NAME_LONG)) {
        c->hname[c->hname_len] = '\0';
        c->hval[c->hval_len] = '\0';
        const char *value = (c->flags & HTTPD_F_HDR_LONG) ? NULL : c->hval;
        if (value && strcasecmp(c->hname, "expect") == 0 && strcasecmp(value, "100-continue") == 0)
            c->flags |= HTTPD_F_CONTINUE;
        if (c->opts->on_header)
            c->opts->on_header(c, c->hname, value);
    }
    c->flags &= ~(unsigned)(HTTPD_F_NAME_LONG | HTTPD_F_HDR_LONG | HTTPD_F_VALUE);
    c->hname_len = c->hval_len = 0;
}

static int on_message_begin(http_parser *p)
{
    struct xds_httpd_conn *c = p->data;
    c->url_len = 0;
    c->url[0] = '\0';
    c->hname_len = c->hval_len = 0;
    c->flags &= HTTPD_F_CLOSE;
    c->body.len = 0;
    c->error = XDS_HTTPD_E_NONE;
    if (c->opts->on_begin)
        c->opts->on_begin(c);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct xds_httpd_conn *c = p->data;
    size_t max = c->opts->url_max < sizeof(c->url) ? c->opts->url_max : sizeof(c->url) - 1;
    if (c->url_len + len > max) {
        /* Read on to the end of the request, so that the answer does not
         * race a client still sending it. */
        c->flags |= HTTPD_F_URL_LONG;
        return 0;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = '\0';
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct xds_httpd_conn *c = p->data;
    if (c->flags & HTTPD_F_VALUE)
        header_done(c);
    if (c->hname_len + len >= sizeof(c->hname)) {
        c->flags |= HTTPD_F_NAME_LONG;
        return 0;
    }
    memcpy(c->hname + c->hname_len, at, len);
    c->hname_len += len;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct xds_httpd_conn *c = p->data;
    c->flags |= HTTPD_F_VALUE;
    if (c->hval_len + len >= sizeof(c->hval)) {
        c->flags |= HTTPD_F_HDR_LONG;
        return 0;
    }
    memcpy(c->hval + c->hval_len, at, len);
    c->hval_len += len;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct xds_httpd_conn *c = p->data;
    header_done(c);
    if ((c->flags & HTTPD_F_CONTINUE) && c->opts->body_max > 0 && p->content_length != ULLONG_MAX &&
        p->content_length <= c->opts->body_max) {
        /* curl waits a second for this before it sends a body. */
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        ssize_t n = send(c->fd, cont, sizeof(cont) - 1, MSG_NOSIGNAL);
        (void)n;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct xds_httpd_conn *c = p->data;
    if (c->opts->body_max == 0)
        return 0;
    if (c->body.len + len > c->opts->body_max) {
        c->flags |= HTTPD_F_BODY_LARGE;
        return 1;
    }
    xds_sb_add(&c->body, at, len);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct xds_httpd_conn *c = p->data;
    c->flags |= HTTPD_F_COMPLETE;
    if (!http_should_keep_alive(p))
        c->flags |= HTTPD_F_CLOSE;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Parses what is buffered. Returns 1 when a request (good or bad) is ready
 * to be answered, 0 when more input is needed. */
static int parse(struct xds_httpd_conn *c)
{
    while (c->in_off < c->in_len) {
        size_t n = http_parser_execute(&c->parser, &settings, c->in + c->in_off, c->in_len - c->in_off);
        c->in_off += n;
        if (c->flags & HTTPD_F_COMPLETE) {
            if (c->flags & HTTPD_F_URL_LONG) {
                c->error = XDS_HTTPD_E_URL;
                c->flags |= HTTPD_F_CLOSE;
            }
            break;
        }
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e != HPE_OK || n == 0) {
            /* The parser stops here for good: answer, then close. */
            c->error = (c->flags & HTTPD_F_BODY_LARGE) ? XDS_HTTPD_E_BODY
                       : e == HPE_HEADER_OVERFLOW      ? XDS_HTTPD_E_HEADERS
                                                       : XDS_HTTPD_E_SYNTAX;
            c->flags |= HTTPD_F_COMPLETE | HTTPD_F_CLOSE;
            break;
        }
    }
    if (c->in_off == c->in_len)
        c->in_off = c->in_len = 0;
    if (!(c->flags & HTTPD_F_COMPLETE))
        return 0;
    c->method = (enum http_method)c->parser.method;
    c->flags |= HTTPD_F_ANSWERING;
    return 1;
}

/* ---- the connection --------------------------------------------------------------- */

void xds_httpd_init(struct xds_httpd_conn *c, int fd, const struct xds_httpd_opts *opts, void *data)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->opts = opts;
    c->data = data;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (!opts->keep_alive)
        c->flags |= HTTPD_F_CLOSE;
}

static void wipe_body(struct xds_httpd_conn *c)
{
    if (c->body.p)
        explicit_bzero(c->body.p, c->body.len);
}

void xds_httpd_free(struct xds_httpd_conn *c)
{
    wipe_body(c);
    free(c->body.p);
    free(c->in);
    free(c->out);
    c->body.p = c->in = c->out = NULL;
}

int xds_httpd_want_write(const struct xds_httpd_conn *c)
{
    return c->out != NULL;
}

enum xds_httpd_error xds_httpd_error(const struct xds_httpd_conn *c)
{
    return c->error;
}

int xds_httpd_error_status(const struct xds_httpd_conn *c)
{
    switch (c->error) {
    case XDS_HTTPD_E_URL: return 414;
    case XDS_HTTPD_E_HEADERS: return 431;
    case XDS_HTTPD_E_BODY: return 413;
    default: return 400;
    }
}

const char *xds_httpd_error_text(const struct xds_httpd_conn *c)
{
    return http_errno_description(HTTP_PARSER_ERRNO(&c->parser));
}

void xds_httpd_respond(struct xds_httpd_conn *c, int status, const char *content_type,
                       const char *headers, const void *body, size_t len)
{
    if (c->out != NULL)
        return; /* one response per request */
    struct xds_sb r = {0};
    xds_sb_addf(&r, "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\nconnection: %s\r\n%s\r\n",
                status, xds_httpd_reason(status), content_type, len,
                (c->flags & HTTPD_F_CLOSE) ? "close" : "keep-alive", headers ? headers : "");
    if (len)
        xds_sb_add(&r, body, len);
    c->out = r.p;
    c->out_len = r.len;
    c->out_off = 0;
}

/* Sends what can go now. Returns 1 when all of it is out, 0 when the socket
 * is full, -1 on an error. */
static int flush(struct xds_httpd_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n <= 0)
            return -1;
        c->out_off += (size_t)n;
    }
    return 1;
}

int xds_httpd_io(struct xds_httpd_conn *c)
{
    if (c->flags & HTTPD_F_ANSWERING) {
        /* The server has had the request: its body is no longer needed. */
        c->flags &= ~(unsigned)HTTPD_F_ANSWERING;
        wipe_body(c);
        if (c->out == NULL)
            return XDS_HTTPD_CLOSE; /* unanswered: nothing sane to send */
    }
    if (c->out) {
        int rc = flush(c);
        if (rc < 0)
            return XDS_HTTPD_CLOSE;
        if (rc == 0)
            return XDS_HTTPD_AGAIN;
        free(c->out);
        c->out = NULL;
        if (c->flags & HTTPD_F_CLOSE)
            return XDS_HTTPD_CLOSE;
        c->flags &= ~(unsigned)HTTPD_F_COMPLETE;
        http_parser_pause(&c->parser, 0);
    }
    for (;;) {
        if (parse(c))
            return XDS_HTTPD_REQUEST;
        char buf[16384];
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return XDS_HTTPD_AGAIN;
        if (n <= 0)
            return XDS_HTTPD_CLOSE;
        if (c->in_len + (size_t)n > c->opts->in_max)
            return XDS_HTTPD_CLOSE;
        char *in = realloc(c->in, c->in_len + (size_t)n);
        if (in == NULL)
            return XDS_HTTPD_CLOSE;
        c->in = in;
        memcpy(c->in + c->in_len, buf, (size_t)n);
        c->in_len += (size_t)n;
    }
}
