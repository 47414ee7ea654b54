# frugal: one binary. Plain make + pkg-config. Targets:
#   all check run bench fuzz powerloss install clean deps
# `make check` and `make run` install missing Debian packages first (contrib/deps.sh).

PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
B       ?= build
PKGS     = libcdb openssl libcares opendkim
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lcdb -lssl -lcrypto -lcares -lopendkim)
CFLAGS  ?= -O2 -g
WARN     = -Wall -Wextra -Werror -Wno-unused-parameter
CPPFLAGS += -D_GNU_SOURCE -I. $(PKG_CFLAGS)
LIBS     = -lev $(PKG_LIBS) -lcrypt -lpthread
LIBS    += -lspf2
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm)
SAN      = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

MODULES  = core conf limits queue smtpd
SRCS     = $(foreach m,$(MODULES),$(wildcard $(m)/*.c))
HDRS     = $(foreach m,$(MODULES),$(wildcard $(m)/*.h))
UNIT     = $(patsubst tests/unit/%.c,%,$(wildcard tests/unit/test_*.c))
FUZZ     = $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
PRELOAD  = $(wildcard tests/emul/*.c)

OBJ      = $(SRCS:%.c=$(B)/obj/%.o)
ASAN_OBJ = $(SRCS:%.c=$(B)/asan/%.o)

.PHONY: all check check-unit check-integration check-asan run bench fuzz powerloss soak install clean deps fresh-check tsan-check valgrind-check
BIN      = $(if $(filter build,$(B)),frugal,$(B)/frugal)
POSTDROP = $(if $(filter build,$(B)),frugal-postdrop,$(B)/frugal-postdrop)
all: $(BIN) $(POSTDROP) $(B)/tests

# the set-group-ID drop helper of sendmail (postdrop.c): the parser and nothing else of the rooms
$(POSTDROP): $(B)/obj/postdrop.o $(B)/obj/queue/drop.o
	$(CC) $(CFLAGS) -o $@ $^
$(B)/asan/frugal-postdrop: $(B)/asan/postdrop.o $(B)/asan/queue/drop.o
	$(CC) -O1 -g $(SAN) -o $@ $^

$(BIN): $(B)/obj/main.o $(B)/libfrugal.a
	$(CC) $(CFLAGS) -o $@ $^ $(LIBS)

$(B)/libfrugal.a: $(OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -c -o $@ $<

$(B)/asan/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -O1 -g $(SAN) $(WARN) -c -o $@ $<

$(B)/asan/libfrugal.a: $(ASAN_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/asan/frugal: $(B)/asan/main.o $(B)/asan/libfrugal.a $(B)/asan/frugal-postdrop
	$(CC) -O1 -g $(SAN) -o $@ $(B)/asan/main.o $(B)/asan/libfrugal.a $(LIBS)

# ThreadSanitizer build of the daemon (the loop and the workers share state):
# `make tsan-check` runs the integration tests against it (TSAN_FILES: which
# files, default all) and fails on any report. Not part of `make check` (slow).
TSAN_OBJ = $(SRCS:%.c=$(B)/tsan/%.o)
$(B)/tsan/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -O1 -g -fsanitize=thread $(WARN) -c -o $@ $<
$(B)/tsan/libfrugal.a: $(TSAN_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(B)/tsan/frugal: $(B)/tsan/main.o $(B)/tsan/libfrugal.a $(B)/tsan/frugal-postdrop
	$(CC) -O1 -g -fsanitize=thread -o $@ $(B)/tsan/main.o $(B)/tsan/libfrugal.a $(LIBS)
$(B)/tsan/frugal-postdrop: $(B)/tsan/postdrop.o $(B)/tsan/queue/drop.o
	$(CC) -O1 -g -fsanitize=thread -o $@ $^
tsan-check:
	@sh contrib/deps.sh build test
	@$(MAKE) --no-print-directory -j$(JOBS) all $(B)/tsan/frugal
	python3 tests/tsan_check.py $(TSAN_FILES)

# valgrind's memcheck over the integration tests (`make valgrind-check`, VALGRIND_FILES
# picks files, default all): the daemon built -O1 -g without sanitizers (frugal.bin),
# run through a wrapper, $(B)/valgrind/frugal (tests/valgrind/wrapper.sh), that the tests
# take as FRUGAL_BIN. Fails on any memcheck error or definite/indirect leak in any
# frugal process. Not part of `make check` (20-50x slower).
VG_OBJ = $(SRCS:%.c=$(B)/valgrind/%.o)
$(B)/valgrind/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -O1 -g $(WARN) -c -o $@ $<
$(B)/valgrind/libfrugal.a: $(VG_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(B)/valgrind/frugal.bin: $(B)/valgrind/main.o $(B)/valgrind/libfrugal.a
	$(CC) -O1 -g -o $@ $^ $(LIBS)
$(B)/valgrind/frugal-postdrop: $(B)/valgrind/postdrop.o $(B)/valgrind/queue/drop.o
	$(CC) -O1 -g -o $@ $^
$(B)/valgrind/frugal: tests/valgrind/wrapper.sh tests/valgrind/frugal.supp $(B)/valgrind/frugal.bin $(B)/valgrind/frugal-postdrop
	@mkdir -p $(B)/valgrind/as
	for l in sendmail mailq newaliases; do ln -sf ../frugal.bin $(B)/valgrind/as/$$l; done
	sed -e 's|@BIN@|$(abspath $(B))/valgrind|' -e 's|@SUPP@|$(CURDIR)/tests/valgrind/frugal.supp|' $< > $@
	chmod 755 $@
valgrind-check:
	@sh contrib/deps.sh build test valgrind
	@$(MAKE) --no-print-directory -j$(JOBS) all $(B)/valgrind/frugal
	python3 tests/valgrind_check.py $(VALGRIND_FILES)

# The power-loss test's negative control: the same daemon with every sync
# skipped (core/sync.c under FRUGAL_TEST_NO_SYNC). A test binary, never installed.
$(B)/nosync/sync.o: core/sync.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DFRUGAL_TEST_NO_SYNC $(CFLAGS) $(WARN) -c -o $@ $<
$(B)/nosync/frugal: $(B)/obj/main.o $(B)/nosync/sync.o $(B)/libfrugal.a $(B)/nosync/frugal-postdrop
	$(CC) $(CFLAGS) -o $@ $(B)/obj/main.o $(B)/nosync/sync.o $(B)/libfrugal.a $(LIBS)
$(B)/nosync/frugal-postdrop: postdrop.c $(B)/obj/queue/drop.o $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DFRUGAL_TEST_NO_SYNC $(CFLAGS) $(WARN) -o $@ postdrop.c $(B)/obj/queue/drop.o

# unit tests (Check): tests/unit/test_X.c -> $(B)/tests/test_X
$(B)/tests: $(UNIT:%=$(B)/tests/%) $(PRELOAD:tests/emul/%.c=$(B)/tests/%.so)
$(B)/tests/test_%: tests/unit/test_%.c $(B)/libfrugal.a
	@mkdir -p $(B)/tests
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $^ $(CHECK_LIBS) $(LIBS)
$(B)/asan/tests/test_%: tests/unit/test_%.c $(B)/asan/libfrugal.a
	@mkdir -p $(B)/asan/tests
	$(CC) $(CPPFLAGS) -O1 -g $(SAN) $(WARN) -o $@ $^ $(CHECK_LIBS) $(LIBS)
# the container emulator (LD_PRELOAD)
$(B)/tests/%.so: tests/emul/%.c
	@mkdir -p $(B)/tests
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -shared -fPIC -o $@ $< -ldl -lpthread

deps:
	@sh contrib/deps.sh build test fuzz

# the build of everything the suite runs, on every core (serially it took 8 of CI's 25 minutes)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
check: deps
	@$(MAKE) --no-print-directory -j$(JOBS) all $(B)/nosync/frugal $(B)/asan/frugal $(UNIT:%=$(B)/asan/tests/%) $(FUZZ_BIN)
	@python3 tests/run_all.py

run: 
	@sh contrib/deps.sh build
	@$(MAKE) --no-print-directory frugal
	./frugal serve -f

bench: 
	@sh contrib/deps.sh build test bench
	@$(MAKE) --no-print-directory frugal $(B)/tests
	BENCH_ONLY="$(BENCH_ONLY)" python3 tests/bench/bench.py

# The soak (tests/integration/test_soak.py): the plain daemon in an emulated
# container under attack, load, a chaos peer, reloads and SIGKILLs for
# DURATION seconds; SOAK_SEED repeats a run. make check runs 60 s of it.
DURATION ?= 600
soak:
	@sh contrib/deps.sh build test
	@$(MAKE) --no-print-directory frugal $(B)/tests
	cd tests/integration && SOAK_DURATION=$(DURATION) FRUGAL_BIN=$(CURDIR)/frugal python3 test_soak.py
	@# then power cuts, one per 20 s of DURATION (at least 3): the loop-device test, local,
	@# multi-recipient and relayed mail, under load and at rest (root: loop devices and mounts)
	@if [ "$$(id -u)" = 0 ]; then \
	  $(MAKE) --no-print-directory powerloss POWERLOSS_CUTS=$$(( $(DURATION) / 20 > 3 ? $(DURATION) / 20 : 3 )); \
	else echo "soak: power cuts skipped: they need root (loop devices and mounts)"; fi

# The power-loss test at length (root: loop devices and mounts): many cuts,
# alternately under load and at rest, with its negative control.
POWERLOSS_CUTS ?= 30
powerloss:
	@sh contrib/deps.sh build test
	@$(MAKE) --no-print-directory frugal $(B)/nosync/frugal
	cd tests/integration && FRUGAL_POWERLOSS_CUTS=$(POWERLOSS_CUTS) python3 -m unittest -v test_powerloss

# libFuzzer targets. The rooms are built once into a fuzz archive; a target
# links its own fakes ahead of it (FUZZ_EXTRA_<target>), which then stand in
# for the room files they replace. `make fuzz` fuzzes each for FUZZ_SECONDS
# (default 60); `make check` replays each checked-in corpus once.
FUZZ_SECONDS ?= 60
FUZZ_WARN = -Wall -Wextra -Werror -Wno-unused-parameter
FUZZ_OBJ  = $(SRCS:%.c=$(B)/fuzz/obj/%.o)
FUZZ_BIN  = $(FUZZ:%=$(B)/fuzz/%)
FUZZ_EXTRA_fuzz_smtpd_session = tests/fuzz/fake_spool.c
FUZZ_EXTRA_fuzz_smtpd_bdat = tests/fuzz/fake_spool.c
FUZZ_EXTRA_fuzz_spf_eval = tests/fuzz/fake_dns.c

$(B)/fuzz/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	clang $(CPPFLAGS) -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined $(FUZZ_WARN) -c -o $@ $<
$(B)/fuzz/libfrugal.a: $(FUZZ_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(B)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(B)/fuzz/libfrugal.a $(wildcard tests/fuzz/*.h tests/fuzz/fake_*.c tests/fuzz/fuzz_smtpd_session.c)
	clang $(CPPFLAGS) -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $(FUZZ_WARN) -Itests/fuzz \
	  -o $@ $< $(FUZZ_EXTRA_fuzz_$*) $(B)/fuzz/libfrugal.a $(LIBS)

fuzz:
	@sh contrib/deps.sh build fuzz
	@$(MAKE) --no-print-directory $(FUZZ_BIN)
	@set -e; for f in $(FUZZ); do \
	  mkdir -p tests/fuzz/corpus/$$f $(B)/fuzz/corpus-$$f; \
	  echo "fuzz: running $$f for $(FUZZ_SECONDS)s"; \
	  $(B)/fuzz/$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(B)/fuzz/corpus-$$f tests/fuzz/corpus/$$f; \
	done

# sendmail, mailq and newaliases are links to frugal (argv[0] picks the command);
# as root, the accounts frugal and vmail and the group setgid_group (frugal-drop)
# are created when missing (contrib/accounts.sh: on this system, or in a staging
# DESTDIR that has its own etc/passwd), and frugal-postdrop is set-group-ID that
# group, mode 2755 (otherwise installed plain, with a note).
SETGID_GROUP ?= frugal-drop
install: frugal frugal-postdrop
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)/etc/frugal
	install -m 755 frugal $(DESTDIR)$(PREFIX)/sbin/frugal
	ln -sf frugal $(DESTDIR)$(PREFIX)/sbin/sendmail.frugal
	for l in sendmail mailq newaliases; do ln -sf frugal $(DESTDIR)$(PREFIX)/sbin/$$l; done
	install -m 755 frugal-postdrop $(DESTDIR)$(PREFIX)/sbin/frugal-postdrop
	@gid=$$(sh contrib/accounts.sh "$(DESTDIR)" $(SETGID_GROUP)) || exit 1; \
	if [ "$$(id -u)" = 0 ] && [ -n "$$gid" ]; then \
	  chgrp $$gid $(DESTDIR)$(PREFIX)/sbin/frugal-postdrop && \
	  chmod 2755 $(DESTDIR)$(PREFIX)/sbin/frugal-postdrop; \
	else echo "install: frugal-postdrop is not set-group-ID $(SETGID_GROUP) (needs root and the group: groupadd --system $(SETGID_GROUP)); sendmail works for root and mail_owner only"; fi
	install -m 644 contrib/frugal.conf.sample $(DESTDIR)/etc/frugal/frugal.conf.sample
	@# the default alias_maps must exist, or the first start fails on it; an admin's file is never replaced
	[ -e $(DESTDIR)/etc/frugal/aliases ] || install -m 644 contrib/aliases $(DESTDIR)/etc/frugal/aliases
	[ -e $(DESTDIR)/etc/frugal/aliases.cdb ] || ./frugal map -a $(DESTDIR)/etc/frugal/aliases
	if [ "$(PREFIX)" = /usr ]; then install -d $(DESTDIR)/usr/lib && ln -sf ../sbin/frugal $(DESTDIR)/usr/lib/sendmail; fi
	install -d $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 644 doc/frugal.8 $(DESTDIR)$(PREFIX)/share/man/man8/frugal.8
	install -m 644 doc/frugal.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/frugal.conf.5
	@# the service files only into a staging tree or as root; never enabled or started here
	@if [ -n "$(DESTDIR)" ] || [ "$$(id -u)" = 0 ]; then set -e; \
	  install -d $(DESTDIR)/lib/systemd/system $(DESTDIR)/etc/init.d $(DESTDIR)/etc/logrotate.d \
	    $(DESTDIR)/etc/fail2ban/filter.d $(DESTDIR)/etc/fail2ban/jail.d; \
	  sed 's|/usr/sbin/frugal|$(PREFIX)/sbin/frugal|g' contrib/frugal.service > $(DESTDIR)/lib/systemd/system/frugal.service; \
	  chmod 644 $(DESTDIR)/lib/systemd/system/frugal.service; \
	  sed 's|^FRUGAL=/usr/sbin/frugal|FRUGAL=$(PREFIX)/sbin/frugal|' contrib/frugal.init > $(DESTDIR)/etc/init.d/frugal; \
	  chmod 755 $(DESTDIR)/etc/init.d/frugal; \
	  install -m 644 contrib/frugal.logrotate $(DESTDIR)/etc/logrotate.d/frugal; \
	  install -m 644 contrib/fail2ban/filter.d/frugal.conf $(DESTDIR)/etc/fail2ban/filter.d/frugal.conf; \
	  install -m 644 contrib/fail2ban/jail.d/frugal.conf $(DESTDIR)/etc/fail2ban/jail.d/frugal.conf; \
	else echo "install: service files (systemd unit, init script, logrotate, fail2ban) need root or DESTDIR; skipped"; fi

# The README's promises on a fresh Debian 12 (debootstrap + systemd-nspawn;
# root, 4 to 7 minutes; FRESH_CHECK=full adds the whole `make check` in it).
# Not part of `make check`.
fresh-check:
	@if [ "$$(id -u)" != 0 ]; then echo "fresh-check: needs root (debootstrap, mounts, systemd-nspawn boot a container)"; exit 1; fi
	bash contrib/fresh-debian.sh

clean:
	rm -rf build build-* frugal frugal-postdrop frugal-data
