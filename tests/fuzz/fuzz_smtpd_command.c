/* tests/fuzz/fuzz_smtpd_command.c: libFuzzer target for the SMTP command and path parser. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "smtpd/command.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtpd_cmd c;
	struct smtpd_path p;
	char copy[2048];

	smtpd_cmd_parse((const char *)data, size, &c);
	if (c.arg < (const char *)data || c.arg + c.arglen > (const char *)data + size)
		__builtin_trap();
	smtpd_parse_path(c.arg, c.arglen, "FROM:", 1, &p);
	smtpd_parse_path(c.arg, c.arglen, "TO:", 0, &p);
	if (size < sizeof copy) {
		memcpy(copy, data, size);
		copy[size] = '\0';
		smtpd_valid_hostname(copy);
		smtpd_valid_addr_literal(copy);
		smtpd_fqdn(copy);
	}
	return 0;
}
