/* account.c - users and groups by name or number (common layer;
 * account.h). */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdlib.h>

#include "account.h"
#include "taskhost.h"

/* 1 with *id for decimal digits, 0 for a name, TH_EINVAL out of range. */
static int digits(const char *s, unsigned *id)
{
    char *end;
    unsigned long v;

    if (*s < '0' || *s > '9')
        return 0;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > INT_MAX)
        return TH_EINVAL;
    *id = (unsigned)v;
    return 1;
}

int account_user(const char *name, unsigned *uid, unsigned *gid)
{
    unsigned id;
    int r = digits(name, &id);
    struct passwd *pw;

    if (r < 0)
        return r;
    pw = r ? getpwuid((uid_t)id) : getpwnam(name);
    if (pw == NULL && r == 0)
        return TH_ENOENT;
    *uid = pw ? (unsigned)pw->pw_uid : id;
    *gid = pw ? (unsigned)pw->pw_gid : id;
    return 0;
}

int account_group(const char *name, unsigned *gid)
{
    unsigned id;
    int r = digits(name, &id);
    struct group *gr;

    if (r < 0)
        return r;
    if (r) {
        *gid = id;
        return 0;
    }
    gr = getgrnam(name);
    if (gr == NULL)
        return TH_ENOENT;
    *gid = (unsigned)gr->gr_gid;
    return 0;
}
