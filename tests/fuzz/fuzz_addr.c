/*
 * tests/fuzz/fuzz_addr.c: libFuzzer target for the address rewriting of
 * issue 12: the extension split (map_addr_ext, recipient_delimiter), the
 * extension-aware lookup order (map_list_lookup_ext), the extension carried
 * to virtual alias results, canonical maps and masquerading
 * (queue/cleanup.c), classification and expansion (queue/resolve.c); and
 * the header address-list scanner and rewrite (cleanup_addr_scan,
 * cleanup_header). The input is one address as a client could give it
 * (bounded like smtpd's), and the same bytes as a header's value (bounded
 * like smtpd's hold); the tables are fixed and exercise every key form.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "conf/conf.h"
#include "conf/map.h"
#include "queue/queue.h"
#include "queue/queue_int.h"

static const char cf[] =
	"myhostname = mx.example.com\n"
	"mydestination = $myhostname, localhost\n"
	"recipient_delimiter = +-\n"
	"alias_maps = inline:{ info=alice, { alice+x = bob }, list=alice, owner-list=bob }\n"
	"local_recipient_maps = inline:{ alice=1, bob=1 } $alias_maps\n"
	"local_mailbox_base = /nonexistent/mail\n"
	"virtual_alias_maps = inline:{ info@v.example=alice, { two@v.example = a@x.example, b@y.example },"
	" @c.example=alice@mx.example.com, self@v.example=self@v.example }\n"
	"virtual_mailbox_domains = vh.example\n"
	"virtual_mailbox_maps = inline:{ u@vh.example=vh.example/u/, @vh.example=vh.example/all/ }\n"
	"sender_canonical_maps = inline:{ alice=a@corp.example, @old.example=@new.example, l1@x=l2@x, l2@x=l1@x }\n"
	"recipient_canonical_maps = inline:{ @mx.example.com=@corp.example }\n"
	"masquerade_domains = !lab.example.com, example.com\n";

/* every span the scanner reports lies inside the value, in order */
struct scan_check {
	size_t len, last;
};

static int check_span(void *arg, size_t a, size_t b)
{
	struct scan_check *sc = arg;

	if (a >= b || b > sc->len || a < sc->last)
		__builtin_trap();
	sc->last = b;
	return 0;
}

static struct conf *c;          /* kept for the process's life, as the tables */
static struct resolver *r;

static void headers(const uint8_t *data, size_t size)
{
	static char hdr[4096 + 8], out[4096 + 1024];
	struct scan_check sc = { size, 0 };
	int rc;

	if (size > 4096)
		return;
	(void)cleanup_addr_scan((const char *)data, size, check_span, &sc);
	memcpy(hdr, "To:", 3);
	memcpy(hdr + 3, data, size);
	rc = cleanup_header(r, CLEANUP_HDR_RECIPIENT, hdr, size + 3, out, sizeof out);
	if (rc == 1 && strlen(out) >= sizeof out)
		__builtin_trap();
	memcpy(hdr, "Fr:", 3);
	(void)cleanup_header(r, CLEANUP_HDR_SENDER, hdr, size + 3, out, 40);   /* little room */
	(void)cleanup_header_class((const char *)data, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char addr[321], out[512], small[16];
	struct resolve_result res;
	struct target_list l;
	size_t ext;

	if (r == NULL) {
		struct conf_diags d = { 0 };
		c = conf_load_text(cf, "fuzz.cf", &d);
		char err[256];

		conf_diags_free(&d);
		if (c == NULL || (r = resolver_new(c, err, sizeof err)) == NULL)
			__builtin_trap();
	}
	headers(data, size);
	if (size >= sizeof addr)
		return 0;
	memcpy(addr, data, size);
	addr[size] = '\0';
	if (strlen(addr) != size || strchr(addr, '\n'))
		return 0;   /* smtpd's parser never passes these on */
	ext = map_addr_ext(addr, "+-");
	if (ext >= size && size)
		__builtin_trap();
	(void)resolver_classify(r, addr, &res);
	memset(&l, 0, sizeof l);
	if (resolver_expand(r, addr, &l) == 0)
		target_list_free(&l);
	if (cleanup_sender(r, addr, out, sizeof out) >= 0 && strlen(out) >= sizeof out)
		__builtin_trap();
	(void)cleanup_recipient(r, addr, out, sizeof out);
	(void)cleanup_sender(r, addr, small, sizeof small);   /* results that do not fit */
	return 0;
}
