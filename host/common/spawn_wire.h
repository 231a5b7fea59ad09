/* spawn_wire.h - messages between the host and a pool's spawner.
 *
 * A spawner (host/worker/spawner.c) is a small program the host starts
 * with posix_spawn() (an exec), so that it holds nothing of the host's
 * memory. It takes the pool's user, loads the plugin, and forks the
 * pool's workers on request; the host never loads a plugin itself. Two
 * SOCK_SEQPACKET socketpairs join them, one message per packet, native
 * byte order:
 *
 *   requests (spawner fd 3), each answered before the next is sent:
 *     host -> spawner  SPW_HELLO   who to be, what to load (struct spw_hello
 *                                  then path, pool name, packed settings),
 *                                  with the host's log descriptor (its log
 *                                  file, or its stderr; none for syslog)
 *     spawner -> host  SPW_LOADED  the plugin's identity, task names, and
 *                                  whether it has a check() (i64)
 *                      SPW_FAILED  code (int32) and one line
 *     host -> spawner  SPW_SPAWN   (empty)
 *     spawner -> host  SPW_WORKER  pid (int32) and serial (int64: a pid may
 *                                  be reused before the host read of its
 *                                  exit), with three descriptors: the
 *                                  host's end of the worker's socket, its
 *                                  arena memfd and its pidfd
 *                      SPW_FAILED
 *   events (spawner fd 4), whenever they happen:
 *     spawner -> host  SPW_EXITED  pid and wait status (int32 each) and
 *                                  serial of a worker it reaped
 *
 * A spawner started to check a plugin (probe) exits after its answer to
 * SPW_HELLO. Otherwise it lives until the host closes the request socket,
 * or dies: the parent-death signal ends it with the host, and ends its
 * workers with it.
 */
#ifndef TH_SPAWN_WIRE_H
#define TH_SPAWN_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define SPW_VERSION 3
#define SPW_MAX (128u * 1024) /* bytes of one message, header included */
#define SPW_FD_REQ 3          /* the spawner's descriptors */
#define SPW_FD_EVENTS 4
#define SPW_FD_LOG 5          /* the log file, from SPW_HELLO */

enum spw_type {
    SPW_HELLO = 1,
    SPW_LOADED = 2,
    SPW_FAILED = 3,
    SPW_SPAWN = 4,
    SPW_WORKER = 5,
    SPW_EXITED = 6,
};

struct spw_hello {
    int32_t version;      /* SPW_VERSION */
    int32_t probe;        /* answer, then exit */
    int32_t strict;       /* plugin file permission checks */
    int32_t uid, gid;     /* -1: keep */
    int32_t host_pid;     /* to notice a host gone already */
    int32_t measure_rss;  /* workers report RSS with results */
    int32_t log_kind;     /* log_kind() of the host */
    int32_t log_level;
    int32_t check;        /* after loading, run the plugin's check() on
                             the settings: a refusal answers SPW_FAILED */
    int64_t rlimit_nofile; /* 0: inherit */
    int64_t rlimit_core;   /* -1: inherit */
    uint64_t address_space_limit; /* 0: none */
};

/* A reader over a received message. */
struct spw_reader {
    const char *p, *end;
    int bad; /* set once a read went past the end */
};

/* Appends a 32-bit type and the payload as one message to b (cleared
 * first): the packet spw_send() sends. */
void spw_begin(struct buf *b, uint32_t type);
int spw_put(struct buf *b, const void *data, size_t len);
int spw_put_str(struct buf *b, const char *s);     /* u32 length, bytes */
int spw_put_i64(struct buf *b, int64_t v);

/* Sends the message in b with nfds descriptors (0 to 3). Returns 0 or -1
 * (errno). */
int spw_send(int sock, const struct buf *b, const int *fds, int nfds);

/* Receives one message into b, waiting at most timeout_ms (-1: no limit).
 * Descriptors that came with it are stored into fds (up to *nfds, which
 * is set to how many came; extra ones are closed) with close-on-exec.
 * Returns the type, 0 at EOF, or -1 (errno: ETIMEDOUT, EMSGSIZE, ...). */
int spw_recv(int sock, struct buf *b, int timeout_ms, int *fds, int *nfds);

/* Reading a message's payload (after the type). */
void spw_reader_init(struct spw_reader *r, const struct buf *b);
void spw_get(struct spw_reader *r, void *out, size_t len);
int64_t spw_get_i64(struct spw_reader *r);
/* Returns a malloc()ed copy of a string, or NULL (r->bad set). */
char *spw_get_str(struct spw_reader *r);

#endif /* TH_SPAWN_WIRE_H */
