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

/* A list of tables searched in order ("cdb:/a, cdb:/b"). */
struct map_list;
struct map_list *map_list_open(const char *specs, char *err, size_t errlen); /* "" gives an empty list */
void map_list_close(struct map_list *l);
int  map_list_lookup(struct map_list *l, const char *key, char **value);
int  map_list_lookup_addr(struct map_list *l, const char *addr, int local_part_ok, char **value);
int  map_list_empty(const struct map_list *l);

/*
 * Compile text table `path` ("key value" lines, # comments, continuation by
 * leading white space) into path.cdb: written to a temporary file, fsynced,
 * renamed, directory synced. Errors name file and line in err. 0 or -1.
 * aliases format (key: value) when `aliases` is set.
 */
int map_compile(const char *path, int aliases, char *err, size_t errlen);

#endif
