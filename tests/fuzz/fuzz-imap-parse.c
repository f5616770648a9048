/* Fuzz the IMAP response parser: the input is fed in chunks whose sizes come from its
 * first bytes, every response is run through the typed decoders, and the parser's
 * promises are checked: bounded memory, exact leftover, poisoning. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "imap/fetch.h"
#include "imap/parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void use_response(const struct imap_response *r)
{
	struct imap_fetch f;
	uint64_t caps;
	uint32_t u32;

	if (imap_fetch_parse(r, &f) >= 0) {
		assert(f.seq > 0);
		if (f.header)
			assert(f.header[f.header_len] == '\0');
		imap_fetch_done(&f);
	}
	if (r->name && strcmp(r->name, "CAPABILITY") == 0)
		(void)imap_capabilities_parse(r->args, r->n_args, &caps);
	if (r->code)
		(void)imap_capabilities_parse(r->code_args, r->n_code_args, &caps);
	for (size_t i = 0; i < r->n_args; i++)
		(void)imap_value_to_u32(&r->args[i], false, &u32);
	if (r->kind == IMAP_RESP_TAGGED)
		assert(r->tag && r->status >= IMAP_STATUS_OK && r->status <= IMAP_STATUS_BAD);
	if (r->status != IMAP_STATUS_NONE || r->kind == IMAP_RESP_CONTINUATION)
		assert(r->text);
}

/* FNV-1a over everything a response carries, to compare two parses of the same bytes. */
static uint64_t hash_bytes(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * UINT64_C(0x100000001b3);
	return h;
}

static uint64_t hash_str(uint64_t h, const char *s)
{
	return s ? hash_bytes(h, s, strlen(s) + 1) : hash_bytes(h, "\xff", 1);
}

static uint64_t hash_values(uint64_t h, const struct imap_value *v, size_t n)
{
	h = hash_bytes(h, &n, sizeof(n));
	for (size_t i = 0; i < n; i++) {
		h = hash_bytes(h, &v[i].type, sizeof(v[i].type));
		if (v[i].str)
			h = hash_bytes(h, v[i].str, v[i].len);
		h = hash_bytes(h, &v[i].num, sizeof(v[i].num));
		h = hash_values(h, v[i].items, v[i].n_items);
	}
	return h;
}

static uint64_t hash_response(uint64_t h, const struct imap_response *r)
{
	h = hash_bytes(h, &r->kind, sizeof(r->kind));
	h = hash_bytes(h, &r->status, sizeof(r->status));
	h = hash_str(h, r->tag);
	h = hash_str(h, r->code);
	h = hash_values(h, r->code_args, r->n_code_args);
	h = hash_str(h, r->text);
	h = hash_bytes(h, &r->number, sizeof(r->number));
	h = hash_str(h, r->name);
	return hash_values(h, r->args, r->n_args);
}

/* The same bytes fed whole must give the same responses and the same end. */
static void check_whole(const uint8_t *data, size_t size, uint64_t want_hash, int want_end,
			size_t want_left)
{
	struct imap_parser *p = imap_parser_new(NULL);
	const struct imap_response *r;
	uint64_t h = 0xcbf29ce484222325;
	int k;

	assert(p);
	k = imap_parser_feed(p, data, size);
	while (k >= 0 && (k = imap_parser_next(p, &r)) > 0)
		h = hash_response(h, r);
	assert(k == want_end);
	assert(h == want_hash);
	assert(imap_parser_buffered(p) == want_left);
	imap_parser_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t h = 0xcbf29ce484222325;
	static const struct imap_limits small = {
		.max_line = 64, .max_literal = 32, .max_depth = 3, .max_response = 256,
	};
	const struct imap_response *r;
	struct imap_parser *p;
	size_t pos = 2, chunk;
	int k = 0;

	if (size < 2)
		return 0;
	/* byte 0: chunk size (0 = everything at once); byte 1: limits and reset */
	chunk = data[0] ? data[0] : size;
	p = imap_parser_new(data[1] & 1 ? &small : NULL);
	assert(p);
	while (pos < size && k >= 0) {
		size_t n = size - pos < chunk ? size - pos : chunk;
		k = imap_parser_feed(p, data + pos, n);
		pos += n;
		while (k >= 0 && (k = imap_parser_next(p, &r)) > 0) {
			use_response(r);
			h = hash_response(h, r);
			/* STARTTLS-style: drop what followed, sometimes */
			if ((data[1] & 2) && r->kind == IMAP_RESP_TAGGED)
				imap_parser_reset(p);
		}
		assert(imap_parser_buffered(p) <=
		       (data[1] & 1 ? 256 + 64 : 64 * 1024 + 32 * 1024 * 1024));
	}
	if (k < 0) {
		assert(imap_parser_error(p));
		assert(imap_parser_next(p, &r) == k);
		assert(imap_parser_feed(p, "a1 OK\r\n", 7) == k);
		assert(imap_parser_memory(p) == 0);
	}
	if ((data[1] & 3) == 0)
		check_whole(data + 2, size - 2, h, k, imap_parser_buffered(p));
	imap_parser_free(p);
	return 0;
}
