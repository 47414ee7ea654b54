/*
 * smtpd/smtpd.h: the SMTP server room. What others may call: the daemon's
 * entry points (serve and the signalling commands) and, for tests and
 * fuzzing, the pure command parser (smtpd/command.h).
 */
#ifndef FRUGAL_SMTPD_SMTPD_H
#define FRUGAL_SMTPD_SMTPD_H

int smtpd_cmd_serve(int argc, char **argv);              /* frugal serve [-f] [-c DIR] */
int smtpd_cmd_check(int argc, char **argv);              /* frugal check [-c DIR] */
int smtpd_cmd_signal(const char *what, int argc, char **argv); /* reload | stop | status */
int smtpd_cmd_passwd(int argc, char **argv);             /* frugal passwd [-c DIR] ADDRESS */
int smtpd_cmd_wizard(int argc, char **argv);             /* frugal wizard [-c DIR] [--answers FILE] */

#endif
