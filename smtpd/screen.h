/*
 * smtpd/screen.h: the screen, postscreen's ideas in the process. A port 25
 * client first waits in a small record (descriptor, address, timers, DNS
 * queries; no session, no buffers) while the pregreet wait and the
 * weighted DNS list scoring run; only a client that passes both becomes a
 * session. Passed clients are remembered in a bounded cache that is saved
 * in the queue directory across restarts (screen_cache.c).
 */
#ifndef FRUGAL_SMTPD_SCREEN_H
#define FRUGAL_SMTPD_SCREEN_H

#include <stddef.h>
#include <sys/socket.h>

#include "smtpd/dnsbl.h"

struct conf;
struct smtpd_server;
struct listener;

#define SCREEN_MAX_SITES 16   /* postscreen_dnsbl_sites entries */
#define SCREEN_MAX_ZONES 8    /* distinct zones among them: one query each per client */

enum screen_action { SCREEN_DROP, SCREEN_IGNORE };

/* One configuration generation's screen parameters (struct smtpd_gen). */
struct screen_conf {
	double greet_wait;            /* smtpd_pregreet_wait (0: no pregreet test) */
	int nsites;
	struct dnsbl_site site[SCREEN_MAX_SITES];
	int weight[SCREEN_MAX_SITES];
	int zone_of[SCREEN_MAX_SITES];  /* index into zone[] */
	int nzones;
	char zone[SCREEN_MAX_ZONES][DNS_NAME_MAX + 1];
	int threshold;                /* postscreen_dnsbl_threshold */
	int allow_threshold;          /* postscreen_dnsbl_allowlist_threshold (< 0: on) */
	double dnsbl_timeout;         /* postscreen_dnsbl_timeout */
	enum screen_action dnsbl_action, greet_action;
	double greet_ttl, dnsbl_ttl;  /* postscreen_greet_ttl, postscreen_dnsbl_max_ttl */
};
/* Parse the postscreen_* parameters: 0, or -1 with err "FILE:LINE: name: reason". */
int screen_conf_load(const struct conf *c, struct screen_conf *sc, char *err, size_t errlen);
/* One postscreen_dnsbl_sites entry, "site[=filter][*weight]": 0, or -1 with err. */
int screen_site_parse(const char *arg, struct dnsbl_site *site, int *weight, char *err, size_t errlen);
int screen_conf_active(const struct screen_conf *sc);  /* any test configured */

/*
 * A port 25 connection, charged and admitted for a TCP socket: 1 when the
 * screen took it (it becomes a session later, or is refused), 0 when no
 * test applies (the caller makes the session now), -1 without memory for
 * the record (the caller answers 421).
 */
int  screen_admit(struct listener *l, int fd, const struct sockaddr_storage *ss);
/* At stop: every client still being screened is closed. */
void screen_shutdown(struct smtpd_server *srv);
/* At start (the generation and resolver made): the cache, loaded from the queue directory. */
void screen_init(struct smtpd_server *srv);
/* At exit: the cache saved, its memory freed. */
void screen_exit(struct smtpd_server *srv);

/* ---- the pass cache (screen_cache.c) ---- */

#define SCREEN_KEYLEN 17   /* family, then 16 bytes of address */

struct screen_cache;
struct screen_rec {
	unsigned char key[SCREEN_KEYLEN];
	long long greet_until;   /* unix time the pregreet pass expires (0: none) */
	long long dnsbl_until;   /* the same for the DNS list score */
};
size_t screen_cache_bytes(unsigned entries);
struct screen_cache *screen_cache_new(unsigned entries);   /* mem_alloc'd; NULL: no memory */
void screen_cache_free(struct screen_cache *c);
/* The client's record (a copy), or 0 when it is not remembered. */
int  screen_cache_get(struct screen_cache *c, const unsigned char key[SCREEN_KEYLEN], struct screen_rec *out);
/* Remember (replace) a record; when its set is full, the one expiring first goes. */
void screen_cache_put(struct screen_cache *c, const struct screen_rec *r, long long now);
unsigned screen_cache_used(const struct screen_cache *c);
void screen_cache_key(const struct sockaddr_storage *ss, unsigned char key[SCREEN_KEYLEN]);

/*
 * The file: a first line "frugal-postscreen-cache 1", then one record a
 * line, "ADDRESS GREET_UNTIL DNSBL_UNTIL" (unix times, 0: no pass).
 * screen_cache_parse_line: one line without its newline: 0, or -1 (bad).
 */
int  screen_cache_parse_line(const char *line, size_t len, struct screen_rec *r);
/* 0, or -1 with err (the file is left as it was). Expired records are left out. */
int  screen_cache_save(struct screen_cache *c, const char *path, long long now, char *err, size_t errlen);
/* Records loaded, or -1 with err (a missing file is 0 records; a corrupt one loads nothing). */
int  screen_cache_load(struct screen_cache *c, const char *path, long long now, char *err, size_t errlen);

#endif
