/*
 * tests/fuzz/fuzz_conf.c: libFuzzer target for the configuration parsers:
 * main.cf lexing and expansion (conf_load_text), list splitting and
 * inline: table parsing. Invariants: a loaded conf answers every table
 * parameter, a failed load reports at least one error, nothing leaks.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "conf/map.h"
#include "core/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static FILE *null;
	struct conf_diags d;
	struct conf *c;
	struct map *m;
	char *text, *spec, **v, *val, err[512];
	const char *name;
	size_t i;

	if (null == NULL && (null = fopen("/dev/null", "w")) == NULL)
		abort();
	if ((text = mem_alloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = 0;

	c = conf_load_text(text, "fuzz.cf", &d);
	if (c == NULL && d.errors == 0)
		__builtin_trap();
	for (i = 0; i < (size_t)d.n; i++)
		if (d.v[i].text[0] == 0)
			__builtin_trap();
	if (c) {
		for (i = 0; conf_param_describe(i, &name, NULL, NULL, NULL) == 0; i++) {
			if (conf_str(c, name, 0) == NULL || conf_str(c, name, 1) == NULL)
				__builtin_trap();
			(void)conf_int(c, name, 1);
		}
		conf_print(c, null, 0, NULL);
		conf_print(c, null, CONF_PRINT_NONDEFAULT, NULL);
		if ((v = conf_list(c, "mydestination", 1)) != NULL)
			conf_list_free(v);
		conf_unref(c);
	}
	conf_diags_free(&d);

	if ((v = conf_split_list(text)) != NULL) {
		for (i = 0; v[i]; i++)
			if (v[i][0] == 0)
				__builtin_trap();
		conf_list_free(v);
	}

	if ((spec = mem_printf("inline:%s", text)) != NULL) {
		if ((m = map_open(spec, err, sizeof err)) != NULL) {
			if (map_lookup(m, "key", &val) == 1)
				mem_free(val);
			if (map_lookup_addr(m, "user@example.com", 1, &val) == 1)
				mem_free(val);
			map_close(m);
		}
		mem_free(spec);
	}
	mem_free(text);
	return 0;
}
