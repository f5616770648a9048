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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
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
	imap_parser_free(p);
	return 0;
}
