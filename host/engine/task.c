/* task.c - task allocation, the id map and task lists (engine layer). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <assert.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "task.h"
#include "worker_wire.h"

/* Free list bound: enough to absorb bursts without holding memory forever. */
#define TASK_FREE_MAX 4096
#define TASK_BIG_BYTES (64u * 1024 * 1024) /* cached large buffers, at most */
/* Payload memfds kept for reuse, at most: more than a pool's usual tasks
 * in flight and those whose answers are being delivered, so that a steady
 * stream of large tasks creates (and faults in) none. */
#define TASK_PMFD_CACHE 16

/* A buffer for `len` input bytes: a cached one that fits without wasting
 * more than half, or a new one. */
static char *big_get(struct task_table *tt, size_t len, size_t *cap)
{
    for (size_t i = 0; i < tt->nbig; i++) {
        if (tt->bigcap[i] < len || tt->bigcap[i] / 2 > len)
            continue;
        char *b = tt->big[i];
        *cap = tt->bigcap[i];
        tt->bigbytes -= *cap;
        tt->nbig--;
        tt->big[i] = tt->big[tt->nbig];
        tt->bigcap[i] = tt->bigcap[tt->nbig];
        return b;
    }
    *cap = len;
    return malloc(len);
}

static void big_put(struct task_table *tt, char *b, size_t cap)
{
    if (tt->nbig == TASK_BIG_CACHE || tt->bigbytes + cap > TASK_BIG_BYTES) {
        free(b);
        return;
    }
    tt->big[tt->nbig] = b;
    tt->bigcap[tt->nbig++] = cap;
    tt->bigbytes += cap;
}

/* A kept record of `size` bytes, or a new one; NULL when out of memory.
 * Its contents are the caller's to set. */
static void *keep_take(struct keep *k, size_t size)
{
    void *p = k->head;
    if (p == NULL)
        return malloc(size);
    memcpy(&k->head, p, sizeof k->head);
    k->n--;
    return p;
}

/* Keeps dead record p for reuse, or frees it when enough are kept. */
static void keep_put(struct keep *k, void *p)
{
    if (k->n >= TASK_FREE_MAX) {
        free(p);
        return;
    }
    memcpy(p, &k->head, sizeof k->head);
    k->head = p;
    k->n++;
}

static void keep_clear(struct keep *k)
{
    while (k->head != NULL)
        free(keep_take(k, 0));
}

/* A fresh payload record, kept or new; NULL when out of memory. */
static struct payload *payload_get(struct task_table *tt)
{
    struct payload *pl = keep_take(&tt->payloads_kept, sizeof *pl);
    if (pl != NULL)
        *pl = (struct payload){.in_fd = -1};
    return pl;
}

struct task *task_new(struct task_table *tt, const void *input, size_t len)
{
    struct task *t = keep_take(&tt->tasks_kept, sizeof *t);
    if (t == NULL)
        return NULL;
    memset(t, 0, offsetof(struct task, inline_input));
    char *dst = t->inline_input;
    if (len > TASK_INLINE) {
        struct payload *pl = t->payload = payload_get(tt);
        if (pl == NULL || (pl->buf = big_get(tt, len, &pl->cap)) == NULL) {
            task_free(tt, t);
            return NULL;
        }
        dst = pl->data = pl->buf;
        pl->len = len;
    } else {
        t->ilen = (uint16_t)len;
    }
    if (len > 0)
        memcpy(dst, input, len);
    return t;
}

/* Makes `data`, `len` bytes, t's data: in its payload record when it has
 * one, else inline. */
static void set_data(struct task *t, char *data, size_t len)
{
    if (t->payload != NULL) {
        t->payload->data = data;
        t->payload->len = len;
        return;
    }
    assert(data == t->inline_input && len <= TASK_INLINE);
    t->ilen = (uint16_t)len;
}

int task_set_output(struct task_table *tt, struct task *t, const void *data,
                    size_t len, int nul)
{
    struct payload *pl = t->payload;
    char *dst = t->inline_input;
    size_t cap = TASK_INLINE;
    assert(pl == NULL || !pl->own);
    if (len >= TASK_INLINE) {
        if (pl == NULL)
            pl = t->payload = payload_get(tt);
        if (pl == NULL) {
            dst = NULL;
        } else if (pl->buf != NULL && len + (nul != 0) <= pl->cap) {
            dst = pl->buf; /* an echo's output fills its input's buffer */
            cap = pl->cap;
        } else {
            dst = malloc(len + 1);
            cap = len + 1;
            pl->own = dst != NULL;
        }
    }
    if (dst == NULL) { /* an answer without data */
        t->inline_input[0] = '\0';
        set_data(t, t->inline_input, 0);
        return TH_ENOMEM;
    }
    if (len > 0)
        memcpy(dst, data, len);
    if (len < cap)
        dst[len] = '\0';
    set_data(t, dst, len);
    return 0;
}

int task_ref_output(struct task_table *tt, struct task *t, const void *data,
                    size_t len)
{
    if (t->payload == NULL && (t->payload = payload_get(tt)) == NULL) {
        t->inline_input[0] = '\0';
        set_data(t, t->inline_input, 0);
        return TH_ENOMEM;
    }
    set_data(t, (char *)data, len);
    return 0;
}

struct task *task_new_borrowed(struct task_table *tt, const void *input,
                               size_t len)
{
    if (len <= TASK_INLINE)
        return task_new(tt, input, len);
    struct task *t = task_new(tt, NULL, 0);
    if (t == NULL)
        return NULL;
    if ((t->payload = payload_get(tt)) == NULL) {
        task_free(tt, t);
        return NULL;
    }
    set_data(t, (char *)input, len);
    return t;
}

/* ---- the host's payload memfds ---- */

static void pmfd_destroy(struct pmfd *pm)
{
    if (pm->map != NULL)
        munmap(pm->map, pm->size);
    close(pm->fd);
    free(pm);
}

/* Maps the whole of pm's memfd, `size` bytes. */
static int pmfd_map(struct pmfd *pm, size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, pm->fd, 0);
    if (p == MAP_FAILED)
        return -1;
    if (pm->map != NULL)
        munmap(pm->map, pm->size);
    pm->map = p;
    pm->size = size;
    return 0;
}

/* Room for an input of len bytes and an output as long after it. */
static size_t pmfd_span(size_t len)
{
    size_t off = (len + PAYLOAD_OUT_ALIGN - 1) / PAYLOAD_OUT_ALIGN *
                 PAYLOAD_OUT_ALIGN;
    return off + (len > PAYLOAD_FD_MIN ? len : PAYLOAD_FD_MIN);
}

static struct pmfd *pmfd_get(struct task_table *tt, const void *owner,
                             size_t len)
{
    size_t span = pmfd_span(len);
    for (struct pmfd **pp = &tt->pm_free; *pp != NULL; pp = &(*pp)->next) {
        struct pmfd *pm = *pp;
        if (pm->owner != owner || pm->size < span)
            continue;
        *pp = pm->next;
        tt->pm_bytes -= pm->size;
        return pm;
    }
    struct pmfd *pm = calloc(1, sizeof *pm);
    if (pm == NULL)
        return NULL;
    pm->owner = owner;
    pm->fd = memfd_create("taskhost-task", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (pm->fd == -1) {
        free(pm);
        return NULL;
    }
    struct stat st;
    if (ftruncate(pm->fd, (off_t)span) == -1 || fstat(pm->fd, &st) == -1 ||
        fcntl(pm->fd, F_ADD_SEALS, F_SEAL_SHRINK) == -1 ||
        pmfd_map(pm, span) < 0) {
        pmfd_destroy(pm);
        return NULL;
    }
    pm->dev = st.st_dev;
    pm->ino = st.st_ino;
    return pm;
}

/* Keeps pm for reuse, first in line; the oldest kept go when more than
 * TASK_PMFD_CACHE or TASK_BIG_BYTES are kept. */
static void pmfd_put(struct task_table *tt, struct pmfd *pm)
{
    pm->next = tt->pm_free;
    tt->pm_free = pm;
    tt->pm_bytes += pm->size;
    size_t n = 0, bytes = 0;
    for (struct pmfd **pp = &tt->pm_free; *pp != NULL;) {
        struct pmfd *e = *pp;
        if (++n <= TASK_PMFD_CACHE && bytes + e->size <= TASK_BIG_BYTES) {
            bytes += e->size;
            pp = &e->next;
            continue;
        }
        *pp = e->next;
        tt->pm_bytes -= e->size;
        pmfd_destroy(e);
    }
}

struct task *task_new_pmfd(struct task_table *tt, const void *owner,
                           const void *input, size_t len)
{
    struct pmfd *pm = len > TASK_INLINE ? pmfd_get(tt, owner, len) : NULL;
    if (pm == NULL)
        return task_new(tt, input, len);
    struct task *t = task_new_borrowed(tt, pm->map, len);
    if (t == NULL) {
        pmfd_put(tt, pm);
        return NULL;
    }
    memcpy(pm->map, input, len);
    struct payload *pl = t->payload;
    pl->pm = pm;
    pl->in_fd = pm->fd;
    pl->in_dev = pm->dev;
    pl->in_ino = pm->ino;
    pl->out_in_fd = 1;
    return t;
}

int task_pmfd_cover(struct task *t, size_t len)
{
    struct pmfd *pm = t->payload->pm;
    struct stat st;
    size_t end = (size_t)t->payload->out_off + len;
    if (end <= pm->size)
        return 0;
    if (fstat(pm->fd, &st) == -1 || (size_t)st.st_size < end)
        return -1;
    return pmfd_map(pm, (size_t)st.st_size);
}

int task_on_progress(struct task_table *tt, struct task *t, th_progress_fn fn,
                     void *arg)
{
    struct progress_hook *hk = t->progress;
    if (fn == NULL) {
        if (hk != NULL)
            keep_put(&tt->hooks_kept, hk);
        t->progress = NULL;
        return 0;
    }
    if (hk == NULL && (hk = keep_take(&tt->hooks_kept, sizeof *hk)) == NULL)
        return TH_ENOMEM;
    hk->fn = fn;
    hk->arg = arg;
    t->progress = hk;
    return 0;
}

/* Gives back what pl holds and keeps it for reuse. */
static void payload_put(struct task_table *tt, struct payload *pl)
{
    /* Freed once off its worker: the worker is done with the memfd. */
    if (pl->pm != NULL)
        pmfd_put(tt, pl->pm);
    if (pl->buf != NULL)
        big_put(tt, pl->buf, pl->cap);
    if (pl->own)
        free(pl->data);
    keep_put(&tt->payloads_kept, pl);
}

void task_free(struct task_table *tt, struct task *t)
{
    if (t->payload != NULL)
        payload_put(tt, t->payload);
    t->payload = NULL;
    if (t->progress != NULL)
        keep_put(&tt->hooks_kept, t->progress);
    t->progress = NULL;
    keep_put(&tt->tasks_kept, t);
}

static size_t bucket_of(const struct task_table *tt, uint64_t id)
{
    /* Ids are sequential: a multiplicative hash spreads neighbours. */
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 20) & (tt->nbuckets - 1);
}

static int map_grow(struct task_table *tt)
{
    size_t n = tt->nbuckets ? tt->nbuckets * 2 : 1024;
    struct task **b = calloc(n, sizeof *b);
    if (b == NULL)
        return -1;
    for (size_t i = 0; i < tt->nbuckets; i++) {
        struct task *t = tt->buckets[i];
        while (t != NULL) {
            struct task *next = t->hnext;
            size_t k = (size_t)((t->id * 0x9E3779B97F4A7C15ull) >> 20) & (n - 1);
            t->hnext = b[k];
            b[k] = t;
            t = next;
        }
    }
    free(tt->buckets);
    tt->buckets = b;
    tt->nbuckets = n;
    return 0;
}

int task_map_add(struct task_table *tt, struct task *t)
{
    if (tt->count >= tt->nbuckets && map_grow(tt) < 0)
        return TH_ENOMEM;
    size_t k = bucket_of(tt, t->id);
    t->hnext = tt->buckets[k];
    tt->buckets[k] = t;
    t->mapped = 1;
    tt->count++;
    return 0;
}

void task_map_del(struct task_table *tt, struct task *t)
{
    if (!t->mapped)
        return;
    struct task **p = &tt->buckets[bucket_of(tt, t->id)];
    while (*p != NULL && *p != t)
        p = &(*p)->hnext;
    if (*p == t)
        *p = t->hnext;
    t->mapped = 0;
    tt->count--;
}

struct task *task_map_find(const struct task_table *tt, uint64_t id)
{
    if (tt->nbuckets == 0)
        return NULL;
    struct task *t = tt->buckets[bucket_of(tt, id)];
    while (t != NULL && t->id != id)
        t = t->hnext;
    return t;
}

void task_table_free(struct task_table *tt)
{
    keep_clear(&tt->tasks_kept);
    keep_clear(&tt->payloads_kept);
    keep_clear(&tt->hooks_kept);
    for (size_t i = 0; i < tt->nbig; i++)
        free(tt->big[i]);
    tt->nbig = tt->bigbytes = 0;
    while (tt->pm_free != NULL) {
        struct pmfd *pm = tt->pm_free;
        tt->pm_free = pm->next;
        pmfd_destroy(pm);
    }
    tt->pm_bytes = 0;
    free(tt->buckets);
    tt->buckets = NULL;
    tt->nbuckets = tt->count = 0;
}

void task_list_push(struct task_list *l, struct task *t)
{
    t->next = NULL;
    t->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = t;
    else
        l->head = t;
    l->tail = t;
    l->n++;
}

void task_list_push_front(struct task_list *l, struct task *t)
{
    t->prev = NULL;
    t->next = l->head;
    if (l->head != NULL)
        l->head->prev = t;
    else
        l->tail = t;
    l->head = t;
    l->n++;
}

struct task *task_list_pop(struct task_list *l)
{
    struct task *t = l->head;
    if (t != NULL)
        task_list_remove(l, t);
    return t;
}

void task_list_remove(struct task_list *l, struct task *t)
{
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        l->head = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    else
        l->tail = t->prev;
    t->next = t->prev = NULL;
    l->n--;
}

void task_list_insert_before(struct task_list *l, struct task *at,
                             struct task *t)
{
    if (at == NULL) {
        task_list_push(l, t);
        return;
    }
    t->next = at;
    t->prev = at->prev;
    if (at->prev != NULL)
        at->prev->next = t;
    else
        l->head = t;
    at->prev = t;
    l->n++;
}
