/* http.h - the daemon's optional HTTP endpoint: Prometheus metrics, a
 * health check, the stats as JSON and a live status page.
 *
 *   GET /         the status page (self-contained HTML, no data in it)
 *   GET /metrics  Prometheus text exposition
 *   GET /status   the stats as JSON (as `taskhostctl stats --json`)
 *   GET /healthz  200 "ok", or 503 and why (a pool failed or backs off)
 *
 * Read-only: nothing over HTTP changes the daemon. With a token
 * (http.auth_token_file), /metrics, /status and /healthz want the header
 * "Authorization: Bearer TOKEN"; the page itself holds no data and asks
 * for the token in the browser.
 *
 * libmicrohttpd serves it from the engine's own loop: its epoll descriptor
 * is a th_watch, its timeouts a th_timer; no thread is started. The time
 * it takes is bounded to a small share of the loop, so that no client of
 * it can slow down task traffic.
 */
#ifndef TH_HTTP_H
#define TH_HTTP_H

#include <stddef.h>

#include "taskhost_host.h"

struct http_cfg;

/* Binds cfg->listen and serves it from host's loop, until http_close().
 * Without cfg->listen, does nothing and returns 0. Logs the address as
 * bound ("http: listening on http://127.0.0.1:41234/"). Returns 0, or a
 * negative code with one line in err. */
int http_open(th_host *host, const struct http_cfg *cfg, char *err,
              size_t errlen);

/* Takes the token of a reloaded config; the address stays until a
 * restart (a change is logged). */
void http_reload(const struct http_cfg *cfg);

/* Closes every connection and the listening socket (a unix socket file is
 * removed). Before th_host_close(). Safe when not open. */
void http_close(void);

/* The text of the status page (status_html.c, made from status.html). */
extern const char http_status_html[];

#endif /* TH_HTTP_H */
