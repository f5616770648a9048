/* Fuzz the header decoders with one input each run: the whole input as a Subject, as an
 * address list, as a header block, as two kinds of date. Beyond "no crash", it checks the
 * contract of mime.h: every returned string is safe UTF-8 within its bound, and a bounded
 * result is the unbounded one cut on a character boundary. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mime.h"

#define CHECK(x)                                                                 \
	do {                                                                     \
		if (!(x)) {                                                      \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,   \
				__LINE__, #x);                                   \
			abort();                                                 \
		}                                                                \
	} while (0)

/* An independent validator: strict UTF-8, none of the stripped code points, spaces
 * collapsed and trimmed (unless addresses, which have none at all). */
static void check_safe(const char *s, size_t max, int no_space)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s), i = 0;
	uint32_t prev = 0;

	CHECK(n <= max);
	while (i < n) {
		uint32_t cp, min;
		size_t k;

		if (p[i] < 0x80) {
			cp = p[i];
			k = 1;
			min = 0;
		} else if ((p[i] & 0xE0) == 0xC0) {
			cp = p[i] & 0x1F;
			k = 2;
			min = 0x80;
		} else if ((p[i] & 0xF0) == 0xE0) {
			cp = p[i] & 0x0F;
			k = 3;
			min = 0x800;
		} else {
			CHECK((p[i] & 0xF8) == 0xF0);
			cp = p[i] & 0x07;
			k = 4;
			min = 0x10000;
		}
		CHECK(i + k <= n);
		for (size_t j = 1; j < k; j++) {
			CHECK((p[i + j] & 0xC0) == 0x80);
			cp = cp << 6 | (p[i + j] & 0x3F);
		}
		CHECK(cp >= min && cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF));
		CHECK(cp >= 0x20 && !(cp >= 0x7F && cp <= 0x9F));
		CHECK(!(cp >= 0x2028 && cp <= 0x202E) && !(cp >= 0x2066 && cp <= 0x2069));
		if (cp == ' ') {
			CHECK(!no_space);
			CHECK(i > 0 && i + 1 < n && prev != ' ');
		}
		prev = cp;
		i += k;
	}
}

static void fuzz_decode(const char *in, size_t size, size_t max)
{
	char *full = mime_decode_header(in, size, SIZE_MAX);
	char *cut = mime_decode_header(in, size, max);
	char *san = mime_sanitize_utf8(in, size, max);

	CHECK(full && cut && san);
	check_safe(full, SIZE_MAX, 0);
	check_safe(cut, max, 0);
	check_safe(san, max, 0);
	if (strcmp(full, cut) != 0) {
		/* Cut: a prefix of the full text, then "…" when there is room for it. */
		size_t n = strlen(cut);

		if (max >= 3) {
			CHECK(n >= 3 && memcmp(cut + n - 3, "\xe2\x80\xa6", 3) == 0);
			n -= 3;
		}
		CHECK(n < strlen(full) && memcmp(cut, full, n) == 0);
	}
	free(full);
	free(cut);
	free(san);
}

static void fuzz_addresses(const char *in, size_t size)
{
	struct mime_address *a = NULL;
	size_t n = 0;
	int r = mime_parse_address_list(in, size, 16, &a, &n);

	CHECK(r >= 0 && (size_t)r == n && n <= 16);
	CHECK(n > 0 || !a);
	for (size_t i = 0; i < n; i++) {
		CHECK(a[i].address);
		check_safe(a[i].address, MIME_ADDRESS_MAX, 1);
		if (a[i].name) {
			CHECK(a[i].name[0]);
			check_safe(a[i].name, MIME_NAME_MAX, 0);
		} else {
			CHECK(a[i].address[0]);
		}
	}
	CHECK(!mime_address_list_free(a, n));
}

static void fuzz_header_block(const char *in, size_t size)
{
	static const char *const names[] = { "Subject", "from", "X" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char *v = NULL;
		int r = mime_header_get(in, size, names[i], &v);

		CHECK(r == 0 || r == -ENOENT);
		CHECK((r == 0) == (v != NULL));
		if (v) {
			CHECK(strlen(v) <= size);
			free(mime_decode_header(v, strlen(v), 256));
		}
		free(v);
	}
}

static void fuzz_dates(const char *in, size_t size)
{
	char *s = malloc(size + 1), buf[32];
	time_t t;

	CHECK(s);
	memcpy(s, in, size);
	s[size] = '\0';
	if (mime_parse_rfc5322_date(s, &t) == 0) {
		mime_format_rfc3339(t, buf);
		CHECK(strlen(buf) == 20);
	}
	if (mime_parse_internaldate(s, &t) == 0) {
		mime_format_rfc3339(t, buf);
		CHECK(strlen(buf) == 20);
	}
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	size_t max;

	if (size > 256 * 1024) /* long enough to find quadratic behaviour, short enough to run */
		return 0;
	/* The bound comes from the input so that cuts land everywhere, down to 0. */
	max = size > 0 ? data[size - 1] : 16;
	fuzz_decode(in, size, max);
	fuzz_addresses(in, size);
	fuzz_header_block(in, size);
	fuzz_dates(in, size);
	return 0;
}
