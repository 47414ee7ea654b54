#!/bin/sh
# contrib/accounts.sh DESTDIR GROUP: what `make install` runs for the accounts
# of the recommended set-up (PRODUCT.md: mail_owner frugal, virtual_mailbox_owner
# vmail) and sendmail's group GROUP (setgid_group), each created only when
# missing, as system accounts without a home or a shell. As root only. With an
# empty DESTDIR on this system (getent, so NSS accounts count); with a staging
# DESTDIR only when it has its own etc/passwd and etc/group (useradd/groupadd
# --prefix write there, never to this system's files).
# Prints GROUP's gid on stdout when it exists at the end; nothing otherwise.
set -e
dest=$1 group=$2
if [ "$(id -u)" != 0 ]; then
	echo "install: the accounts frugal and vmail and the group $group need root: skipped" >&2
	exit 0
fi
if [ -n "$dest" ] && ! [ -f "$dest/etc/passwd" ] || [ -n "$dest" ] && ! [ -f "$dest/etc/group" ]; then
	echo "install: $dest has no etc/passwd and etc/group: accounts not created" >&2
	exit 0
fi
has() {   # has passwd|group NAME
	if [ -n "$dest" ]; then grep -q "^$2:" "$dest/etc/$1"; else getent "$1" "$2" >/dev/null; fi
}
prefix=${dest:+--prefix $dest}
has group "$group" || groupadd --system $prefix "$group"
for u in frugal vmail; do
	has passwd "$u" || useradd --system $prefix --user-group --no-create-home \
	    --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
done
if [ -n "$dest" ]; then
	awk -F: -v g="$group" '$1 == g { print $3 }' "$dest/etc/group"
else
	getent group "$group" | cut -d: -f3
fi
