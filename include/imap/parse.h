/* IMAP response parser: sans-I/O, incremental, bounded.
 *
 * Bytes go in with imap_parser_feed() in any chunking; complete responses come out of
 * imap_parser_next(), one at a time. The parser never reads a socket or a clock.
 *
 * Ownership: a response and every value, string and array it points to live in the
 * parser's per-response arena. They stay valid until the next call of imap_parser_next(),
 * imap_parser_feed(), imap_parser_reset() or imap_parser_free(), whichever comes first.
 *
 * Errors poison the parser: once any call returned an error, every later call of
 * imap_parser_feed()/imap_parser_next() returns the same error and the connection must be
 * dropped. Error codes:
 *   -EBADMSG   syntax error
 *   -E2BIG     a line longer than max_line, or lists nested deeper than max_depth
 *   -EMSGSIZE  a literal larger than max_literal, or a response larger than max_response
 *   -EPROTO    a protocol violation (a server may not send a non-synchronizing "{n+}")
 *   -ENOBUFS   imap_parser_feed() was given more than the limits allow to be buffered
 *   -ENOMEM
 *
 * Memory: the input buffer never holds more than one response plus what was fed after it
 * (at most max_response + max_line bytes); a literal's announced size is checked against
 * max_literal before anything is allocated for it; after a response is consumed, large
 * buffers are released, so an idle parser costs a few hundred bytes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct imap_limits {
	size_t max_line;     /* one line, CRLF included, literal bytes excluded */
	size_t max_literal;  /* one literal's announced size */
	unsigned max_depth;  /* list nesting; at most IMAP_MAX_DEPTH_CAP */
	size_t max_response; /* a whole response: all its lines and literals */
};
#define IMAP_MAX_DEPTH_CAP 256U

/* line 64 KiB, literal 16 MiB, depth 16, response 32 MiB */
extern const struct imap_limits imap_limits_default;

enum imap_value_type {
	IMAP_VAL_ATOM,
	IMAP_VAL_NUMBER,
	IMAP_VAL_STRING,
	IMAP_VAL_NIL,
	IMAP_VAL_LIST,
};

struct imap_value {
	enum imap_value_type type;
	/* ATOM, STRING (quoted or literal, unescaped), NUMBER (its digits): NUL-terminated;
	 * a literal may also contain NUL bytes, so trust len. NULL for NIL and LIST. */
	const char *str;
	size_t len;
	uint64_t num; /* NUMBER */
	struct imap_value *items; /* LIST */
	size_t n_items;
	bool literal; /* STRING that came as a literal ({n} or ~{n}) */
};

enum imap_response_kind {
	IMAP_RESP_TAGGED,
	IMAP_RESP_UNTAGGED,
	IMAP_RESP_CONTINUATION,
};

enum imap_status {
	IMAP_STATUS_NONE, /* untagged data, or a continuation */
	IMAP_STATUS_OK,
	IMAP_STATUS_NO,
	IMAP_STATUS_BAD,
	IMAP_STATUS_BYE,
	IMAP_STATUS_PREAUTH,
};

struct imap_response {
	enum imap_response_kind kind;
	const char *tag; /* TAGGED only, else NULL */
	enum imap_status status; /* tagged, or untagged OK/NO/BAD/BYE/PREAUTH */

	/* Status responses and continuations: "[CODE args] text". code is upper-cased or NULL.
	 * Arguments that do not tokenize (unknown codes are free text up to "]") are kept as
	 * one IMAP_VAL_STRING with the raw text and code_args_raw set. */
	const char *code;
	struct imap_value *code_args;
	size_t n_code_args;
	bool code_args_raw;
	const char *text; /* never NULL for status responses and continuations; may be "" */

	/* Untagged data: "* [number] NAME args...". name is upper-cased; NULL for status
	 * responses and continuations. FETCH's args are one LIST of item/value pairs. */
	uint32_t number;
	bool has_number;
	const char *name;
	struct imap_value *args;
	size_t n_args;
};

struct imap_parser;

/* limits NULL = imap_limits_default; zero fields also take the default. */
struct imap_parser *imap_parser_new(const struct imap_limits *limits);
struct imap_parser *imap_parser_free(struct imap_parser *p);
static inline void imap_parser_freep(struct imap_parser **p)
{
	*p = imap_parser_free(*p);
}

/* Append bytes. Returns 0, or a negative errno if the buffered bytes break a limit or
 * the first buffered response is found malformed while framing (the parser is poisoned). */
int imap_parser_feed(struct imap_parser *p, const void *data, size_t len);

/* Pull one complete response: returns 1 and sets *ret, 0 if more bytes are needed (*ret
 * untouched), or a negative errno. Consumes exactly that response: the bytes after it stay
 * buffered and unread until the next call. */
int imap_parser_next(struct imap_parser *p, const struct imap_response **ret);

/* A short description of the error for the log, or NULL if there was none. */
const char *imap_parser_error(const struct imap_parser *p);

/* Forget everything buffered and not yet returned (after a STARTTLS OK, the bytes that
 * followed it must never be read as if they came through TLS). Clears no error. */
void imap_parser_reset(struct imap_parser *p);

/* Bytes fed and not yet consumed by a returned response. */
size_t imap_parser_buffered(const struct imap_parser *p);

/* Bytes of heap the parser holds right now (buffers and arena, not the struct). */
size_t imap_parser_memory(const struct imap_parser *p);

const char *imap_status_to_string(enum imap_status s);

/* ---- typed access to values; every function accepts v == NULL ---- */

/* ATOM whose text equals name, ASCII case-insensitively. */
bool imap_value_is_atom(const struct imap_value *v, const char *name);
static inline bool imap_value_is_nil(const struct imap_value *v)
{
	return v && v->type == IMAP_VAL_NIL;
}
static inline bool imap_value_is_list(const struct imap_value *v)
{
	return v && v->type == IMAP_VAL_LIST;
}

/* NUMBER in range: -EBADMSG if not a number, -ERANGE if 0 and !allow_zero or > 2^32-1. */
int imap_value_to_u32(const struct imap_value *v, bool allow_zero, uint32_t *ret);
int imap_value_to_u64(const struct imap_value *v, uint64_t *ret);

/* nstring: STRING (or, leniently, ATOM/NUMBER) text; NIL gives *ret = NULL. A LIST or a
 * missing value is -EBADMSG. ret_len may be NULL. */
int imap_value_get_nstring(const struct imap_value *v, const char **ret, size_t *ret_len);
/* astring/string text, or NULL for NIL, LIST, or v == NULL. */
const char *imap_value_string(const struct imap_value *v);

/* ---- capabilities ---- */

enum imap_cap {
	IMAP_CAP_IMAP4REV1,
	IMAP_CAP_IMAP4REV2,
	IMAP_CAP_IDLE,
	IMAP_CAP_STARTTLS,
	IMAP_CAP_LOGINDISABLED,
	IMAP_CAP_AUTH_PLAIN,
	IMAP_CAP_AUTH_LOGIN,
	IMAP_CAP_AUTH_XOAUTH2,
	IMAP_CAP_AUTH_OAUTHBEARER,
	IMAP_CAP_SASL_IR,
	IMAP_CAP_LITERAL_PLUS,
	IMAP_CAP_LITERAL_MINUS,
	IMAP_CAP_ENABLE,
	IMAP_CAP_CONDSTORE,
	IMAP_CAP_QRESYNC,
	IMAP_CAP_UIDPLUS,
	IMAP_CAP_ID,
	IMAP_CAP_UTF8_ACCEPT,
	IMAP_CAP_ESEARCH,
	IMAP_CAP_NAMESPACE,
	IMAP_CAP_UNSELECT,
	IMAP_CAP_MOVE,
	IMAP_CAP_SPECIAL_USE,
	IMAP_CAP_STATUS_SIZE,
	_IMAP_CAP_MAX,
};
#define IMAP_CAP(c) (UINT64_C(1) << (c))

/* "IMAP4rev1", "AUTH=PLAIN", ... or NULL. */
const char *imap_cap_to_string(enum imap_cap c);

/* Map the atoms of "* CAPABILITY ..." or "[CAPABILITY ...]" to a mask of IMAP_CAP() bits.
 * Unknown capabilities are ignored; a value that is not an atom is -EBADMSG. */
int imap_capabilities_parse(const struct imap_value *v, size_t n, uint64_t *ret_mask);

/* Space-separated names of the bits in mask, for the log; truncated to fit; returns buf. */
const char *imap_caps_to_string(uint64_t mask, char *buf, size_t size);
