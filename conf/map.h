/*
 * conf/map.h: lookup tables. `cdb:/path/file` reads /path/file.cdb (tinycdb);
 * `inline:{ key=value, key2=value2 }` is parsed from the spec itself. Keys
 * are looked up lower-cased, as Postfix does for address tables.
 */
#ifndef FRUGAL_CONF_MAP_H
#define FRUGAL_CONF_MAP_H

#include <stddef.h>

struct map;

/* Open one table; NULL with a reason in err on failure. */
struct map *map_open(const char *spec, char *err, size_t errlen);
void        map_close(struct map *m);
const char *map_spec(const struct map *m);

/*
 * Look up `key`. Returns 1 and sets *value (mem_alloc'd, caller frees) when
 * found, 0 when not found, -1 on error (I/O, allocation).
 */
int map_lookup(struct map *m, const char *key, char **value);

/*
 * Postfix lookup order for an address (virtual(5), aliases): first
 * user@domain, then user (only if `local_part_ok`, i.e. the domain is one of
 * ours), then @domain. Same return convention as map_lookup().
 */
int map_lookup_addr(struct map *m, const char *addr, int local_part_ok, char **value);

/*
 * Address extensions (Postfix recipient_delimiter, split_addr()): the
 * offset in addr of the delimiter that starts the local part's extension,
 * or 0 when there is none (no delimiter, one at the start, or a name
 * Postfix never splits: postmaster, mailer-daemon, double-bounce, and
 * owner-x / x-request when '-' is a delimiter). The extension runs from
 * there to the '@' (or the end) and includes the delimiter.
 */
size_t map_addr_ext(const char *addr, const char *delims);

/* Every entry of a table: fn returns 0 to go on, anything else stops the walk and is returned. */
typedef int map_walk_fn(void *arg, const char *key, const char *value);
/* 0 (all seen), fn's stop value, or -1 on a read error; 0 for tables that cannot list (unix:). */
int map_walk(struct map *m, map_walk_fn *fn, void *arg);

/* A list of tables searched in order ("cdb:/a, cdb:/b"). */
struct map_list;
struct map_list *map_list_open(const char *specs, char *err, size_t errlen); /* "" gives an empty list */
void map_list_close(struct map_list *l);
int  map_list_lookup(struct map_list *l, const char *key, char **value);
int  map_list_lookup_addr(struct map_list *l, const char *addr, int local_part_ok, char **value);
int  map_list_empty(const struct map_list *l);
/*
 * map_list_lookup_addr() with address extensions (delims from
 * recipient_delimiter; NULL or "" for none): the keys, each tried in every
 * table before the next, are user+ext@domain, user@domain, user+ext, user
 * (these two only if local_part_ok), @domain: virtual(5) and canonical(5),
 * "ADDRESS EXTENSION". *unmatched (may be NULL) is set to the extension's
 * offset in addr when the key that matched was stripped of it (Postfix's
 * "unmatched extension", which the caller may propagate to the result),
 * else 0.
 */
int  map_list_lookup_ext(struct map_list *l, const char *addr, int local_part_ok, const char *delims,
    char **value, size_t *unmatched);
/* each table of the list in turn (map_walk); *spec names the table fn stopped in */
int  map_list_walk(struct map_list *l, map_walk_fn *fn, void *arg, const char **spec);

/*
 * Compile text table `path` ("key value" lines, # comments, continuation by
 * leading white space) into path.cdb: written to a temporary file, fsynced,
 * renamed, directory synced. Errors name file and line in err. 0 or -1.
 * aliases format (key: value) when `aliases` is set.
 */
int map_compile(const char *path, int aliases, char *err, size_t errlen);

#endif
