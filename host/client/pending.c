/* pending.c - the client library's table of waiting requests (pending.h). */
#include "pending.h"

#include <assert.h>
#include <stdlib.h>

/* Moves the entries into a fresh table of n slots (a power of two). */
static int grow_to(struct pend_table *t, size_t n)
{
    struct pend *old = t->slot, *s = calloc(n, sizeof *s);
    size_t oldn = old ? t->mask + 1 : 0;

    if (s == NULL)
        return TH_ENOMEM;
    t->slot = s;
    t->mask = n - 1;
    for (size_t i = 0; i < oldn; i++) {
        if (old[i].tag == 0)
            continue;
        size_t j = old[i].tag & t->mask;
        while (s[j].tag)
            j = (j + 1) & t->mask;
        s[j] = old[i];
    }
    free(old);
    return 0;
}

int pend_init(struct pend_table *t)
{
    *t = (struct pend_table){0};
    return grow_to(t, PEND_MIN);
}

void pend_free(struct pend_table *t)
{
    free(t->slot);
    *t = (struct pend_table){0};
}

struct pend *pend_find(const struct pend_table *t, uint64_t tag)
{
    if (tag == 0)
        return NULL; /* never a request's: an empty slot must not match */
    for (size_t i = tag & t->mask;; i = (i + 1) & t->mask) {
        if (t->slot[i].tag == tag)
            return &t->slot[i];
        if (t->slot[i].tag == 0)
            return NULL;
    }
}

struct pend *pend_add(struct pend_table *t, uint64_t tag)
{
    size_t size = t->slot ? t->mask + 1 : 0, i;

    assert(tag != 0);
    if ((t->used + 1) * 2 > size &&
        grow_to(t, size ? size * 2 : PEND_MIN) < 0)
        return NULL;
    for (i = tag & t->mask; t->slot[i].tag; i = (i + 1) & t->mask)
        assert(t->slot[i].tag != tag);
    t->slot[i] = (struct pend){.tag = tag};
    t->used++;
    return &t->slot[i];
}

void pend_del(struct pend_table *t, struct pend *p)
{
    size_t i = (size_t)(p - t->slot), j = i;

    assert(i <= t->mask && p->tag != 0 && t->used > 0);
    t->used--;
    for (;;) {
        t->slot[i].tag = 0;
        for (;;) {
            j = (j + 1) & t->mask;
            if (t->slot[j].tag == 0)
                return;
            size_t home = t->slot[j].tag & t->mask;
            /* j's entry may move to i unless its home lies in (i, j] */
            if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
                continue;
            break;
        }
        t->slot[i] = t->slot[j];
        i = j;
    }
}
