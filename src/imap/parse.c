/* IMAP response parser (RFC 3501 §9, RFC 9051 §9): framing, then tokenizing.
 *
 * Two stages keep the work linear however the bytes are chunked:
 *  1. The framer runs as bytes arrive and finds where the first response ends: it looks at
 *     each line end only, skips announced literals without reading them, and enforces every
 *     size limit before the bytes for it are buffered.
 *  2. Once a response is complete, the tokenizer parses it in one pass into the arena.
 * The two must agree on where literals are: a "{n}" that ends a line is a literal, except
 * in free text, which only status responses and continuations carry (resp-text). Those are
 * always single lines: resp-text-code is TEXT-CHARs (RFC 3501 §9), so a literal can't hide
 * in there. */
#include "imap/parse.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include "util.h"

const struct imap_limits imap_limits_default = {
	.max_line = 64 * 1024,
	.max_literal = 16 * 1024 * 1024,
	.max_depth = 16,
	.max_response = 32 * 1024 * 1024,
};

/* What an idle parser may keep: thousands of idle connections must stay cheap. */
#define BUF_KEEP 256
#define ARENA_CHUNK 4096
#define STACK_KEEP 64

struct arena_block {
	struct arena_block *next;
	size_t size, used;
	max_align_t data[];
};

struct imap_parser {
	struct imap_limits limits;

	/* Input: the unconsumed bytes are buf[start, len). */
	char *buf;
	size_t start, len, cap;

	/* Framer state; offsets are relative to buf + start, the first unconsumed byte. */
	size_t scan;       /* next byte not yet looked at */
	size_t line_start; /* where the current line began (after a literal, where it resumed) */
	uint64_t lit_left; /* literal bytes still to skip */
	bool first_line_seen;
	size_t frame_end; /* > 0: a complete response is buf[start, start + frame_end) */

	/* The response handed out last and what it points to. */
	struct imap_response resp;
	struct arena_block *arena;
	size_t arena_size;
	struct imap_value *stack; /* values of lists being built, innermost last */
	size_t n_stack, stack_cap;

	int error;
	char errmsg[160];
};

/* ---------------------------------------------------------------- errors */

_printf_(3, 4) static int fail(struct imap_parser *p, int error, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->errmsg, sizeof(p->errmsg), fmt, ap);
	va_end(ap);
	return error;
}

/* ---------------------------------------------------------------- arena */

static void arena_free(struct imap_parser *p)
{
	while (p->arena) {
		struct arena_block *b = p->arena;
		p->arena = b->next;
		free(b);
	}
	p->arena_size = 0;
}

static void *arena_alloc(struct imap_parser *p, size_t size)
{
	const size_t align = sizeof(max_align_t);
	struct arena_block *b = p->arena;
	size_t off;

	if (size > SIZE_MAX / 2)
		return NULL;
	if (b) {
		off = (b->used + align - 1) & ~(align - 1);
		if (off <= b->size && b->size - off >= size) {
			b->used = off + size;
			return (char *)b->data + off;
		}
	}
	size_t bsize = MAX(size, (size_t)ARENA_CHUNK);
	b = malloc(sizeof(*b) + bsize);
	if (!b)
		return NULL;
	b->size = bsize;
	b->used = size;
	b->next = p->arena;
	p->arena = b;
	p->arena_size += sizeof(*b) + bsize;
	return b->data;
}

static char *arena_strndup(struct imap_parser *p, const char *s, size_t n)
{
	char *d = arena_alloc(p, n + 1);

	if (!d)
		return NULL;
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

/* Forget the last response; keep one small block for the next, unless going idle. */
static void response_release(struct imap_parser *p, bool idle)
{
	p->resp = (struct imap_response){};
	p->n_stack = 0;
	if (idle || p->stack_cap > STACK_KEEP) {
		p->stack = mfree(p->stack);
		p->stack_cap = 0;
	}
	if (idle || p->arena_size > sizeof(struct arena_block) + ARENA_CHUNK) {
		arena_free(p);
		return;
	}
	if (p->arena)
		p->arena->used = 0;
}

/* ---------------------------------------------------------------- lifecycle */

struct imap_parser *imap_parser_new(const struct imap_limits *limits)
{
	struct imap_parser *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->limits = limits ? *limits : imap_limits_default;
	if (!p->limits.max_line)
		p->limits.max_line = imap_limits_default.max_line;
	if (!p->limits.max_literal)
		p->limits.max_literal = imap_limits_default.max_literal;
	if (!p->limits.max_depth)
		p->limits.max_depth = imap_limits_default.max_depth;
	if (!p->limits.max_response)
		p->limits.max_response = imap_limits_default.max_response;
	p->limits.max_depth = MIN(p->limits.max_depth, IMAP_MAX_DEPTH_CAP);
	return p;
}

static void buffer_drop(struct imap_parser *p)
{
	p->buf = mfree(p->buf);
	p->start = p->len = p->cap = 0;
	p->scan = p->line_start = p->frame_end = 0;
	p->lit_left = 0;
	p->first_line_seen = false;
}

struct imap_parser *imap_parser_free(struct imap_parser *p)
{
	if (!p)
		return NULL;
	response_release(p, true);
	buffer_drop(p);
	free(p);
	return NULL;
}

/* Every later call sees the same error; nothing buffered is worth keeping. */
static int poison(struct imap_parser *p, int error)
{
	p->error = error;
	response_release(p, true);
	buffer_drop(p);
	return error;
}

void imap_parser_reset(struct imap_parser *p)
{
	response_release(p, true);
	buffer_drop(p);
}

size_t imap_parser_buffered(const struct imap_parser *p)
{
	return p->len - p->start;
}

size_t imap_parser_memory(const struct imap_parser *p)
{
	return p->cap + p->arena_size + p->stack_cap * sizeof(struct imap_value);
}

const char *imap_parser_error(const struct imap_parser *p)
{
	return p->error ? p->errmsg : NULL;
}

/* ---------------------------------------------------------------- framing */

static bool is_digit(int ch)
{
	return ch >= '0' && ch <= '9';
}

static char ascii_toupper(char ch)
{
	return ch >= 'a' && ch <= 'z' ? (char)(ch - 'a' + 'A') : ch;
}

static bool word_eq(const char *s, size_t n, const char *word)
{
	return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

static enum imap_status status_from_word(const char *s, size_t n)
{
	static const char *const words[] = {
		[IMAP_STATUS_OK] = "OK",   [IMAP_STATUS_NO] = "NO",
		[IMAP_STATUS_BAD] = "BAD", [IMAP_STATUS_BYE] = "BYE",
		[IMAP_STATUS_PREAUTH] = "PREAUTH",
	};

	for (size_t i = IMAP_STATUS_OK; i < ELEMENTSOF(words); i++) {
		if (word_eq(s, n, words[i]))
			return (enum imap_status)i;
	}
	return IMAP_STATUS_NONE;
}

/* Does the first line (b[0, n)) end in free text? Continuations and status responses do. */
static bool first_line_is_text(const char *b, size_t n)
{
	const char *sp, *w, *e;

	if (n > 0 && b[0] == '+')
		return true;
	sp = memchr(b, ' ', n);
	if (!sp)
		return false;
	w = sp + 1;
	for (e = w; e < b + n && *e != ' ' && *e != '\r' && *e != '\n'; e++)
		;
	return status_from_word(w, (size_t)(e - w)) != IMAP_STATUS_NONE;
}

/* A line (b[0, n), without its line end) that ends in "{digits}" or "~{digits}" announces a
 * literal. Returns 1 and its size, 0 if none, or an error. */
static int literal_suffix(struct imap_parser *p, const char *b, size_t n, uint64_t *ret)
{
	size_t i, digits_end;
	uint64_t v = 0;
	bool plus = false;

	if (n < 3 || b[n - 1] != '}')
		return 0;
	i = n - 1;
	if (b[i - 1] == '+') {
		plus = true;
		i--;
	}
	digits_end = i;
	while (i > 0 && is_digit(b[i - 1]))
		i--;
	if (i == 0 || b[i - 1] != '{' || i == digits_end)
		return 0;
	if (plus)
		return fail(p, -EPROTO, "server sent a non-synchronizing literal {%.*s}",
			    (int)MIN(digits_end - i + 1, (size_t)24), b + i);
	for (size_t k = i; k < digits_end; k++) {
		unsigned d = (unsigned)(b[k] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return fail(p, -EMSGSIZE, "literal of more than 2^64 bytes");
		v = v * 10 + d;
	}
	if (v > p->limits.max_literal)
		return fail(p, -EMSGSIZE, "literal of %" PRIu64 " bytes exceeds limit %zu", v,
			    p->limits.max_literal);
	*ret = v;
	return 1;
}

static size_t line_body_len(const char *line, size_t n)
{
	/* n includes the LF; a CR before it is part of the line end */
	n--;
	if (n > 0 && line[n - 1] == '\r')
		n--;
	return n;
}

static int check_line(struct imap_parser *p, size_t n)
{
	if (n > p->limits.max_line)
		return fail(p, -E2BIG, "line of more than %zu bytes", p->limits.max_line);
	return 0;
}

/* Find the end of the first buffered response. 1: complete (frame_end set), 0: need more. */
static int frame_scan(struct imap_parser *p)
{
	/* an idle parser holds no buffer at all: don't do arithmetic on its NULL */
	if (imap_parser_buffered(p) == 0)
		return 0;
	while (!p->frame_end) {
		const char *b = p->buf + p->start;
		size_t avail = p->len - p->start;
		uint64_t lit = 0;
		int r;

		if (p->lit_left > 0) {
			size_t take = (size_t)MIN(p->lit_left, (uint64_t)(avail - p->scan));
			p->scan += take;
			p->lit_left -= take;
			if (p->lit_left > 0)
				return 0;
			p->line_start = p->scan;
			continue;
		}

		const char *lf =
			p->scan < avail ? memchr(b + p->scan, '\n', avail - p->scan) : NULL;
		if (!lf) {
			p->scan = avail;
			r = check_line(p, avail - p->line_start);
			if (r < 0)
				return r;
			if (avail > p->limits.max_response)
				goto too_big;
			return 0;
		}
		size_t eol = (size_t)(lf - b) + 1;
		r = check_line(p, eol - p->line_start);
		if (r < 0)
			return r;
		if (eol > p->limits.max_response)
			goto too_big;

		const char *line = b + p->line_start;
		size_t body = line_body_len(line, eol - p->line_start);
		bool text = !p->first_line_seen && first_line_is_text(line, body);
		p->first_line_seen = true;
		r = text ? 0 : literal_suffix(p, line, body, &lit);
		if (r < 0)
			return r;
		if (r == 0) {
			p->frame_end = eol;
			break;
		}
		if (lit > p->limits.max_response - eol)
			goto too_big;
		p->scan = p->line_start = eol;
		p->lit_left = lit;
	}
	return 1;

too_big:
	return fail(p, -EMSGSIZE, "response of more than %zu bytes", p->limits.max_response);
}

/* ---------------------------------------------------------------- feeding */

/* Never more than one whole response and a line's worth of what follows it. */
static size_t buffer_bound(const struct imap_parser *p)
{
	size_t a = p->limits.max_response, b = p->limits.max_line;
	return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static void buffer_compact(struct imap_parser *p)
{
	if (p->start == 0)
		return;
	memmove(p->buf, p->buf + p->start, p->len - p->start);
	p->len -= p->start;
	p->start = 0;
}

static int buffer_reserve(struct imap_parser *p, size_t need)
{
	size_t ncap;
	char *n;

	if (need <= p->cap)
		return 0;
	ncap = MAX((size_t)BUF_KEEP, p->cap);
	while (ncap < need)
		ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
	ncap = MIN(ncap, MAX(need, buffer_bound(p)));
	n = realloc(p->buf, ncap);
	if (!n)
		return -ENOMEM;
	p->buf = n;
	p->cap = ncap;
	return 0;
}

int imap_parser_feed(struct imap_parser *p, const void *data, size_t len)
{
	int r;

	if (p->error)
		return p->error;
	response_release(p, false);
	if (len == 0)
		return 0;
	if (len > buffer_bound(p) - imap_parser_buffered(p)) {
		fail(p, -ENOBUFS, "more than %zu bytes buffered", buffer_bound(p));
		return poison(p, -ENOBUFS);
	}
	buffer_compact(p);
	r = buffer_reserve(p, p->len + len);
	if (r < 0) {
		fail(p, r, "out of memory");
		return poison(p, r);
	}
	memcpy(p->buf + p->len, data, len);
	p->len += len;

	r = frame_scan(p);
	if (r < 0)
		return poison(p, r);
	return 0;
}

/* After a response: hand back memory that an idle connection should not hold. */
static void buffer_consume(struct imap_parser *p, size_t n)
{
	size_t left;

	p->start += n;
	p->scan = p->line_start = p->frame_end = 0;
	p->lit_left = 0;
	p->first_line_seen = false;
	left = imap_parser_buffered(p);
	if (left == 0) {
		p->start = p->len = 0;
		if (p->cap > BUF_KEEP) {
			p->buf = mfree(p->buf);
			p->cap = 0;
		}
		return;
	}
	if (p->cap > 4 * BUF_KEEP && left < p->cap / 4) {
		size_t ncap = MAX(left, (size_t)BUF_KEEP);
		char *nb;

		buffer_compact(p);
		nb = realloc(p->buf, ncap);
		if (nb) {
			p->buf = nb;
			p->cap = ncap;
		}
	}
}

/* ---------------------------------------------------------------- tokenizing */

struct cursor {
	struct imap_parser *p;
	const char *pos, *end; /* the frame */
	const char *line_begin;
	unsigned line;
	unsigned depth;
};

static int peek(const struct cursor *c)
{
	return c->pos < c->end ? (unsigned char)*c->pos : -1;
}

static bool at_eol(const struct cursor *c)
{
	int ch = peek(c);
	return ch == '\n' || (ch == '\r' && c->pos + 1 < c->end && c->pos[1] == '\n');
}

_printf_(2, 3) static int syntax_error(struct cursor *c, const char *fmt, ...)
{
	char what[96], got[24];
	int ch = peek(c);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (at_eol(c) || ch < 0)
		snprintf(got, sizeof(got), "end of line");
	else if (ch > 0x20 && ch < 0x7f)
		snprintf(got, sizeof(got), "'%c'", ch);
	else
		snprintf(got, sizeof(got), "byte 0x%02x", (unsigned)ch);
	return fail(c->p, -EBADMSG, "line %u: %s, got %s at column %zu", c->line, what, got,
		    (size_t)(c->pos - c->line_begin) + 1);
}

static int unexpected(struct cursor *c)
{
	return fail(c->p, -EBADMSG, "line %u: unexpected '%c' at column %zu", c->line, *c->pos,
		    (size_t)(c->pos - c->line_begin) + 1);
}

static int oom(struct cursor *c)
{
	return fail(c->p, -ENOMEM, "out of memory");
}

static int eat_eol(struct cursor *c)
{
	if (!at_eol(c))
		return syntax_error(c, "expected end of line");
	c->pos += *c->pos == '\r' ? 2 : 1;
	c->line++;
	c->line_begin = c->pos;
	return 0;
}

static int eat_sp(struct cursor *c)
{
	if (peek(c) != ' ')
		return syntax_error(c, "expected SP");
	c->pos++;
	return 0;
}

/* ATOM-CHAR (RFC 3501 §9) plus what servers put in flags and sequence sets ("\*", "1:*",
 * "%"), and 8-bit bytes (UTF-8 mailbox names); "]" ends an atom only inside a code. */
static bool is_atom_char(int ch, bool in_code)
{
	if (ch < 0 || ch <= 0x20 || ch == 0x7f)
		return false;
	switch (ch) {
	case '(':
	case ')':
	case '{':
	case '"':
		return false;
	case ']':
		return !in_code;
	default:
		return true;
	}
}

/* A plain word: tag, untagged name, code name. */
static size_t lex_word(struct cursor *c, const char **ret)
{
	const char *s = c->pos;

	while (is_atom_char(peek(c), true) && peek(c) != '[')
		c->pos++;
	*ret = s;
	return (size_t)(c->pos - s);
}

static char *arena_upper(struct cursor *c, const char *s, size_t n)
{
	char *d = arena_strndup(c->p, s, n);

	if (d)
		for (size_t i = 0; i < n; i++)
			d[i] = ascii_toupper(d[i]);
	return d;
}

static int skip_quoted_raw(struct cursor *c)
{
	c->pos++;
	for (;;) {
		int ch = peek(c);
		if (ch < 0 || ch == '\r' || ch == '\n' || ch == 0)
			return syntax_error(c, "unterminated quoted string");
		c->pos++;
		if (ch == '"')
			return 0;
		if (ch == '\\' && (peek(c) == '\\' || peek(c) == '"'))
			c->pos++;
	}
}

/* "BODY[HEADER.FIELDS (FROM SUBJECT)]<0>": the section is part of the atom. */
static int skip_section(struct cursor *c)
{
	unsigned parens = 0;

	c->pos++;
	for (;;) {
		int ch = peek(c), r;
		if (ch == '"') {
			r = skip_quoted_raw(c);
			if (r < 0)
				return r;
			continue;
		}
		if (ch < 0x20 || ch == 0x7f)
			return syntax_error(c, "unterminated section");
		c->pos++;
		if (ch == '(')
			parens++;
		else if (ch == ')' && parens-- == 0)
			return syntax_error(c, "unbalanced ')' in section");
		else if (ch == ']' && parens == 0)
			return 0;
	}
}

static int parse_u64(const char *s, size_t n, uint64_t *ret)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned d = (unsigned)(s[i] - '0');
		if (d > 9)
			return -EINVAL;
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*ret = v;
	return 0;
}

static int parse_atom(struct cursor *c, struct imap_value *ret, bool in_code)
{
	const char *s = c->pos;
	bool digits = true;
	size_t n;
	int r;

	for (;;) {
		int ch = peek(c);
		if (ch == '[' && !in_code) {
			r = skip_section(c);
			if (r < 0)
				return r;
			digits = false;
			continue;
		}
		if (!is_atom_char(ch, in_code))
			break;
		digits = digits && is_digit(ch);
		c->pos++;
	}
	n = (size_t)(c->pos - s);
	if (n == 0)
		return syntax_error(c, "expected a value");
	if (word_eq(s, n, "NIL")) {
		*ret = (struct imap_value){ .type = IMAP_VAL_NIL };
		return 0;
	}
	*ret = (struct imap_value){ .type = digits ? IMAP_VAL_NUMBER : IMAP_VAL_ATOM, .len = n };
	if (digits && parse_u64(s, n, &ret->num) < 0) {
		c->pos = s;
		return syntax_error(c, "number out of range");
	}
	ret->str = arena_strndup(c->p, s, n);
	return ret->str ? 0 : oom(c);
}

static int parse_quoted(struct cursor *c, struct imap_value *ret)
{
	const char *s = c->pos + 1;
	size_t n = 0;
	char *d;

	/* first pass validates and measures, second copies unescaped */
	for (c->pos = s;; c->pos++) {
		int ch = peek(c);
		if (ch == '"')
			break;
		if (ch == '\\') {
			c->pos++;
			if (peek(c) != '\\' && peek(c) != '"')
				return syntax_error(c, "bad escape in quoted string");
		} else if (ch < 0 || ch == 0 || ch == '\r' || ch == '\n') {
			return syntax_error(c, "unterminated quoted string");
		}
		n++;
	}
	d = arena_alloc(c->p, n + 1);
	if (!d)
		return oom(c);
	for (size_t i = 0; s < c->pos; s++) {
		if (*s == '\\')
			s++;
		d[i++] = *s;
	}
	d[n] = '\0';
	c->pos++;
	*ret = (struct imap_value){ .type = IMAP_VAL_STRING, .str = d, .len = n };
	return 0;
}

static int parse_literal(struct cursor *c, struct imap_value *ret)
{
	const char *digits;
	uint64_t n;
	char *d;
	int r;

	if (peek(c) == '~')
		c->pos++;
	c->pos++; /* '{' */
	digits = c->pos;
	while (is_digit(peek(c)))
		c->pos++;
	if (c->pos == digits)
		return syntax_error(c, "expected literal size");
	if (peek(c) == '+')
		return fail(c->p, -EPROTO, "server sent a non-synchronizing literal");
	if (parse_u64(digits, (size_t)(c->pos - digits), &n) < 0 || n > c->p->limits.max_literal)
		return fail(c->p, -EMSGSIZE, "literal of %.*s bytes exceeds limit %zu",
			    (int)MIN((size_t)(c->pos - digits), (size_t)24), digits,
			    c->p->limits.max_literal);
	if (peek(c) != '}')
		return syntax_error(c, "expected '}'");
	c->pos++;
	r = eat_eol(c);
	if (r < 0)
		return r;
	if ((uint64_t)(c->end - c->pos) < n)
		return syntax_error(c, "truncated literal");
	d = arena_strndup(c->p, c->pos, (size_t)n);
	if (!d)
		return oom(c);
	c->pos += n;
	c->line_begin = c->pos;
	*ret = (struct imap_value){ .type = IMAP_VAL_STRING, .str = d, .len = (size_t)n,
				    .literal = true };
	return 0;
}

static int stack_push(struct cursor *c, const struct imap_value *v)
{
	struct imap_parser *p = c->p;

	if (p->n_stack == p->stack_cap) {
		size_t ncap = MAX((size_t)16, p->stack_cap * 2);
		struct imap_value *n = reallocarray(p->stack, ncap, sizeof(*n));
		if (!n)
			return oom(c);
		p->stack = n;
		p->stack_cap = ncap;
	}
	p->stack[p->n_stack++] = *v;
	return 0;
}

/* Move the values pushed since base into one arena array. */
static int stack_pop_into(struct cursor *c, size_t base, struct imap_value **ret, size_t *ret_n)
{
	struct imap_parser *p = c->p;
	size_t n = p->n_stack - base;
	struct imap_value *items = NULL;

	if (n > 0) {
		items = arena_alloc(p, n * sizeof(*items));
		if (!items)
			return oom(c);
		memcpy(items, p->stack + base, n * sizeof(*items));
	}
	p->n_stack = base;
	*ret = items;
	*ret_n = n;
	return 0;
}

static int parse_values(struct cursor *c, int closer, bool in_code);

static int parse_list(struct cursor *c, struct imap_value *ret, bool in_code)
{
	size_t base = c->p->n_stack;
	int r;

	if (c->depth >= c->p->limits.max_depth)
		return fail(c->p, -E2BIG, "line %u: lists nested deeper than %u", c->line,
			    c->p->limits.max_depth);
	c->depth++;
	c->pos++;
	r = parse_values(c, ')', in_code);
	if (r < 0)
		return r;
	c->pos++;
	c->depth--;
	*ret = (struct imap_value){ .type = IMAP_VAL_LIST };
	return stack_pop_into(c, base, &ret->items, &ret->n_items);
}

static int parse_value(struct cursor *c, struct imap_value *ret, bool in_code)
{
	int ch = peek(c);

	if (ch == '(')
		return parse_list(c, ret, in_code);
	if (ch == '"')
		return parse_quoted(c, ret);
	if (ch == '{' || (ch == '~' && c->pos + 1 < c->end && c->pos[1] == '{'))
		return parse_literal(c, ret);
	return parse_atom(c, ret, in_code);
}

/* Values up to closer (')' or ']', left unconsumed) or, for closer < 0, the line end.
 * Values are separated by SP, but a list needs none around it (body-type-mpart). */
static int parse_values(struct cursor *c, int closer, bool in_code)
{
	bool need_sep = false;

	for (;;) {
		struct imap_value v;
		int ch = peek(c), r;

		if (ch == ' ') {
			c->pos++;
			need_sep = false;
			continue;
		}
		if (closer < 0 ? at_eol(c) : ch == closer)
			return 0;
		if (at_eol(c) || ch < 0)
			return syntax_error(c, "expected '%c'", closer);
		if (ch == ')')
			return unexpected(c);
		if (need_sep)
			return syntax_error(c, "expected SP");
		r = parse_value(c, &v, in_code);
		if (r < 0)
			return r;
		r = stack_push(c, &v);
		if (r < 0)
			return r;
		need_sep = v.type != IMAP_VAL_LIST;
	}
}

/* Free text up to the line end: TEXT-CHARs, and 8-bit bytes that servers send anyway. */
static int parse_text(struct cursor *c, const char **ret)
{
	const char *s = c->pos;

	while (!at_eol(c)) {
		int ch = peek(c);
		if (ch <= 0 || ch == '\r')
			return syntax_error(c, "unexpected byte in text");
		c->pos++;
	}
	*ret = arena_strndup(c->p, s, (size_t)(c->pos - s));
	return *ret ? 0 : oom(c);
}

/* Unknown codes are free text up to "]": keep it raw instead of failing. */
static int code_args_raw(struct cursor *c, struct imap_response *r)
{
	const char *s = c->pos, *e;
	struct imap_value *v;

	for (e = s; e < c->end && *e != ']' && *e != '\r' && *e != '\n' && *e != '\0'; e++)
		;
	if (e == c->end || *e != ']')
		return 0;
	v = arena_alloc(c->p, sizeof(*v));
	if (!v)
		return oom(c);
	*v = (struct imap_value){ .type = IMAP_VAL_STRING, .str = arena_strndup(c->p, s, e - s),
				  .len = (size_t)(e - s) };
	if (!v->str)
		return oom(c);
	r->code_args = v;
	r->n_code_args = 1;
	r->code_args_raw = true;
	c->pos = e;
	return 1;
}

/* "[CODE args]" at c->pos. 1: parsed, 0: not a well-formed code (then it is just text). */
static int parse_code(struct cursor *c, struct imap_response *r)
{
	const char *bracket = c->pos, *name;
	size_t n, base = c->p->n_stack;
	int k;

	c->pos++;
	n = lex_word(c, &name);
	if (n == 0)
		goto not_code;
	if (peek(c) == ' ') {
		struct cursor saved = *c;
		c->pos++;
		k = parse_values(c, ']', true);
		if (k == -EBADMSG || k == -E2BIG || k == -EPROTO || k == -EMSGSIZE) {
			*c = saved;
			c->p->n_stack = base;
			c->pos++;
			k = code_args_raw(c, r);
			if (k < 0)
				return k;
			if (k == 0)
				goto not_code;
		} else if (k < 0) {
			return k;
		} else {
			k = stack_pop_into(c, base, &r->code_args, &r->n_code_args);
			if (k < 0)
				return k;
		}
	} else if (peek(c) != ']') {
		goto not_code;
	}
	c->pos++; /* ']' */
	r->code = arena_upper(c, name, n);
	if (!r->code)
		return oom(c);
	if (peek(c) == ' ')
		c->pos++;
	return 1;

not_code:
	c->pos = bracket;
	return 0;
}

/* resp-text, after the status word or "+": ["[" code "]"] [SP] text; text may be missing. */
static int parse_resp_text(struct cursor *c, struct imap_response *r)
{
	int k;

	if (at_eol(c)) {
		r->text = "";
		return 0;
	}
	k = eat_sp(c);
	if (k < 0)
		return k;
	if (peek(c) == '[') {
		k = parse_code(c, r);
		if (k < 0)
			return k;
	}
	return parse_text(c, &r->text);
}

static int parse_untagged(struct cursor *c, struct imap_response *r)
{
	const char *s;
	size_t n;
	int k;

	r->kind = IMAP_RESP_UNTAGGED;
	if (is_digit(peek(c))) {
		uint64_t num;
		n = lex_word(c, &s);
		if (parse_u64(s, n, &num) < 0 || num > UINT32_MAX) {
			c->pos = s;
			return syntax_error(c, "expected a message number");
		}
		r->number = (uint32_t)num;
		r->has_number = true;
		k = eat_sp(c);
		if (k < 0)
			return k;
	}
	n = lex_word(c, &s);
	if (n == 0)
		return syntax_error(c, "expected a response name");
	if (!r->has_number) {
		r->status = status_from_word(s, n);
		if (r->status != IMAP_STATUS_NONE)
			return parse_resp_text(c, r);
	}
	r->name = arena_upper(c, s, n);
	if (!r->name)
		return oom(c);
	if (at_eol(c))
		return 0;
	k = eat_sp(c);
	if (k < 0)
		return k;
	size_t base = c->p->n_stack;
	k = parse_values(c, -1, false);
	if (k < 0)
		return k;
	return stack_pop_into(c, base, &r->args, &r->n_args);
}

static int parse_tagged(struct cursor *c, struct imap_response *r)
{
	const char *s = c->pos, *w;
	size_t n;
	int k;

	/* tag = 1*<any ASTRING-CHAR except "+"> */
	while (is_atom_char(peek(c), false) && peek(c) != '+')
		c->pos++;
	if (c->pos == s)
		return syntax_error(c, "expected a tag");
	r->kind = IMAP_RESP_TAGGED;
	r->tag = arena_strndup(c->p, s, (size_t)(c->pos - s));
	if (!r->tag)
		return oom(c);
	k = eat_sp(c);
	if (k < 0)
		return k;
	n = lex_word(c, &w);
	r->status = status_from_word(w, n);
	if (r->status == IMAP_STATUS_NONE || r->status > IMAP_STATUS_BAD) {
		c->pos = w;
		return syntax_error(c, "expected OK, NO or BAD");
	}
	return parse_resp_text(c, r);
}

static int parse_response(struct imap_parser *p, const char *frame, size_t len)
{
	struct cursor c = { .p = p, .pos = frame, .end = frame + len, .line_begin = frame,
			    .line = 1 };
	struct imap_response *r = &p->resp;
	int k;

	*r = (struct imap_response){};
	switch (peek(&c)) {
	case '+':
		c.pos++;
		r->kind = IMAP_RESP_CONTINUATION;
		/* "+" alone, no SP: some servers send it before a literal */
		k = at_eol(&c) ? (r->text = "", 0) : parse_resp_text(&c, r);
		break;
	case '*':
		c.pos++;
		k = eat_sp(&c);
		if (k >= 0)
			k = parse_untagged(&c, r);
		break;
	default:
		k = parse_tagged(&c, r);
	}
	if (k >= 0)
		k = eat_eol(&c);
	if (k >= 0 && c.pos != c.end)
		k = syntax_error(&c, "expected end of response");
	return k;
}

int imap_parser_next(struct imap_parser *p, const struct imap_response **ret)
{
	int r;

	if (p->error)
		return p->error;
	response_release(p, false);
	r = frame_scan(p);
	if (r < 0)
		return poison(p, r);
	if (r == 0) {
		/* going idle: keep nothing but the partial response, if any */
		response_release(p, true);
		if (imap_parser_buffered(p) == 0)
			buffer_drop(p);
		return 0;
	}
	r = parse_response(p, p->buf + p->start, p->frame_end);
	if (r < 0)
		return poison(p, r);
	buffer_consume(p, p->frame_end);
	*ret = &p->resp;
	return 1;
}

const char *imap_status_to_string(enum imap_status s)
{
	static const char *const names[] = {
		[IMAP_STATUS_NONE] = "NONE", [IMAP_STATUS_OK] = "OK",
		[IMAP_STATUS_NO] = "NO",     [IMAP_STATUS_BAD] = "BAD",
		[IMAP_STATUS_BYE] = "BYE",   [IMAP_STATUS_PREAUTH] = "PREAUTH",
	};

	return (size_t)s < ELEMENTSOF(names) ? names[s] : NULL;
}

/* ---------------------------------------------------------------- values */

bool imap_value_is_atom(const struct imap_value *v, const char *name)
{
	return v && v->type == IMAP_VAL_ATOM && word_eq(v->str, v->len, name);
}

int imap_value_to_u64(const struct imap_value *v, uint64_t *ret)
{
	if (!v || v->type != IMAP_VAL_NUMBER)
		return -EBADMSG;
	*ret = v->num;
	return 0;
}

int imap_value_to_u32(const struct imap_value *v, bool allow_zero, uint32_t *ret)
{
	if (!v || v->type != IMAP_VAL_NUMBER)
		return -EBADMSG;
	if (v->num > UINT32_MAX || (v->num == 0 && !allow_zero))
		return -ERANGE;
	*ret = (uint32_t)v->num;
	return 0;
}

int imap_value_get_nstring(const struct imap_value *v, const char **ret, size_t *ret_len)
{
	if (!v || v->type == IMAP_VAL_LIST)
		return -EBADMSG;
	*ret = v->str;
	if (ret_len)
		*ret_len = v->len;
	return 0;
}

const char *imap_value_string(const struct imap_value *v)
{
	return v ? v->str : NULL;
}

/* ---------------------------------------------------------------- capabilities */

static const char *const cap_names[_IMAP_CAP_MAX] = {
	[IMAP_CAP_IMAP4REV1] = "IMAP4rev1",
	[IMAP_CAP_IMAP4REV2] = "IMAP4rev2",
	[IMAP_CAP_IDLE] = "IDLE",
	[IMAP_CAP_STARTTLS] = "STARTTLS",
	[IMAP_CAP_LOGINDISABLED] = "LOGINDISABLED",
	[IMAP_CAP_AUTH_PLAIN] = "AUTH=PLAIN",
	[IMAP_CAP_AUTH_LOGIN] = "AUTH=LOGIN",
	[IMAP_CAP_AUTH_XOAUTH2] = "AUTH=XOAUTH2",
	[IMAP_CAP_AUTH_OAUTHBEARER] = "AUTH=OAUTHBEARER",
	[IMAP_CAP_SASL_IR] = "SASL-IR",
	[IMAP_CAP_LITERAL_PLUS] = "LITERAL+",
	[IMAP_CAP_LITERAL_MINUS] = "LITERAL-",
	[IMAP_CAP_ENABLE] = "ENABLE",
	[IMAP_CAP_CONDSTORE] = "CONDSTORE",
	[IMAP_CAP_QRESYNC] = "QRESYNC",
	[IMAP_CAP_UIDPLUS] = "UIDPLUS",
	[IMAP_CAP_ID] = "ID",
	[IMAP_CAP_UTF8_ACCEPT] = "UTF8=ACCEPT",
	[IMAP_CAP_ESEARCH] = "ESEARCH",
	[IMAP_CAP_NAMESPACE] = "NAMESPACE",
	[IMAP_CAP_UNSELECT] = "UNSELECT",
	[IMAP_CAP_MOVE] = "MOVE",
	[IMAP_CAP_SPECIAL_USE] = "SPECIAL-USE",
	[IMAP_CAP_STATUS_SIZE] = "STATUS=SIZE",
};

const char *imap_cap_to_string(enum imap_cap c)
{
	return (size_t)c < ELEMENTSOF(cap_names) ? cap_names[c] : NULL;
}

int imap_capabilities_parse(const struct imap_value *v, size_t n, uint64_t *ret_mask)
{
	uint64_t mask = 0;

	for (size_t i = 0; i < n; i++) {
		if (v[i].type != IMAP_VAL_ATOM)
			return -EBADMSG;
		for (size_t k = 0; k < ELEMENTSOF(cap_names); k++) {
			if (word_eq(v[i].str, v[i].len, cap_names[k]))
				mask |= IMAP_CAP(k);
		}
	}
	*ret_mask = mask;
	return 0;
}

const char *imap_caps_to_string(uint64_t mask, char *buf, size_t size)
{
	size_t used = 0;

	if (size == 0)
		return buf;
	buf[0] = '\0';
	for (size_t k = 0; k < ELEMENTSOF(cap_names); k++) {
		int w;
		if (!(mask & IMAP_CAP(k)))
			continue;
		w = snprintf(buf + used, size - used, "%s%s", used ? " " : "", cap_names[k]);
		if (w < 0 || (size_t)w >= size - used)
			break;
		used += (size_t)w;
	}
	buf[used] = '\0';
	return buf;
}
