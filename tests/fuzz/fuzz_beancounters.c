/*
 * tests/fuzz/fuzz_beancounters.c: libFuzzer target for the limits room's
 * parsers: /proc/user_beancounters (limits_ubc_parse), the cgroup value,
 * keyed and /proc/self/cgroup parsers, file-nr, and the status file. The
 * input is never NUL-terminated: the parsers take (buffer, length).
 * Invariants checked: a successful parse chose a block with rows, every
 * row name is terminated, and a status file that parses formats again.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "limits/detect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct limits_ubc u;
	const char *s = (const char *)data;
	char err[160], out[256];
	long long v, a, m;
	struct limits_status st;
	char buf[4096];
	int i;

	if (limits_ubc_parse(s, size, &u, err, sizeof err) == 0) {
		if (u.nrows <= 0 || u.nrows > LIMITS_UBC_MAX_ROWS || u.blocks < 1)
			__builtin_trap();
		for (i = 0; i < u.nrows; i++)
			if (memchr(u.rows[i].name, '\0', sizeof u.rows[i].name) == NULL)
				__builtin_trap();
		(void)limits_ubc_find(&u, "numtcpsock");
	} else if (err[0] == '\0') {
		__builtin_trap();   /* a refusal always says why */
	}
	if (limits_cgroup_parse_value(s, size, &v) == 0 && v < 0)
		__builtin_trap();
	(void)limits_cgroup_parse_keyed(s, size, "oom", &v);
	(void)limits_cgroup_parse_keyed(s, size, "inactive_file", &v);
	if (limits_cgroup_parse_self(s, size, NULL, out, sizeof out) == 0 && strlen(out) >= sizeof out)
		__builtin_trap();
	(void)limits_cgroup_parse_self(s, size, "memory", out, sizeof out);
	if (limits_filenr_parse(s, size, &a, &m) == 0 && (a < 0 || m < 0))
		__builtin_trap();
	if (limits_status_parse(s, size, &st) == 0 && limits_status_format(&st, buf, sizeof buf) < 0)
		__builtin_trap();
	return 0;
}
