/* account.h - users and groups by name or number (common layer): the one
 * place taskhost asks the system's account database, for the config's
 * pool users and groups, submit and admin lists, and the socket's group.
 */
#ifndef TH_ACCOUNT_H
#define TH_ACCOUNT_H

/* Looks up user `name`: a login name, or a uid in decimal digits. Returns
 * 0 with the uid in *uid and its primary group in *gid (from its passwd
 * entry; for a uid without one, the group of the same number, so that a
 * process never keeps another group by accident). Returns TH_ENOENT for
 * an unknown name, TH_EINVAL for digits out of range. */
int account_user(const char *name, unsigned *uid, unsigned *gid);

/* Looks up group `name`: a group name, or a gid in decimal digits.
 * Returns 0 with *gid, TH_ENOENT or TH_EINVAL as account_user(). */
int account_group(const char *name, unsigned *gid);

#endif /* TH_ACCOUNT_H */
