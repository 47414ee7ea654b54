/*
 * main.c: the front door, above the rooms. Maps a command (or the name the
 * binary was invoked by: sendmail, mailq, newaliases) to the room that
 * implements it. It knows every room's entry point and nothing else; no
 * room includes anything from here.
 */
#include <stdio.h>
#include <string.h>

#include "conf/conf.h"
#include "core/mem.h"
#include "limits/limits.h"
#include "queue/queue.h"
#include "smtpd/smtpd.h"
#include "smtpd/status.h"

static int cmd_reload(int argc, char **argv) { return smtpd_cmd_signal("reload", argc, argv); }
static int cmd_stop(int argc, char **argv)   { return smtpd_cmd_signal("stop", argc, argv); }

static const struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *usage;
} commands[] = {
	{ "serve",  smtpd_cmd_serve, "serve [-f] [-c DIR]" },
	{ "limits", limits_cmd,      "limits [-c DIR] [--json]" },
	{ "config", conf_cmd_config, "config [-c DIR] [-n] [-d] [NAME...]" },
	{ "check",  smtpd_cmd_check, "check [-c DIR]" },
	{ "map",    conf_cmd_map,    "map [-q KEY] FILE" },
	{ "passwd", smtpd_cmd_passwd, "passwd [-c DIR] ADDRESS" },
	{ "wizard", smtpd_cmd_wizard, "wizard [-c DIR] [--answers FILE]" },
	{ "queue",  queue_cmd,       "queue [-c DIR] [list|show ID|delete ID|hold ID|release ID|flush]" },
	{ "sendmail", queue_cmd_sendmail, "sendmail [-t] [-i] [-f FROM] [-F NAME] [-bp|-bs|-bi] [-C DIR] [RCPT...]" },
	{ "reload", cmd_reload,      "reload [-c DIR]" },
	{ "stop",   cmd_stop,        "stop [-c DIR]" },
	{ "status", smtpd_cmd_status, "status [-c DIR] [--json|--prometheus]" },
	{ "dkim",   dkim_cmd,        "dkim keygen [-c DIR] [--type rsa|ed25519] DOMAIN [SELECTOR]" },
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

/* Commands of the contract that later work will add (PRODUCT.md section 1). */
static const char *const later[] = { NULL };

static int usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: frugal COMMAND [ARGS]\ncommands:\n");
	for (i = 0; i < NCOMMANDS; i++)
		fprintf(f, "  frugal %s\n", commands[i].usage);
	return f == stderr ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *self = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	size_t i;

	/* before any library allocates: libev's and OpenSSL's memory is frugal's, counted (core/mem.h) */
	mem_install_hooks();

	/* Sendmail's names (PHP's mail(), cron, Git call /usr/sbin/sendmail -t -i) */
	/* also sendmail.frugal and the like (the name Debian's alternatives give a second MTA) */
	if (strncmp(self, "sendmail", 8) == 0 || strcmp(self, "mailq") == 0 || strcmp(self, "newaliases") == 0)
		return queue_cmd_sendmail(argc, argv);
	if (argc < 2)
		return usage(stderr);
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0)
		return usage(stdout);
	for (i = 0; i < NCOMMANDS; i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	for (i = 0; later[i]; i++)
		if (strcmp(argv[1], later[i]) == 0) {
			fprintf(stderr, "frugal: '%s' is not in this version yet\n", argv[1]);
			return 1;
		}
	/*
	 * An invocation we do not know may be a program handing us mail
	 * under a name we did not expect: 75 (EX_TEMPFAIL, "not taken, try
	 * again"), never 1, which some callers read as a verdict on the
	 * message (issue 15).
	 */
	fprintf(stderr, "frugal: unknown command '%s' (nothing was queued)\n", argv[1]);
	usage(stderr);
	return 75;
}
