#!/bin/bash
# contrib/fresh-debian.sh (`make fresh-check`): the README's promises on a
# fresh Debian 12, end to end. It debootstraps a minimal bookworm (what a
# container image or a minimal install has: no make, no git, no swaks, no
# man-db, no rsyslog), boots it under systemd-nspawn with its own systemd,
# copies a clone of this repository's committed HEAD into /root, and runs the
# README's commands in it as its root:
#   a) "Trying it": make run, a message to 127.0.0.1:2525, the Maildir file, stop;
#   b) "From nothing to a working mail server", in a second clean clone:
#      deps.sh build, make -j2, make install PREFIX=/usr, frugal wizard (an
#      answers file: example.org, a virtual mailbox with a password, a
#      self-signed certificate, submission on), systemctl enable --now frugal,
#      swaks to port 25 and with AUTH over 587/STARTTLS, the mailbox, then
#      frugal limits/status/queue list and the journal;
#   c) the first part of `make check` (its dependency step and the build);
#      FRESH_CHECK=full runs the whole `make check` (about 20 minutes more).
# Uncommitted changes are not tested: the clone is of HEAD.
#
# The container shares this machine's network namespace, so apt reaches the
# mirror as the host does and the ports it uses (25, 465, 587, 2525 on
# 127.0.0.1) must be free here: checked first. Every step is bounded in time;
# at the end the container is halted, a tmpfs this script mounted is unmounted
# and the work directory under /var/tmp/frugal-fresh/ is removed
# (FRESH_KEEP=1 keeps it for a look). Prints PASS/FAIL/SKIP per step with its
# seconds; exits 0 only when every step passed.
set -u
export LC_ALL=C

if [ "$(id -u)" != 0 ]; then
	echo "fresh-check: needs root (debootstrap, chroot mounts and systemd-nspawn boot a container); skipped" >&2
	exit 2
fi
for t in debootstrap systemd-nspawn nsenter git ss timeout; do
	command -v "$t" >/dev/null || { echo "fresh-check: $t is missing (apt-get install debootstrap systemd-container git iproute2)" >&2; exit 2; }
done

REPO=${FRESH_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
SHA=$(git -C "$REPO" rev-parse HEAD) || exit 2
BASE=/var/tmp/frugal-fresh
PW='fresh horse 14'
mkdir -p "$BASE"
WORK=$(mktemp -d "$BASE/run.XXXXXX") || exit 2
ROOTFS=$WORK/root
NSPAWN_PID=
LEADER=
MOUNTED_PROP=
RESULTS=()
FAILED=0

# the Debian mirror this machine's apt uses (deb822 or one-line format)
mirror() {
	local want=$1 u
	u=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
		sed -n -e 's/^URIs:[[:space:]]*//p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' |
		grep -E "/$want/?\$" | head -n 1)
	echo "${u%/}"
}
MIRROR=${FRESH_MIRROR:-$(mirror debian)}
SECURITY=${FRESH_SECURITY_MIRROR:-$(mirror debian-security)}
[ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian

log() { printf '%s fresh-check: %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# step NAME SECONDS FUNCTION: run it bounded, its output in $WORK/NAME.log
step() {
	local name=$1 limit=$2 fn=$3 t0 t rc
	if [ "$FAILED" != 0 ] && [ "${4:-}" != always ]; then
		RESULTS+=("SKIP  $(printf '%-18s' "$name")      (an earlier step failed)")
		return 1
	fi
	log "$name ..."
	t0=$(date +%s)
	( "$fn" ) >"$WORK/$name.log" 2>&1 &
	local pid=$! waited=0
	while kill -0 "$pid" 2>/dev/null; do
		if [ "$waited" -ge "$limit" ]; then
			pkill -TERM -P "$pid" 2>/dev/null; kill -TERM "$pid" 2>/dev/null
			echo "fresh-check: $name: timed out after ${limit}s" >>"$WORK/$name.log"
			break
		fi
		sleep 1; waited=$((waited + 1))
	done
	wait "$pid"; rc=$?
	t=$(($(date +%s) - t0))
	if [ "$rc" = 0 ]; then
		RESULTS+=("PASS  $(printf '%-18s %5ds' "$name" "$t")")
		log "$name: PASS (${t}s)"
	else
		RESULTS+=("FAIL  $(printf '%-18s %5ds' "$name" "$t")  see $name.log")
		log "$name: FAIL (${t}s, exit $rc); the end of its log:"
		tail -n 25 "$WORK/$name.log" | sed 's/^/    /'
		FAILED=1
	fi
	return "$rc"
}

# inside the container, as its root in a login-like environment
cin() {
	nsenter -t "$LEADER" -a env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		bash -c "$1"
}

# poll a condition (a shell command inside the container) with a deadline
cin_wait() {
	local what=$1 limit=$2 cond=$3 i=0
	while ! cin "$cond" >/dev/null 2>&1; do
		i=$((i + 1))
		if [ "$i" -gt $((limit * 5)) ]; then echo "timed out after ${limit}s waiting for $what"; return 1; fi
		sleep 0.2
	done
	echo "ok: $what"
}

cleanup() {
	local i
	if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
		log "halting the container"
		kill -TERM "$NSPAWN_PID"            # nspawn asks the container's systemd to halt
		for i in $(seq 600); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$NSPAWN_PID" 2>/dev/null && kill -KILL "$NSPAWN_PID"
		wait "$NSPAWN_PID" 2>/dev/null
	fi
	[ -n "$MOUNTED_PROP" ] && umount -l /run/systemd/nspawn
	if [ "$FAILED" != 0 ] && [ "${FRESH_KEEP:-0}" = 1 ] || [ "${FRESH_KEEP:-0}" = 2 ]; then
		log "kept $WORK (FRESH_KEEP)"
	elif findmnt -rn -o TARGET | grep -q "^$WORK"; then
		log "something is still mounted under $WORK; not removing it"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

s_preflight() {
	local p busy=
	for p in 25 465 587 2525; do
		ss -Hltn "sport = :$p" | grep -q . && busy="$busy $p"
	done
	[ -z "$busy" ] || { echo "ports in use on this machine (the container shares its network):$busy"; return 1; }
	echo "repository $REPO at $SHA; mirror $MIRROR; security ${SECURITY:-none}"
}

s_debootstrap() {
	debootstrap --variant=minbase --include=systemd-sysv,dbus bookworm "$ROOTFS" "$MIRROR" || return 1
	{
		echo "deb $MIRROR bookworm main"
		echo "deb $MIRROR bookworm-updates main"
		[ -n "$SECURITY" ] && echo "deb $SECURITY bookworm-security main"
	} >"$ROOTFS/etc/apt/sources.list"
	# journald wants an id of its own; the host name the wizard's default shows
	od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$ROOTFS/etc/machine-id"; echo >>"$ROOTFS/etc/machine-id"
	echo fresh >"$ROOTFS/etc/hostname"
	du -sh "$ROOTFS"
}

s_clone() {
	local d
	for d in frugal frugal-from-nothing; do
		git clone -q --no-hardlinks "$REPO" "$ROOTFS/root/$d" && git -C "$ROOTFS/root/$d" checkout -q "$SHA" || return 1
		rm -rf "$ROOTFS/root/$d/.git"       # as from a release tarball: no git on a fresh machine
	done
	echo "cloned $SHA twice"
}

s_boot() {
	local i prop=/run/systemd/nspawn state
	mkdir -p "$prop"
	echo "started nspawn $NSPAWN_PID"
	for i in $(seq 300); do
		LEADER=$(pgrep -P "$NSPAWN_PID" -x systemd | head -n 1)
		[ -n "$LEADER" ] && break
		kill -0 "$NSPAWN_PID" || { cat "$WORK/console"; return 1; }
		sleep 0.2
	done
	[ -n "$LEADER" ] || { echo "no systemd in the container"; cat "$WORK/console"; return 1; }
	echo "$LEADER" >"$WORK/leader"
	for i in $(seq 600); do
		state=$(cin "systemctl is-system-running" 2>/dev/null)
		case "$state" in running|degraded) echo "booted: $state"; cin "systemctl --failed --no-legend"; return 0 ;; esac
		sleep 0.2
	done
	echo "not booted after 120 s: $state"; cat "$WORK/console"; return 1
}

# (a) README "Trying it"; a minimal system has no make (the README says so)
s_make() { cin "apt-get update -q >/dev/null && apt-get install -y -q make >/dev/null && make --version | head -n 1"; }
s_make_run() {
	# as an admin types it, in one terminal; the daemon stays in the foreground
	# (this process outlives the step; `frugal stop` ends it in run-stop)
	nsenter -t "$LEADER" -a env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		bash -c 'cd /root/frugal && exec make run' 2>&1 |
		while IFS= read -r l; do printf '%s %s\n' "$(date +%s)" "$l"; done >"$WORK/make-run.out" &
	local p=$! i=0 t0
	t0=$(date +%s)
	while ! ss -Hltn 'sport = :2525' | grep -q .; do
		if ! kill -0 "$p" 2>/dev/null; then
			wait "$p"; cat "$WORK/make-run.out"; echo "make run exited ($?) without serving on 2525"; return 1
		fi
		i=$((i + 1))
		[ "$i" -le 7000 ] || { cat "$WORK/make-run.out"; echo "not serving after 1400 s"; return 1; }
		sleep 0.2
	done
	cat "$WORK/make-run.out"
	# the phases, from the time stamps of make run's lines
	awk -v t0="$t0" -v t1="$(date +%s)" '
		!d && /deps: installing/ { d = $1 } !c && / cc / { c = $1 } !r && /frugal serve -f/ { r = $1 }
		END { printf "phases: deps %ds, build %ds, start %ds\n", (c ? c : t0) - t0, (r ? r : t1) - (c ? c : t0), t1 - (r ? r : t1) }' \
		"$WORK/make-run.out"
	echo "ok: listening on 127.0.0.1:2525"
}

s_run_mail() {
	cin "apt-get install -y -q swaks >/dev/null" || return 1
	cin "cd /root/frugal && swaks --server 127.0.0.1 --port 2525 --to you@localhost --header 'Subject: fresh-a'" || return 1
	cin_wait "the message in frugal-data/mail/you/Maildir/new/" 60 \
		"ls /root/frugal/frugal-data/mail/you/Maildir/new/ | grep -q ." || return 1
	cin "ls -l /root/frugal/frugal-data/mail/you/Maildir/new/ && grep -l 'Subject: fresh-a' /root/frugal/frugal-data/mail/you/Maildir/new/*"
}

s_run_stop() {
	cin "cd /root/frugal && ./frugal stop" || return 1
	cin_wait "port 2525 closed" 60 "! ss -Hltn 'sport = :2525' | grep -q ." || return 1
	tail -n 5 "$WORK/make-run.out"
}

# (b) README "From nothing to a working mail server", in the second clean tree
s_deps() { cin "cd /root/frugal-from-nothing && sh contrib/deps.sh build"; }
s_build() { cin "cd /root/frugal-from-nothing && make -j2"; }
s_install() { cin "cd /root/frugal-from-nothing && make install PREFIX=/usr && ls -l /usr/sbin/frugal /usr/sbin/frugal-postdrop && id frugal && id vmail"; }

s_wizard() {
	cat >"$ROOTFS/root/wizard-answers" <<EOF
hostname = mx.example.org
domains = example.org
mailbox = you@example.org $PW
delivery = virtual
tls_cert = self-signed
smtpd_listen = 0.0.0.0:25
submission = yes
confirm = yes
EOF
	cin "frugal wizard --answers /root/wizard-answers && cat /etc/frugal/frugal.conf"
}

s_systemctl() {
	cin "systemctl enable --now frugal" || { cin "journalctl -u frugal --no-pager | tail -n 30"; return 1; }
	cin "systemctl is-active frugal" || return 1
	ss -Hltn | grep -E ":(25|465|587) "
}

s_mail_25() {
	cin "swaks --server 127.0.0.1 --to you@example.org --header 'Subject: fresh-25'" || return 1
	cin_wait "the message in you@example.org's Maildir" 60 \
		"grep -rl 'Subject: fresh-25' /var/mail/vhosts/example.org/you/new/" || return 1
	cin "ls -ln /var/mail/vhosts/example.org/you/new/"
}

s_mail_587() {
	# the README's submission line, with the password given (swaks would ask) and the
	# envelope sender the login owns
	cin "swaks --server 127.0.0.1 --port 587 -tls --auth-user you@example.org --auth-password '$PW' \
		--from you@example.org --to someone@elsewhere.example" || return 1
	cin "swaks --server 127.0.0.1 --port 587 -tls --auth-user you@example.org --auth-password '$PW' \
		--from you@example.org --to you@example.org --header 'Subject: fresh-587'" || return 1
	cin_wait "the submitted message in the Maildir" 60 \
		"grep -rl 'Subject: fresh-587' /var/mail/vhosts/example.org/you/new/" || return 1
	# a wrong password is refused
	if cin "swaks --server 127.0.0.1 --port 587 -tls --auth-user you@example.org --auth-password wrong \
		--from you@example.org --to you@example.org"; then echo "a wrong password was accepted"; return 1; fi
	echo "ok: wrong password refused"
}

s_tools() {
	cin "frugal limits && frugal status && frugal queue list" || return 1
	cin "journalctl -u frugal --no-pager -o short | tail -n 20"
	cin "command -v man >/dev/null && man -P cat frugal | head -n 5 || echo 'man: not installed (man-db is not in a minimal Debian)'"
	cin "ls -l /var/log/mail.log 2>&1 || echo 'no /var/log/mail.log: no syslog daemon on a fresh Debian 12; the log is in the journal'"
}

s_check_deps() {
	if [ "${FRESH_CHECK:-deps}" = full ]; then
		# from a directory nobody may enter, and a TMPDIR that is not the container's nosuid
		# tmpfs, as the README says (tests run the binary and the set-group-ID helper as nobody)
		cin "cp -a /root/frugal-from-nothing /usr/local/src/frugal && cd /usr/local/src/frugal && TMPDIR=/var/tmp make check"
	else
		# what `make check` does before it runs the tests
		cin "cd /root/frugal-from-nothing && make deps && make -j2 all build/nosync/frugal build/asan/frugal"
	fi
}

T0=$(date +%s)
step preflight 30 s_preflight
step debootstrap 1500 s_debootstrap
step clone 300 s_clone
if [ "$FAILED" = 0 ]; then
	prop=/run/systemd/nspawn
	mkdir -p "$prop"
	if [ "$(stat -f -c %T "$prop")" != tmpfs ]; then
		# nspawn refuses a propagation directory that is not on a tmpfs
		mount -t tmpfs tmpfs "$prop" && MOUNTED_PROP=1
	fi
	systemd-nspawn -q -D "$ROOTFS" --machine="frugal-fresh-$$" --link-journal=no --register=no \
		--keep-unit -b --console=pipe </dev/null >"$WORK/console" 2>&1 &
	NSPAWN_PID=$!
fi
step boot 150 s_boot && LEADER=$(cat "$WORK/leader")
step apt-make 300 s_make
step make-run 1500 s_make_run
step run-mail 180 s_run_mail
step run-stop 120 s_run_stop
FAILED_A=$FAILED; FAILED=0   # (b) does not depend on (a)
[ -n "$LEADER" ] || FAILED=1
step deps-build 900 s_deps
step build 900 s_build
step install 300 s_install
step wizard 120 s_wizard
step systemctl 120 s_systemctl
step mail-25 120 s_mail_25
step mail-587 180 s_mail_587
step tools 120 s_tools
[ "${FRESH_CHECK:-deps}" = full ] && limit=3600 || limit=1800
step make-check-deps "$limit" s_check_deps
[ "$FAILED_A" = 0 ] || FAILED=1

echo
echo "fresh-check summary ($SHA, $(($(date +%s) - T0)) s in all; the logs in $WORK are removed unless FRESH_KEEP=1):"
printf '  %s\n' "${RESULTS[@]}"
[ "$FAILED" = 0 ] && echo "fresh-check: PASS" || echo "fresh-check: FAIL"
exit "$FAILED"
