#!/bin/sh
# contrib/deps.sh GROUP...: install the Debian packages a make target needs,
# only those missing, non-interactively. Groups: build test bench fuzz valgrind.
# Unprivileged without the packages: say what is missing and fail.
set -e
pkgs=""
for g in "$@"; do
	case "$g" in
	# libc6-dev is only a Recommends of gcc (not installed with --no-install-recommends); check because
	# make's default target also builds the unit tests
	build) pkgs="$pkgs gcc libc6-dev make pkg-config libev-dev libcdb-dev libssl-dev libc-ares-dev libcrypt-dev check ca-certificates libopendkim-dev" ;;
	test)  pkgs="$pkgs check python3 swaks libnet-ssleay-perl openssl iproute2 passwd e2fsprogs mount fail2ban dovecot-core dovecot-lmtpd postfix pflogsumm php-cli groff-base man-db logrotate systemd-container psmisc python3-dkim python3-dnspython" ;;
	bench) pkgs="$pkgs postfix python3" ;;
	fuzz)  pkgs="$pkgs clang libclang-rt-14-dev" ;;
	valgrind) pkgs="$pkgs valgrind" ;;   # make valgrind-check (tests/valgrind_check.py)
	esac
	case "$g" in build) pkgs="$pkgs libspf2-dev" ;; esac   # check_spf (smtpd/spf.c): libspf2 and its headers
	case "$g" in build) pkgs="$pkgs publicsuffix" ;; esac   # DMARC's organizational domains (smtpd/dmarc.c)
done
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing:$missing"
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
	echo "deps: missing packages:$missing (run as root: apt-get install$missing)" >&2; exit 1
fi
case "$missing" in *postfix*)
	echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections ;;
esac
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
