/*
 * A small HTTP/1.1 request server, the protocol half: requests parsed with
 * http_parser under size limits, keep-alive and pipelining (answered in
 * order, one at a time), responses queued and written. Shared by the data
 * plane's admin listener (libev) and legate-control's management API
 * (poll): each keeps its own accept, event loop and timeouts, and calls
 * xds_httpd_io whenever the connection's socket is ready for what
 * xds_httpd_want_write says it waits for.
 *
 * Bad input becomes a request with an error (xds_httpd_error) that the
 * server answers like any other, after which the connection closes; the
 * status that fits it is xds_httpd_error_status's.
 */
#ifndef LEGATE_XDS_HTTPD_H
#define LEGATE_XDS_HTTPD_H

#include <http_parser.h>
#include <stddef.h>

#include "xds/json.h"

/** The longest request target a connection can hold is one byte less. */
#define XDS_HTTPD_URL_CAP 2048
/** Header names this long or longer are not passed to on_header. */
#define XDS_HTTPD_NAME_CAP 32
/** Header values this long or longer are passed to on_header as NULL. */
#define XDS_HTTPD_VALUE_CAP 1024

enum xds_httpd_error {
    XDS_HTTPD_E_NONE = 0,
    XDS_HTTPD_E_SYNTAX,  /* not HTTP/1.x: 400 */
    XDS_HTTPD_E_URL,     /* request target over url_max: 414 */
    XDS_HTTPD_E_HEADERS, /* header section over http_parser's limit (80 KiB): 431 */
    XDS_HTTPD_E_BODY,    /* body over body_max: 413 */
};

/** What xds_httpd_io asks of the server. */
enum xds_httpd_event {
    XDS_HTTPD_AGAIN,   /* wait for the socket (xds_httpd_want_write says which way) */
    XDS_HTTPD_REQUEST, /* a request is in (or a bad one, xds_httpd_error): answer it with
                          xds_httpd_respond, then call xds_httpd_io again */
    XDS_HTTPD_CLOSE,   /* the peer went away, a socket error, or the last response is out:
                          xds_httpd_free and close the socket */
};

struct xds_httpd_conn;

/** A server's settings, borrowed for the life of its connections. */
struct xds_httpd_opts {
    /** Longest request target (< XDS_HTTPD_URL_CAP). A longer one is read to
     *  the end of its request, which then comes with XDS_HTTPD_E_URL. */
    size_t url_max;
    /** Body bytes kept in c->body; more is XDS_HTTPD_E_BODY at once. 0: the
     *  server takes no bodies: they are read and dropped, and "Expect:
     *  100-continue" is not answered. */
    size_t body_max;
    /** Bytes received and not parsed yet (pipelined requests behind one
     *  being answered); past it the connection is closed. */
    size_t in_max;
    /** 0: one request per connection, every response "connection: close". */
    int keep_alive;
    /** Optional: a request begins (clear what on_header gathered). */
    void (*on_begin)(struct xds_httpd_conn *c);
    /** Optional: a request header; value NULL when it is longer than
     *  XDS_HTTPD_VALUE_CAP - 1 bytes. Names too long are skipped. */
    void (*on_header)(struct xds_httpd_conn *c, const char *name, const char *value);
};

/**
 * One connection. The request being answered is in method, url and body;
 * the rest is the parser's and the writer's.
 */
struct xds_httpd_conn {
    int fd;
    void *data; /* the server's */
    const struct xds_httpd_opts *opts;
    /* the request (valid from XDS_HTTPD_REQUEST until the next xds_httpd_io) */
    enum http_method method;
    char url[XDS_HTTPD_URL_CAP];
    size_t url_len;
    struct xds_sb body; /* wiped once answered: it may hold keys */
    enum xds_httpd_error error;
    /* private */
    http_parser parser;
    unsigned flags; /* HTTPD_F_* in httpd.c */
    char hname[XDS_HTTPD_NAME_CAP];
    size_t hname_len;
    char hval[XDS_HTTPD_VALUE_CAP];
    size_t hval_len;
    char *in; /* received and not parsed yet */
    size_t in_len, in_off;
    char *out; /* the response being written; NULL when none */
    size_t out_len, out_off;
};

/** Sets up c for the accepted, non-blocking socket fd (not owned). */
void xds_httpd_init(struct xds_httpd_conn *c, int fd, const struct xds_httpd_opts *opts, void *data);

/** Frees what c holds, body wiped first. The socket is the caller's. */
void xds_httpd_free(struct xds_httpd_conn *c);

/**
 * Makes progress: writes what is queued, then parses what is buffered, then
 * reads. Returns an XDS_HTTPD_* event; after XDS_HTTPD_REQUEST the server
 * must queue a response before it calls again.
 */
int xds_httpd_io(struct xds_httpd_conn *c);

/** 1 while a response is being written (wait for writable), else 0
 *  (wait for readable). */
int xds_httpd_want_write(const struct xds_httpd_conn *c);

/** What is wrong with the request (XDS_HTTPD_E_NONE when nothing). */
enum xds_httpd_error xds_httpd_error(const struct xds_httpd_conn *c);

/** The status for c's error: 400, 414, 431 or 413. */
int xds_httpd_error_status(const struct xds_httpd_conn *c);

/** The parser's words for a syntax error ("invalid HTTP method", ...). */
const char *xds_httpd_error_text(const struct xds_httpd_conn *c);

/** The reason phrase of status ("Not Found"); "Internal Server Error" for
 *  one it does not know. */
const char *xds_httpd_reason(int status);

/**
 * Queues the response to the current request: the status line, content-type,
 * content-length, connection (close or keep-alive, as the request and
 * opts->keep_alive allow), then headers as given (lines ending in CRLF, or
 * NULL), an empty line and len bytes of body (copied). One response per
 * request.
 */
void xds_httpd_respond(struct xds_httpd_conn *c, int status, const char *content_type,
                       const char *headers, const void *body, size_t len);

#endif
