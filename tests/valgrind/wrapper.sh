#!/bin/sh
# tests/valgrind/wrapper.sh -> build/valgrind/frugal (make fills in @BIN@ and @SUPP@):
# what `make valgrind-check` gives the tests as FRUGAL_BIN. Runs the -O1 -g build
# (frugal.bin beside this script) under memcheck, one log per process in
# $FRUGAL_VALGRIND_LOGDIR (tests/valgrind_check.py reads them). The absolute path is
# baked in because tests copy or symlink FRUGAL_BIN elsewhere (sendmail, mailq).
bin=@BIN@
logdir=${FRUGAL_VALGRIND_LOGDIR:?FRUGAL_VALGRIND_LOGDIR: the directory for memcheck logs (tests/valgrind_check.py sets it)}
# the name picks the command (main.c): valgrind gives the program the path it ran as argv[0]
case "${0##*/}" in
sendmail*) prog=$bin/as/sendmail ;;
mailq|newaliases) prog=$bin/as/${0##*/} ;;
*) prog=$bin/frugal.bin ;;
esac
# Forked children (master, smtpd, delivery helpers) stay under memcheck and get their own
# log (%p, %n). Executed programs are followed except frugal-postdrop: a set-group-ID
# program cannot gain its group under valgrind, so sendmail's drop would fail.
# --error-exitcode: a process with an error also exits 97 (the logs are the verdict).
# More options through valgrind's own VALGRIND_OPTS (e.g. --track-origins=yes, 2x slower).
# --vgdb=no: no gdbserver FIFOs in /tmp (a SIGKILLed process, as the crash tests make, left
# its three /tmp/vgdb-pipe-* behind).
exec valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite,indirect \
	--show-leak-kinds=definite,indirect --error-exitcode=97 --vgdb=no \
	--trace-children=yes --trace-children-skip='*/frugal-postdrop,/bin/*,/usr/*,/sbin/*' \
	--suppressions=@SUPP@ --num-callers=30 \
	--log-file="$logdir/vg.%p.%n" "$prog" "$@"
