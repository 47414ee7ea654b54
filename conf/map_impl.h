/*
 * conf/map_impl.h: the table back ends behind conf/map.h (cdb, inline,
 * unix:passwd.byname). Private to the conf room.
 */
#ifndef FRUGAL_CONF_MAP_IMPL_H
#define FRUGAL_CONF_MAP_IMPL_H

#include <stddef.h>
#include "conf/map.h"

struct map {
	char *spec;                 /* as given, owned */
	/* key is already lower-cased; same return convention as map_lookup() */
	int  (*lookup)(struct map *m, const char *key, char **value);
	void (*close)(struct map *m);
	/* every entry, for checks (map_walk); NULL: the back end cannot list (passwd) */
	int  (*walk)(struct map *m, map_walk_fn *fn, void *arg);
	void *priv;                 /* the back end's state */
};

struct map *map_alloc(const char *spec);   /* spec copied; NULL on ENOMEM */
void map_free_shell(struct map *m);         /* frees spec and m only */

struct map *map_cdb_open(const char *spec, const char *path, char *err, size_t errlen);
struct map *map_inline_open(const char *spec, const char *body, char *err, size_t errlen);

/* "inline:{...}" body parsing, shared with the fuzz target: 0 or -1 + err */
int map_inline_parse(const char *body, char ***keys, char ***values, size_t *n,
    char *err, size_t errlen);

#endif
