/*
 * smtpd/status.h: `frugal status`, the running daemon at a glance. The view
 * is gathered from files (the daemon's status file, the queue directories,
 * the limits report's detection) and printed by pure functions, so the
 * formats are tested without a daemon.
 */
#ifndef FRUGAL_SMTPD_STATUS_H
#define FRUGAL_SMTPD_STATUS_H

#include <stdio.h>

#include "core/stats.h"
#include "limits/limits.h"

#define STATUS_MAX_GAUGES 24

struct status_view {
	int  running;
	long pid;
	long long now, started, updated;              /* epoch seconds */
	long long sessions, sessions_limit, deliveries_limit;
	int  stress;
	long long log_lost;                           /* log lines lost since start; -1 unknown */
	long long stat[STATS_COUNT];                  /* -1 unknown */
	/* messages: active and deferred split the committed ones (DESIGN.md) */
	long long q_active, q_deferred, q_hold, q_maildrop, q_corrupt, q_incoming;
	struct limits_gauge g[STATUS_MAX_GAUGES];
	int  ngauge;
};

/* A bar of width cells for used of budget ("#####.....", NUL-terminated; buf > width). */
void status_bar(char *buf, int width, long long used, long long budget);
void status_print_text(const struct status_view *v, FILE *f);
void status_print_json(const struct status_view *v, FILE *f);
void status_print_prometheus(const struct status_view *v, FILE *f);

int  smtpd_cmd_status(int argc, char **argv);

#endif
