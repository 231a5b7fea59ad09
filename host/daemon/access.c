/* access.c - who may use taskhostd and who may administer it (daemon
 * layer): peer credentials against the uid and gid lists of the running
 * config, checked on every request.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "session.h"
#include <sys/socket.h>

static int id_in(const struct id_list *l, unsigned id)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->ids[i] == id)
            return 1;
    return 0;
}

/* Reads the peer's supplementary groups (as at connect time) into c:
 * `usermod -aG taskhost alice` is how a user joins a group, and
 * SO_PEERCRED carries only the primary one. Returns 0 or -1 (errno). */
int access_peer_groups(struct session *c)
{
    socklen_t len = 0;

    if (getsockopt(c->io.fd, SOL_SOCKET, SO_PEERGROUPS, NULL, &len) == -1 &&
        errno != ERANGE)
        return -1;
    if (len == 0)
        return 0;
    c->groups = malloc(len);
    if (c->groups == NULL)
        return -1;
    if (getsockopt(c->io.fd, SOL_SOCKET, SO_PEERGROUPS, c->groups, &len) == -1)
        return -1;
    c->ngroups = len / sizeof *c->groups;
    return 0;
}

/* Whether connection c is in the uid/gid lists, by its uid, its primary
 * group or a supplementary one; empty lists mean the daemon's own uid and
 * root. */
static int peer_allowed(const struct id_list *uids, const struct id_list *gids,
                        const struct session *c)
{
    if (uids->n == 0 && gids->n == 0)
        return c->uid == 0 || c->uid == geteuid();
    if (id_in(uids, c->uid) || id_in(gids, c->gid))
        return 1;
    for (size_t i = 0; i < c->ngroups; i++)
        if (id_in(gids, c->groups[i]))
            return 1;
    return 0;
}

/* Rights are looked up on every request, against the lists of the config
 * running now: a reload that takes a user out of them takes effect on
 * that user's open connections too. */
int access_is_admin(const struct session *c)
{
    const struct server *s = c->srv;
    return peer_allowed(&s->admin_uids, &s->admin_gids, c);
}

int access_may_submit(const struct session *c)
{
    const struct server *s = c->srv;
    return access_is_admin(c) ||
           peer_allowed(&s->submit_uids, &s->submit_gids, c);
}

static int id_list_copy(struct id_list *dst, const struct id_list *src)
{
    unsigned *ids = NULL;

    if (src->n) {
        ids = malloc(src->n * sizeof *ids);
        if (ids == NULL)
            return TH_ENOMEM;
        memcpy(ids, src->ids, src->n * sizeof *ids);
    }
    free(dst->ids);
    dst->ids = ids;
    dst->n = src->n;
    return 0;
}

int server_configure(struct server *s, const struct host_cfg *cfg)
{
    struct id_list l[4] = {{0}};
    const struct id_list *src[4] = {&cfg->submit_uids, &cfg->submit_gids,
                                    &cfg->admin_uids, &cfg->admin_gids};
    struct id_list *dst[4] = {&s->submit_uids, &s->submit_gids,
                              &s->admin_uids, &s->admin_gids};

    for (int i = 0; i < 4; i++) {
        if (id_list_copy(&l[i], src[i]) < 0) {
            while (i-- > 0)
                free(l[i].ids);
            return TH_ENOMEM;
        }
    }
    for (int i = 0; i < 4; i++) {
        free(dst[i]->ids);
        *dst[i] = l[i];
    }
    s->max_payload = cfg->max_payload ? cfg->max_payload : PROTO_DEFAULT_MAX;
    if (s->max_payload > UINT32_MAX)
        s->max_payload = UINT32_MAX;
    s->max_conn_bytes = cfg->max_connection_bytes;
    s->max_conns = cfg->max_connections > 0 ? cfg->max_connections : 0;
    s->max_conns_per_uid =
        cfg->max_connections_per_uid > 0 ? cfg->max_connections_per_uid : 0;
    return 0;
}

/* Ends a connection whose peer may not use the daemon (any more). */
void access_refuse(struct session *c, uint64_t tag)
{
    c->srv->counts.refused++;
    session_fail(c, tag, TH_EPERM, "permission denied: uid %u gid %u may not "
              "use this daemon", (unsigned)c->uid, (unsigned)c->gid);
}

int access_need_admin(struct session *c, const struct proto_frame *f)
{
    if (access_is_admin(c))
        return 1;
    log_warn("client pid %d uid %u: %s refused: not an admin", (int)c->pid,
             (unsigned)c->uid, proto_type_name(f->type));
    session_reply(c, f->tag, TH_EPERM, "permission denied: not an admin");
    return 0;
}
