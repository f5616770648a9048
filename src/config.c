/* Config: INI through libinih into typed, validated structs (see config.h).
 *
 * libinih splits "key = value" and strips "; comments"; everything else happens here. Our
 * line reader sits between the file and inih: it counts lines (Debian's inih does not pass
 * line numbers to the handler), sees every section header (inih reports none, so empty
 * sections would go unnoticed), and strips leading white space so that an indented line is
 * never taken for an inih continuation line. Each section type has a table of keys, and
 * each key a parser for its value type. The first error stops parsing. */
#include "config.h"

#include <ctype.h>
#include <fcntl.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>
#include <syslog.h>

#include "log.h"

#define KEYS_MAX 64
#define NAME_CMP_MAX 64 /* longer words get no did-you-mean hint */

struct parser;
struct key_def;

typedef int (*key_parse_fn)(struct parser *p, const struct key_def *k, const char *value,
			    void *object);

enum {
	KEY_REQUIRED = 1 << 0,
	KEY_REPEAT = 1 << 1, /* may be given more than once */
};

struct key_def {
	const char *name; /* first member: see closest_name() */
	key_parse_fn parse;
	size_t offset; /* of the field in the section's struct */
	uint64_t min, max;
	unsigned flags;
};

struct section_type {
	const char *name; /* first member: see closest_name() */
	bool named;       /* [type NAME] rather than [type] */
	const struct key_def *keys;
	size_t n_keys;
	int (*open)(struct parser *p, const char *name);
	int (*close)(struct parser *p);
	bool slash_name; /* NAME is "ACCOUNT/MAILBOX": the open function checks it */
};

struct parser {
	const char *path;
	FILE *f;
	char *buf;
	size_t bufsize;
	unsigned line;
	struct config *config;

	const struct section_type *type; /* current section; NULL before the first */
	char *section;                   /* its header text, e.g. "account work" */
	unsigned section_line;
	void *object;  /* the struct the current section fills */
	uint64_t seen; /* bit i: keys[i] was given in this section */
	unsigned key_line[KEYS_MAX];
	const char *key; /* the key whose value is being parsed */
	bool repeat;     /* ... and it was given before in this section */

	unsigned imapidled_line;
	char *exec_text[2]; /* command, post_command: split once shell= is known */

	int r; /* the first failure; stops the reader */
	char *error;
};

#define FIELD(object, k, type) ((type *)((char *)(object) + (k)->offset))

/* Append a zeroed element to a heap array; NULL on OOM with the array untouched. */
#define ARRAY_APPEND(array, n)                                                            \
	({                                                                                \
		__typeof__(array) _a_ = reallocarray((array), (n) + 1, sizeof(*(array))); \
		if (_a_) {                                                                \
			memset(&_a_[(n)], 0, sizeof(*_a_));                               \
			(array) = _a_;                                                    \
		}                                                                         \
		_a_ ? &_a_[(n)++] : NULL;                                                 \
	})

static const char *const tls_names[] = {
	[TLS_IMPLICIT] = "implicit",
	[TLS_STARTTLS] = "starttls",
	[TLS_NONE] = "none",
};

static const char *const auth_names[] = {
	[AUTH_AUTO] = "auto",		[AUTH_LOGIN] = "login",
	[AUTH_PLAIN] = "plain",		[AUTH_XOAUTH2] = "xoauth2",
	[AUTH_OAUTHBEARER] = "oauthbearer",
};

static const char *const urgency_names[] = {
	[URGENCY_LOW] = "low",
	[URGENCY_NORMAL] = "normal",
	[URGENCY_CRITICAL] = "critical",
};

static void fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

/* ---- errors ---- */

/* Record the first error as "PATH[:LINE][: [SECTION][ KEY]]: MESSAGE" and return -EINVAL.
 * Only the first counts: it stops the reader, and later ones would be consequences. */
_printf_(5, 6) static int fail_at(struct parser *p, unsigned line, const char *section,
				  const char *key, const char *fmt, ...)
{
	_cleanup_free_ char *msg = NULL, *where = NULL;
	va_list ap;
	int n;

	if (p->r < 0)
		return p->r;
	p->r = -ENOMEM;
	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0) {
		msg = NULL;
		return -ENOMEM;
	}
	n = line > 0 ? asprintf(&where, "%s:%u", p->path, line) : asprintf(&where, "%s", p->path);
	if (n < 0) {
		where = NULL;
		return -ENOMEM;
	}
	if (section && key)
		n = asprintf(&p->error, "%s: [%s] %s: %s", where, section, key, msg);
	else if (section)
		n = asprintf(&p->error, "%s: [%s]: %s", where, section, msg);
	else
		n = asprintf(&p->error, "%s: %s", where, msg);
	if (n < 0) {
		p->error = NULL;
		return -ENOMEM;
	}
	p->r = -EINVAL;
	return -EINVAL;
}

#define fail_key(p, ...) fail_at((p), (p)->line, (p)->section, (p)->key, __VA_ARGS__)
#define fail_section(p, ...) fail_at((p), (p)->line, (p)->section, NULL, __VA_ARGS__)
#define fail_line(p, ...) fail_at((p), (p)->line, NULL, NULL, __VA_ARGS__)

static size_t levenshtein(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[NAME_CMP_MAX + 1];

	if (la > NAME_CMP_MAX || lb > NAME_CMP_MAX)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t cost = diag + (a[i - 1] != b[j - 1]);

			row[j] = MIN(MIN(up + 1, row[j - 1] + 1), cost);
			diag = up;
		}
	}
	return row[lb];
}

/* The closest name in an array of structs whose first member is the name, if it is close
 * enough to be a plausible typo: within 2 edits, or a third of the word's length. */
static const char *closest_name(const char *word, const void *array, size_t n, size_t stride)
{
	size_t best = SIZE_MAX, limit = MAX((size_t)2, strlen(word) / 3);
	const char *hint = NULL;

	for (size_t i = 0; i < n; i++) {
		const char *name = *(const char *const *)((const char *)array + i * stride);
		size_t d = levenshtein(word, name);

		if (d < best) {
			best = d;
			hint = name;
		}
	}
	return best <= limit ? hint : NULL;
}

/* ---- value syntax (public, so that other modules and tests can use them) ---- */

/* Digits at *s into a number, advancing *s. */
static int parse_digits(const char **s, uint64_t *ret)
{
	uint64_t v = 0;
	const char *c = *s;

	if (!isdigit((unsigned char)*c))
		return -EINVAL;
	for (; isdigit((unsigned char)*c); c++) {
		if (v > (UINT64_MAX - (uint64_t)(*c - '0')) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*c - '0');
	}
	*s = c;
	*ret = v;
	return 0;
}

static const char *skip_space(const char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	return s;
}

static int duration_unit(const char **s, usec_t *ret)
{
	static const struct {
		const char *suffix;
		usec_t usec;
	} units[] = {
		{ "ms", USEC_PER_MSEC }, { "s", USEC_PER_SEC }, { "m", USEC_PER_MINUTE },
		{ "h", USEC_PER_HOUR },	 { "d", USEC_PER_DAY },
	};
	size_t len = 0;

	while (isalpha((unsigned char)(*s)[len]))
		len++;
	for (size_t i = 0; i < ELEMENTSOF(units); i++)
		if (len == strlen(units[i].suffix) && strncmp(*s, units[i].suffix, len) == 0) {
			*s += len;
			*ret = units[i].usec;
			return 0;
		}
	return -EINVAL;
}

int config_parse_duration(const char *s, usec_t *ret)
{
	usec_t total = 0;
	bool first = true;

	if (!s)
		return -EINVAL;
	s = skip_space(s);
	if (!*s)
		return -EINVAL;
	while (*s) {
		uint64_t n;
		usec_t unit;
		int r = parse_digits(&s, &n);

		if (r < 0)
			return r;
		s = skip_space(s);
		if (*s == '\0' && first) /* a bare number: seconds */
			unit = USEC_PER_SEC;
		else if (duration_unit(&s, &unit) < 0)
			return -EINVAL;
		if (n > UINT64_MAX / unit || total > UINT64_MAX - n * unit)
			return -ERANGE;
		total += n * unit;
		s = skip_space(s);
		first = false;
	}
	if (total == USEC_INFINITY) /* reserved for "no limit" */
		return -ERANGE;
	*ret = total;
	return 0;
}

int config_parse_bool(const char *s, bool *ret)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; s && i < ELEMENTSOF(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*ret = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*ret = false;
			return 0;
		}
	}
	return -EINVAL;
}

int config_parse_size(const char *s, uint64_t *ret)
{
	static const char suffixes[] = "KMG";
	uint64_t n, mult = 1;
	const char *c = s ? skip_space(s) : "";
	int r = parse_digits(&c, &n);

	if (r < 0)
		return r;
	c = skip_space(c);
	if (*c) {
		const char *pos = strchr(suffixes, toupper((unsigned char)*c));

		if (!pos || *skip_space(c + 1))
			return -EINVAL;
		mult = 1ULL << (10 * (pos - suffixes + 1));
	}
	if (n > UINT64_MAX / mult)
		return -ERANGE;
	*ret = n * mult;
	return 0;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int config_parse_fingerprint(const char *s, uint8_t ret[32])
{
	uint8_t fp[32];
	size_t n = 0;

	if (!s || strncasecmp(s, "sha256:", 7) != 0)
		return -EINVAL;
	for (const char *c = s + 7; *c;) {
		int hi, lo;

		/* A colon only between two byte pairs. */
		if (*c == ':' && n > 0 && c[1] != '\0' && c[1] != ':') {
			c++;
			continue;
		}
		hi = hex_value(c[0]);
		lo = hi >= 0 ? hex_value(c[1]) : -1;
		if (hi < 0 || lo < 0 || n == sizeof(fp))
			return -EINVAL;
		fp[n++] = (uint8_t)(hi << 4 | lo);
		c += 2;
	}
	if (n != sizeof(fp))
		return -EINVAL;
	memcpy(ret, fp, sizeof(fp));
	return 0;
}

/* A quoted part of a word, *c at the opening quote; leaves *c at the closing one. Inside
 * double quotes only \" and \\ are escapes, as in sh(1). */
static int take_quoted(const char **c, char *word, size_t *len)
{
	char quote = **c;
	const char *s = *c + 1;

	for (; *s && *s != quote; s++) {
		if (quote == '"' && *s == '\\' && (s[1] == '"' || s[1] == '\\'))
			s++;
		word[(*len)++] = *s;
	}
	if (*s != quote)
		return -EINVAL;
	*c = s;
	return 0;
}

int config_split_command(const char *s, char ***ret_argv)
{
	_cleanup_strv_free_ char **argv = NULL;
	_cleanup_free_ char *word = malloc(strlen(s) + 1); /* no word is longer than s */
	size_t len = 0;
	bool in_word = false;
	int r;

	if (!word)
		return -ENOMEM;
	for (const char *c = s;; c++) {
		if (*c == '\0' || isspace((unsigned char)*c)) {
			if (in_word) {
				word[len] = '\0';
				r = strv_extend(&argv, word);
				if (r < 0)
					return r;
				len = 0;
				in_word = false;
			}
			if (*c == '\0')
				break;
			continue;
		}
		in_word = true;
		if (*c == '\'' || *c == '"') {
			r = take_quoted(&c, word, &len);
			if (r < 0)
				return r;
			continue;
		}
		if (*c == '\\' && *++c == '\0')
			return -EINVAL;
		word[len++] = *c;
	}
	if (!argv)
		return -ENODATA;
	*ret_argv = TAKE_PTR(argv);
	return 0;
}

int config_expand_path(const char *path, char **ret)
{
	const char *home;
	char *r;

	if (path[0] != '~')
		r = strdup(path);
	else if (path[1] != '\0' && path[1] != '/')
		return -EINVAL; /* ~user: not worth a passwd lookup */
	else {
		home = getenv("HOME");
		if (!home || home[0] != '/')
			return -ENXIO;
		if (asprintf(&r, "%s%s", home, path + 1) < 0)
			r = NULL;
	}
	if (!r)
		return -ENOMEM;
	*ret = r;
	return 0;
}

/* ---- value parsers for the key tables ---- */

static bool has_control(const char *s)
{
	for (const unsigned char *c = (const unsigned char *)s; *c; c++)
		if (*c < 0x20 || *c == 0x7f)
			return true;
	return false;
}

static bool valid_name(const char *s)
{
	return *s && !strchr(s, '/') && !has_control(s);
}

/* Text fit for a protocol line: not empty, no control characters (a CR or LF would let a
 * value inject IMAP or HTTP lines). Never echoes the value: it may be a secret. */
static int check_text(struct parser *p, const char *v)
{
	if (!*v)
		return fail_key(p, "expected a value, got nothing");
	if (has_control(v))
		return fail_key(p, "expected text without control characters");
	return 0;
}

static int set_string(char **field, const char *v)
{
	char *c = strdup(v);

	if (!c)
		return -ENOMEM;
	free(*field);
	*field = c;
	return 0;
}

static int parse_string(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	int r = check_text(p, v);

	return r < 0 ? r : set_string(FIELD(o, k, char *), v);
}

static int parse_host(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	if (*v && strpbrk(v, " \t"))
		return fail_key(p, "expected a host name, got \"%s\"", v);
	return parse_string(p, k, v, o);
}

static int parse_number(struct parser *p, const struct key_def *k, const char *v,
			uint64_t *ret)
{
	uint64_t n;

	if (safe_atou64(v, &n) < 0 || n < k->min || n > k->max)
		return fail_key(p, "expected %llu-%llu, got \"%s\"", (unsigned long long)k->min,
				(unsigned long long)k->max, v);
	*ret = n;
	return 0;
}

static int parse_unsigned(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	uint64_t n = 0;
	int r = parse_number(p, k, v, &n);

	if (r >= 0)
		*FIELD(o, k, unsigned) = (unsigned)n;
	return r;
}

static int parse_port(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	uint64_t n = 0;
	int r = parse_number(p, k, v, &n);

	if (r >= 0)
		*FIELD(o, k, uint16_t) = (uint16_t)n;
	return r;
}

static int parse_boolean(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	if (config_parse_bool(v, FIELD(o, k, bool)) < 0)
		return fail_key(p, "expected yes or no, got \"%s\"", v);
	return 0;
}

static int fail_duration_range(struct parser *p, const struct key_def *k, const char *v)
{
	char lo[32], hi[32];

	format_duration(lo, sizeof(lo), k->min);
	if (k->max == USEC_INFINITY)
		return fail_key(p, "expected a duration of at least %s, got \"%s\"", lo, v);
	format_duration(hi, sizeof(hi), k->max);
	return fail_key(p, "expected a duration from %s to %s, got \"%s\"", lo, hi, v);
}

static int parse_duration(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	usec_t u;

	if (config_parse_duration(v, &u) < 0)
		return fail_key(p,
				"expected a duration such as \"30s\", \"10m\" or \"1h30m\", "
				"got \"%s\"",
				v);
	if (u < k->min || u > k->max)
		return fail_duration_range(p, k, v);
	*FIELD(o, k, usec_t) = u;
	return 0;
}

static int parse_expire(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	if (streq(v, "default")) {
		*FIELD(o, k, usec_t) = USEC_INFINITY;
		return 0;
	}
	if (streq(v, "never")) {
		*FIELD(o, k, usec_t) = 0;
		return 0;
	}
	return parse_duration(p, k, v, o);
}

static int parse_size(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	uint64_t n;

	if (config_parse_size(v, &n) < 0 || n < k->min)
		return fail_key(p, "expected a size such as \"512M\" or \"1G\", got \"%s\"", v);
	*FIELD(o, k, uint64_t) = n;
	return 0;
}

/* "a, b or c" */
static const char *format_choices(char *buf, size_t size, const char *const *names, size_t n)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n && off < size; i++) {
		const char *sep = i == 0 ? "" : i + 1 == n ? " or " : ", ";
		int w = snprintf(buf + off, size - off, "%s%s", sep, names[i]);

		if (w < 0)
			break;
		off += (size_t)w;
	}
	return buf;
}

/* The index of v in names, or a failure listing them. */
static int parse_choice(struct parser *p, const char *v, const char *const *names, size_t n)
{
	char buf[128];

	for (size_t i = 0; i < n; i++)
		if (streq(v, names[i]))
			return (int)i;
	return fail_key(p, "expected %s, got \"%s\"", format_choices(buf, sizeof(buf), names, n),
			v);
}

static int parse_tls(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	int i = parse_choice(p, v, tls_names, ELEMENTSOF(tls_names));

	if (i >= 0)
		*FIELD(o, k, enum tls_mode) = (enum tls_mode)i;
	return MIN(i, 0);
}

static int parse_auth(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	int i = parse_choice(p, v, auth_names, ELEMENTSOF(auth_names));

	if (i >= 0)
		*FIELD(o, k, enum auth_mech) = (enum auth_mech)i;
	return MIN(i, 0);
}

static int parse_urgency(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	int i = parse_choice(p, v, urgency_names, ELEMENTSOF(urgency_names));

	if (i >= 0)
		*FIELD(o, k, enum urgency) = (enum urgency)i;
	return MIN(i, 0);
}

static int parse_log_level(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	int level = log_level_from_string(v);

	if (level < 0)
		return fail_key(p, "expected error, warning, notice, info or debug, got \"%s\"", v);
	*FIELD(o, k, int) = level;
	return 0;
}

/* Expand "~" and report why not, for every key that takes a path. */
static int expand_path_or_fail(struct parser *p, const char *v, char **ret)
{
	int r;

	if (!*v)
		return fail_key(p, "expected a path, got nothing");
	r = config_expand_path(v, ret);
	if (r == -EINVAL)
		return fail_key(p, "expected a path (\"~user\" is not supported), got \"%s\"", v);
	if (r == -ENXIO)
		return fail_key(p, "cannot expand \"~\": $HOME is not set");
	return r;
}

static int parse_state_dir(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	_cleanup_free_ char *path = NULL, *cwd = NULL;
	char **field = FIELD(o, k, char *);
	int r = expand_path_or_fail(p, v, &path);

	if (r < 0)
		return r;
	if (path[0] == '/') {
		free(*field);
		*field = TAKE_PTR(path);
		return 0;
	}
	cwd = get_current_dir_name();
	if (!cwd)
		return fail_key(p, "cannot make \"%s\" absolute: %s", v, strerror(errno));
	free(*field);
	if (asprintf(field, "%s/%s", cwd, path) < 0) {
		*field = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* The file must be readable now: a typo in a CA path should fail `imapidled check`, not the
 * first connection hours later. */
static int parse_readable_file(struct parser *p, const struct key_def *k, const char *v,
			       void *o)
{
	_cleanup_free_ char *path = NULL;
	char **field = FIELD(o, k, char *);
	int r = expand_path_or_fail(p, v, &path);
	int fd;

	if (r < 0)
		return r;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return fail_key(p, "cannot read \"%s\": %s", path, strerror(errno));
	close(fd);
	free(*field);
	*field = TAKE_PTR(path);
	return 0;
}

static int parse_fingerprint(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	struct config_account *a = o;

	if (config_parse_fingerprint(v, a->tls_fingerprint) < 0)
		return fail_key(p, "expected \"sha256:\" and 64 hex digits, got \"%s\"", v);
	a->has_fingerprint = true;
	return 0;
}

static int split_or_fail(struct parser *p, const char *v, char ***ret)
{
	int r = config_split_command(v, ret);

	if (r == -ENODATA)
		return fail_key(p, "expected a command, got nothing");
	if (r == -EINVAL)
		return fail_key(p, "unterminated quote or trailing backslash in \"%s\"", v);
	return r;
}

static int parse_argv(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	char ***field = FIELD(o, k, char **);
	char **argv;
	int r = split_or_fail(p, v, &argv);

	if (r < 0)
		return r;
	strv_free(*field);
	*field = argv;
	return 0;
}

/* Only one way to give each secret: two would leave the reader guessing which one wins. */
static int secret_claim(struct parser *p, struct secret_source *src)
{
	if (src->kind != SECRET_NONE)
		return fail_key(p, "conflicts with \"%s\" at line %u: give only one", src->key,
				src->line);
	src->key = strdup(p->key);
	if (!src->key)
		return -ENOMEM;
	src->line = p->line;
	return 0;
}

static int parse_secret_value(struct parser *p, const struct key_def *k, const char *v,
			      void *o)
{
	struct secret_source *src = FIELD(o, k, struct secret_source);
	int r = secret_claim(p, src);

	if (r >= 0)
		r = check_text(p, v);
	if (r >= 0)
		r = set_string(&src->value, v);
	if (r >= 0)
		src->kind = SECRET_VALUE;
	return r;
}

static int parse_secret_file(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	struct secret_source *src = FIELD(o, k, struct secret_source);
	int r = secret_claim(p, src);

	if (r >= 0)
		r = expand_path_or_fail(p, v, &src->value);
	if (r >= 0)
		src->kind = SECRET_FILE;
	return r;
}

static int parse_secret_command(struct parser *p, const struct key_def *k, const char *v,
				void *o)
{
	struct secret_source *src = FIELD(o, k, struct secret_source);
	int r = secret_claim(p, src);

	if (r >= 0)
		r = split_or_fail(p, v, &src->argv);
	if (r >= 0)
		src->kind = SECRET_COMMAND;
	return r;
}

static int parse_secret_credential(struct parser *p, const struct key_def *k, const char *v,
				   void *o)
{
	struct secret_source *src = FIELD(o, k, struct secret_source);
	int r = secret_claim(p, src);

	if (r >= 0 && (!valid_name(v) || streq(v, ".") || streq(v, "..")))
		r = fail_key(p, "expected a credential name without \"/\", got \"%s\"", v);
	if (r >= 0)
		r = set_string(&src->value, v);
	if (r >= 0)
		src->kind = SECRET_CREDENTIAL;
	return r;
}

/* Split "a, b ,c" into trimmed items; an empty value is an empty list, an empty item is a
 * mistake ("a,,b"). */
static int split_list(struct parser *p, const char *v, char ***ret)
{
	_cleanup_strv_free_ char **items = NULL;
	_cleanup_free_ char *copy = strdup(v);
	char *rest = copy, *item;
	int r;

	if (!copy)
		return -ENOMEM;
	if (!*skip_space(v)) {
		*ret = NULL;
		return 0;
	}
	while ((item = strsep(&rest, ","))) {
		if (!*strstrip(item))
			return fail_key(p, "expected a comma-separated list, got an empty item");
		r = strv_extend(&items, item);
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(items);
	return 0;
}

static bool mailbox_same(const char *a, const char *b)
{
	/* RFC 3501 5.1: INBOX is case-insensitive, other names are not. */
	if (strcasecmp(a, "INBOX") == 0)
		return strcasecmp(b, "INBOX") == 0;
	return streq(a, b);
}

static int parse_mailboxes(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	char ***field = FIELD(o, k, char **);
	_cleanup_strv_free_ char **list = NULL;
	int r = split_list(p, v, &list);

	if (r < 0)
		return r;
	if (!list)
		return fail_key(p, "expected at least one mailbox, got nothing");
	/* Repeating the key appends: Debian's libinih cuts lines at 199 characters, so a
	 * long list has to be spread over several lines. */
	size_t base = p->repeat ? strv_length(*field) : 0;
	if (p->repeat) {
		for (size_t i = 0; list[i]; i++) {
			r = strv_extend(field, list[i]);
			if (r < 0)
				return r;
		}
		list = strv_free(list);
	} else {
		strv_free(*field);
		*field = TAKE_PTR(list);
	}
	/* Only this line's names need checking: the earlier ones were (10,000 mailboxes over
	 * repeated lines took 39 s when every line re-checked the whole list). */
	for (size_t i = base; (*field)[i]; i++) {
		if (has_control((*field)[i]))
			return fail_key(p, "expected mailbox names without control characters");
		for (size_t j = 0; j < i; j++)
			if (mailbox_same((*field)[i], (*field)[j]))
				return fail_key(p, "\"%s\" is listed twice", (*field)[i]);
	}
	return 0;
}

static int sink_ref_parse(struct parser *p, const char *item, struct sink_ref *ret)
{
	static const struct {
		const char *prefix;
		enum sink_type type;
	} types[] = { { "webhook:", SINK_WEBHOOK }, { "exec:", SINK_EXEC } };

	if (streq(item, "desktop")) {
		*ret = (struct sink_ref){ .type = SINK_DESKTOP };
		return 0;
	}
	for (size_t i = 0; i < ELEMENTSOF(types); i++) {
		size_t len = strlen(types[i].prefix);

		if (strncmp(item, types[i].prefix, len) != 0 || !valid_name(item + len))
			continue;
		ret->type = types[i].type;
		ret->name = strdup(item + len);
		return ret->name ? 0 : -ENOMEM;
	}
	return fail_key(p, "expected desktop, webhook:NAME or exec:NAME, got \"%s\"", item);
}

static void sinks_free(struct sink_ref *sinks, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(sinks[i].name);
	free(sinks);
}

static bool sink_ref_equal(const struct sink_ref *a, const struct sink_ref *b)
{
	return a->type == b->type && streq_ptr(a->name, b->name);
}

/* Repeating the key appends, like mailboxes. */
static int parse_sink_list(struct parser *p, const char *v, struct sink_ref **field,
			   size_t *n_field, unsigned *line_field)
{
	_cleanup_strv_free_ char **list = NULL;
	int r = split_list(p, v, &list);
	size_t base, n = 0;
	struct sink_ref *sinks;

	if (!p->repeat) {
		sinks_free(*field, *n_field);
		*field = NULL;
		*n_field = 0;
	}
	base = *n_field;
	sinks = calloc(base + strv_length(list) + 1, sizeof(*sinks));
	if (!sinks)
		return -ENOMEM;
	if (base)
		memcpy(sinks, *field, base * sizeof(*sinks));
	free(*field); /* its elements now belong to sinks */
	*field = NULL;
	*n_field = 0;
	for (; r >= 0 && list && list[n]; n++) {
		r = sink_ref_parse(p, list[n], &sinks[base + n]);
		for (size_t j = 0; r >= 0 && j < base + n; j++)
			if (sink_ref_equal(&sinks[j], &sinks[base + n]))
				r = fail_key(p, "\"%s\" is listed twice", list[n]);
	}
	if (r < 0) {
		sinks_free(sinks, base + n);
		return r;
	}
	*field = sinks;
	*n_field = base + n;
	*line_field = p->line;
	return 0;
}

static int parse_sinks(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	struct config_account *a = o;

	return parse_sink_list(p, v, &a->sinks, &a->n_sinks, &a->sinks_line);
}

static int parse_mailbox_sinks(struct parser *p, const struct key_def *k, const char *v,
			       void *o)
{
	struct config_mailbox *m = o;

	return parse_sink_list(p, v, &m->sinks, &m->n_sinks, &m->sinks_line);
}

static int parse_actions(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	struct config_desktop *d = o;
	_cleanup_strv_free_ char **list = NULL;
	int r = split_list(p, v, &list);

	if (r < 0)
		return r;
	d->action_open = d->action_mark_read = false;
	for (size_t i = 0; list && list[i]; i++) {
		if (streq(list[i], "open"))
			d->action_open = true;
		else if (streq(list[i], "mark-read"))
			d->action_mark_read = true;
		else
			return fail_key(p, "expected open or mark-read, got \"%s\"", list[i]);
	}
	return 0;
}

static int parse_url(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	/* Not echoed: webhook URLs often carry their access token. */
	if ((strncasecmp(v, "https://", 8) != 0 && strncasecmp(v, "http://", 7) != 0) ||
	    v[strcspn(v, ":") + 3] == '\0' || strpbrk(v, " \t") || has_control(v))
		return fail_key(p, "expected a URL starting with http:// or https://");
	return set_string(FIELD(o, k, char *), v);
}

static bool is_token(const char *s, size_t len)
{
	/* RFC 9110 5.6.2 tchar */
	static const char extra[] = "!#$%&'*+-.^_`|~";

	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr(extra, s[i]))
			return false;
	return true;
}

static int parse_header(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	const char *colon = strchr(v, ':');
	_cleanup_free_ char *line = NULL;
	const char *value;

	/* The value is not echoed: it is often a bearer token. An empty value is refused too,
	 * because libcurl reads "Name:" as "remove this header". */
	if (!colon || !is_token(v, (size_t)(colon - v)))
		return fail_key(p, "expected \"Name: value\" with a token as Name");
	value = skip_space(colon + 1);
	if (!*value || has_control(value))
		return fail_key(p, "expected \"Name: value\" with a value free of control "
				   "characters");
	if (asprintf(&line, "%.*s: %s", (int)(colon - v), v, value) < 0) {
		line = NULL;
		return -ENOMEM;
	}
	return strv_push(FIELD(o, k, char **), TAKE_PTR(line));
}

static int store_exec_text(struct parser *p, const char *v, char **slot)
{
	if (!*skip_space(v))
		return fail_key(p, "expected a command, got nothing");
	return set_string(slot, v);
}

static int parse_exec_command(struct parser *p, const struct key_def *k, const char *v,
			      void *o)
{
	return store_exec_text(p, v, &p->exec_text[0]);
}

static int parse_exec_post(struct parser *p, const struct key_def *k, const char *v, void *o)
{
	return store_exec_text(p, v, &p->exec_text[1]);
}

/* ---- sections ---- */

#define DURATION(min_, max_) .parse = parse_duration, .min = (min_), .max = (max_)
#define AT_LEAST_1S DURATION(USEC_PER_SEC, USEC_INFINITY)

#define K(field) offsetof(struct config, field)
static const struct key_def imapidled_keys[] = {
	{ "state_dir", parse_state_dir, K(state_dir) },
	{ "log_level", parse_log_level, K(log_level) },
	{ "max_connecting", parse_unsigned, K(max_connecting), 1, 10000 },
};
#undef K

#define K(field) offsetof(struct config_account, field)
static const struct key_def account_keys[] = {
	{ "host", parse_host, K(host), .flags = KEY_REQUIRED },
	{ "port", parse_port, K(port), 1, 65535 },
	{ "tls", parse_tls, K(tls) },
	{ "allow_plaintext", parse_boolean, K(allow_plaintext) },
	{ "tls_ca_file", parse_readable_file, K(tls_ca_file) },
	{ "tls_fingerprint", parse_fingerprint },
	{ "username", parse_string, K(username), .flags = KEY_REQUIRED },
	{ "password", parse_secret_value, K(password) },
	{ "password_file", parse_secret_file, K(password) },
	{ "password_command", parse_secret_command, K(password) },
	{ "password_credential", parse_secret_credential, K(password) },
	{ "auth", parse_auth, K(auth) },
	{ "oauth_token_command", parse_argv, K(oauth_token_command) },
	{ "send_id", parse_boolean, K(send_id) },
	{ "mailboxes", parse_mailboxes, K(mailboxes), .flags = KEY_REPEAT },
	{ "sinks", parse_sinks, .flags = KEY_REPEAT },
	{ "skip_seen", parse_boolean, K(skip_seen) },
	{ "catch_up", parse_unsigned, K(catch_up), 0, 100000 },
	/* RFC 2177: clients should re-issue IDLE at least every 29 minutes. */
	{ "idle_refresh", .offset = K(idle_refresh),
	  DURATION(10 * USEC_PER_SEC, 29 * USEC_PER_MINUTE) },
	{ "poll_interval", .offset = K(poll_interval), AT_LEAST_1S },
	{ "connect_timeout", .offset = K(connect_timeout), AT_LEAST_1S },
	{ "reply_timeout", .offset = K(reply_timeout), AT_LEAST_1S },
};
#undef K

#define K(field) offsetof(struct config_desktop, field)
static const struct key_def desktop_keys[] = {
	{ "on_click", parse_argv, K(on_click) },
	{ "actions", parse_actions },
	{ "urgency", parse_urgency, K(urgency) },
	{ "desktop_entry", parse_string, K(desktop_entry) },
	/* The notification spec carries the timeout as int32 milliseconds. */
	{ "expire_timeout", parse_expire, K(expire_timeout), 0, USEC_PER_DAY },
	{ "summary_threshold", parse_unsigned, K(summary_threshold), 0, 10000 },
	{ "summary_window", .offset = K(summary_window), DURATION(0, USEC_PER_HOUR) },
};
#undef K

#define K(field) offsetof(struct config_webhook, field)
static const struct key_def webhook_keys[] = {
	{ "url", parse_url, K(url), .flags = KEY_REQUIRED },
	{ "secret", parse_secret_value, K(secret) },
	{ "secret_file", parse_secret_file, K(secret) },
	{ "header", parse_header, K(headers), .flags = KEY_REPEAT },
	{ "tls_ca_file", parse_readable_file, K(tls_ca_file) },
	{ "timeout", .offset = K(timeout), AT_LEAST_1S },
	{ "max_retry_age", .offset = K(max_retry_age), AT_LEAST_1S },
	{ "max_in_flight", parse_unsigned, K(max_in_flight), 1, 1000 },
	{ "spool_max", parse_size, K(spool_max_bytes), 1 },
	{ "batch", parse_boolean, K(batch) },
};
#undef K

#define K(field) offsetof(struct config_exec, field)
static const struct key_def exec_keys[] = {
	{ "command", parse_exec_command, .flags = KEY_REQUIRED },
	{ "post_command", parse_exec_post },
	{ "shell", parse_boolean, K(shell) },
	{ "timeout", .offset = K(timeout), AT_LEAST_1S },
};
#undef K

_Static_assert(ELEMENTSOF(account_keys) <= KEYS_MAX, "seen is a 64-bit mask");

static unsigned key_line(struct parser *p, const char *name)
{
	for (size_t i = 0; i < p->type->n_keys; i++)
		if (streq(p->type->keys[i].name, name))
			return p->seen & (1ULL << i) ? p->key_line[i] : 0;
	return 0;
}

static int fail_duplicate_section(struct parser *p, unsigned first)
{
	return fail_section(p, "duplicate section (first at line %u)", first);
}

static int open_imapidled(struct parser *p, const char *name)
{
	if (p->imapidled_line)
		return fail_duplicate_section(p, p->imapidled_line);
	p->imapidled_line = p->line;
	p->object = p->config;
	return 0;
}

static int open_account(struct parser *p, const char *name)
{
	struct config *c = p->config;
	const struct config_account *old = config_find_account(c, name);
	struct config_account *a;

	if (old)
		return fail_duplicate_section(p, old->line);
	a = ARRAY_APPEND(c->accounts, c->n_accounts);
	if (!a || !(a->name = strdup(name)))
		return -ENOMEM;
	a->line = p->line;
	a->tls = TLS_IMPLICIT;
	a->auth = AUTH_AUTO;
	a->skip_seen = true;
	a->catch_up = 50;
	a->idle_refresh = 10 * USEC_PER_MINUTE;
	a->poll_interval = 2 * USEC_PER_MINUTE;
	a->connect_timeout = 30 * USEC_PER_SEC;
	a->reply_timeout = 30 * USEC_PER_SEC;
	p->object = a;
	return 0;
}

static int account_check_password(struct parser *p, struct config_account *a)
{
	/* auto logs in with OAuth when a token command is the only secret given. */
	if (a->auth == AUTH_AUTO && a->password.kind == SECRET_NONE && a->oauth_token_command)
		return 0;
	if (a->auth == AUTH_XOAUTH2 || a->auth == AUTH_OAUTHBEARER) {
		if (!a->oauth_token_command)
			return fail_at(p, p->section_line, p->section, "oauth_token_command",
				       "required key is missing (auth = %s)",
				       auth_mech_to_string(a->auth));
		return 0;
	}
	if (a->password.kind == SECRET_NONE)
		return fail_at(p, p->section_line, p->section, "password",
			       "required key is missing (or password_file, password_command, "
			       "password_credential)");
	return 0;
}

static int close_account(struct parser *p)
{
	struct config_account *a = p->object;
	int r;

	if (a->tls == TLS_NONE && !a->allow_plaintext)
		return fail_at(p, key_line(p, "tls"), p->section, "tls",
			       "\"none\" sends the password unencrypted; add allow_plaintext = yes "
			       "to accept that");
	r = account_check_password(p, a);
	if (r < 0)
		return r;
	if (key_line(p, "port") == 0)
		a->port = a->tls == TLS_IMPLICIT ? 993 : 143;
	if (!a->mailboxes)
		return strv_extend(&a->mailboxes, "INBOX");
	return 0;
}

static int open_desktop(struct parser *p, const char *name)
{
	if (p->config->desktop.present)
		return fail_duplicate_section(p, p->config->desktop.line);
	p->config->desktop.present = true;
	p->config->desktop.line = p->line;
	p->object = &p->config->desktop;
	return 0;
}

static int open_webhook(struct parser *p, const char *name)
{
	struct config *c = p->config;
	const struct config_webhook *old = config_find_webhook(c, name);
	struct config_webhook *w;

	if (old)
		return fail_duplicate_section(p, old->line);
	w = ARRAY_APPEND(c->webhooks, c->n_webhooks);
	if (!w || !(w->name = strdup(name)))
		return -ENOMEM;
	w->line = p->line;
	w->timeout = 15 * USEC_PER_SEC;
	w->max_retry_age = 3 * USEC_PER_DAY;
	w->max_in_flight = 8;
	w->spool_max_bytes = 1ULL << 30;
	p->object = w;
	return 0;
}

static int open_exec(struct parser *p, const char *name)
{
	struct config *c = p->config;
	const struct config_exec *old = config_find_exec(c, name);
	struct config_exec *e;

	if (old)
		return fail_duplicate_section(p, old->line);
	e = ARRAY_APPEND(c->execs, c->n_execs);
	if (!e || !(e->name = strdup(name)))
		return -ENOMEM;
	e->line = p->line;
	e->timeout = 5 * USEC_PER_MINUTE;
	p->object = e;
	return 0;
}

static int exec_argv(struct parser *p, bool shell, const char *key, const char *text,
		     char ***ret)
{
	_cleanup_strv_free_ char **argv = NULL;
	int r;

	if (!shell) {
		r = config_split_command(text, ret);
		if (r == -EINVAL)
			return fail_at(p, key_line(p, key), p->section, key,
				       "unterminated quote or trailing backslash in \"%s\"", text);
		return r;
	}
	if (strv_extend(&argv, "/bin/sh") < 0 || strv_extend(&argv, "-c") < 0 ||
	    strv_extend(&argv, text) < 0)
		return -ENOMEM;
	*ret = TAKE_PTR(argv);
	return 0;
}

static int close_exec(struct parser *p)
{
	struct config_exec *e = p->object;
	int r = exec_argv(p, e->shell, "command", p->exec_text[0], &e->command);

	if (r >= 0 && p->exec_text[1])
		r = exec_argv(p, e->shell, "post_command", p->exec_text[1], &e->post_command);
	return r;
}

static const struct key_def mailbox_keys[] = {
	{ "sinks", parse_mailbox_sinks, .flags = KEY_REQUIRED | KEY_REPEAT },
};

/* [mailbox ACCOUNT/MAILBOX]: account names have no "/", so the first one splits. */
static int open_mailbox(struct parser *p, const char *name)
{
	struct config *c = p->config;
	const char *slash = strchr(name, '/');
	struct config_mailbox *m;

	if (!slash || slash == name || !slash[1])
		return fail_section(p, "expected [mailbox ACCOUNT/MAILBOX]");
	for (size_t i = 0; i < c->n_mailboxes; i++)
		if (strncmp(c->mailboxes[i].account, name, (size_t)(slash - name)) == 0 &&
		    !c->mailboxes[i].account[slash - name] &&
		    mailbox_same(c->mailboxes[i].mailbox, slash + 1))
			return fail_duplicate_section(p, c->mailboxes[i].line);
	m = ARRAY_APPEND(c->mailboxes, c->n_mailboxes);
	if (!m)
		return -ENOMEM;
	m->line = p->line;
	m->account = strndup(name, (size_t)(slash - name));
	m->mailbox = strdup(slash + 1);
	if (!m->account || !m->mailbox)
		return -ENOMEM;
	p->object = m;
	return 0;
}

static const struct section_type section_types[] = {
	{ "imapidled", false, imapidled_keys, ELEMENTSOF(imapidled_keys), open_imapidled },
	{ "account", true, account_keys, ELEMENTSOF(account_keys), open_account, close_account },
	{ "desktop", false, desktop_keys, ELEMENTSOF(desktop_keys), open_desktop },
	{ "webhook", true, webhook_keys, ELEMENTSOF(webhook_keys), open_webhook },
	{ "exec", true, exec_keys, ELEMENTSOF(exec_keys), open_exec, close_exec },
	{ "mailbox", true, mailbox_keys, ELEMENTSOF(mailbox_keys), open_mailbox,
	  .slash_name = true },
};

/* Finish the current section: required keys, then the type's own checks and defaults. */
static int section_end(struct parser *p)
{
	const struct section_type *t = p->type;
	int r = 0;

	if (!t)
		return 0;
	for (size_t i = 0; i < t->n_keys; i++)
		if ((t->keys[i].flags & KEY_REQUIRED) && !(p->seen & (1ULL << i)))
			return fail_at(p, p->section_line, p->section, t->keys[i].name,
				       "required key is missing");
	if (t->close)
		r = t->close(p);
	for (size_t i = 0; i < ELEMENTSOF(p->exec_text); i++)
		p->exec_text[i] = mfree(p->exec_text[i]);
	p->type = NULL;
	p->object = NULL;
	return r;
}

static const struct section_type *section_type_find(const char *word)
{
	for (size_t i = 0; i < ELEMENTSOF(section_types); i++)
		if (streq(section_types[i].name, word))
			return &section_types[i];
	return NULL;
}

static int fail_unknown_section(struct parser *p, const char *word)
{
	const char *hint = closest_name(word, section_types, ELEMENTSOF(section_types),
					sizeof(section_types[0]));

	if (hint)
		return fail_section(p, "unknown section (did you mean \"%s\"?)", hint);
	return fail_section(p, "unknown section");
}

/* text: what is between the brackets, trimmed. */
static int section_begin(struct parser *p, const char *text)
{
	_cleanup_free_ char *word = NULL;
	const struct section_type *t;
	const char *name;
	int r = section_end(p);

	if (r < 0)
		return r;
	free(p->section);
	p->section = strdup(text);
	word = strndup(text, strcspn(text, " \t"));
	if (!p->section || !word)
		return -ENOMEM;
	p->section_line = p->line;
	p->seen = 0;
	name = skip_space(text + strlen(word));
	t = section_type_find(word);
	if (!t)
		return fail_unknown_section(p, word);
	if (t->named && !*name)
		return fail_section(p, "expected [%s NAME]", t->name);
	if (!t->named && *name)
		return fail_section(p, "expected [%s] without a name", t->name);
	if (t->named && !t->slash_name && !valid_name(name))
		return fail_section(p, "expected a NAME without \"/\" or control characters");
	r = t->open(p, name);
	if (r >= 0)
		p->type = t;
	return r;
}

static int examine_header(struct parser *p, const char *s)
{
	_cleanup_free_ char *text = NULL;
	const char *end = strchr(s, ']');
	const char *rest;

	if (!end)
		return fail_line(p, "expected \"]\" at the end of the section header");
	rest = skip_space(end + 1);
	if (*rest && *rest != ';' && *rest != '#')
		return fail_line(p, "expected the end of the line after \"]\"");
	text = strndup(s + 1, (size_t)(end - s - 1));
	if (!text)
		return -ENOMEM;
	return section_begin(p, strstrip(text));
}

/* Syntax is checked here rather than left to inih, so that the first error is reported as
 * soon as it is seen and names what was expected. */
static int examine_line(struct parser *p, const char *s)
{
	size_t n;

	if (*s == '\0' || *s == ';' || *s == '#')
		return 0;
	if (*s == '[')
		return examine_header(p, s);
	n = strcspn(s, "=:");
	if (s[n] == '\0')
		return fail_line(p, "expected \"key = value\" or a [section] header");
	if (n == 0)
		return fail_line(p, "expected \"key = value\", got no key");
	return 0;
}

static char *read_line(char *str, int num, void *stream)
{
	struct parser *p = stream;
	ssize_t n;
	char *s;

	if (p->r < 0)
		return NULL;
	n = getline(&p->buf, &p->bufsize, p->f);
	if (n < 0) {
		if (ferror(p->f))
			fail_at(p, 0, NULL, NULL, "cannot read: %s", strerror(errno));
		return NULL;
	}
	p->line++;
	s = p->buf;
	if ((size_t)n != strlen(s)) {
		fail_line(p, "unexpected NUL byte");
		return NULL;
	}
	if (p->line == 1 && strncmp(s, "\xef\xbb\xbf", 3) == 0) /* UTF-8 BOM */
		s += 3;
	s += strspn(s, " \t\f\v");
	while (n > 0 && (p->buf[n - 1] == '\n' || p->buf[n - 1] == '\r'))
		p->buf[--n] = '\0';
	if (strlen(s) >= (size_t)num) {
		fail_line(p, "line is too long (at most %d characters)", num - 1);
		return NULL;
	}
	if (examine_line(p, s) < 0)
		return NULL;
	memcpy(str, s, strlen(s) + 1);
	return str;
}

static int fail_unknown_key(struct parser *p, const char *name)
{
	const struct section_type *t = p->type;
	const char *hint = closest_name(name, t->keys, t->n_keys, sizeof(t->keys[0]));

	if (hint)
		return fail_at(p, p->line, p->section, name, "unknown key (did you mean \"%s\"?)",
			       hint);
	return fail_at(p, p->line, p->section, name, "unknown key");
}

static int handle_key(struct parser *p, const char *name, const char *value)
{
	const struct section_type *t = p->type;
	size_t i;

	if (!t)
		return fail_line(p, "key \"%s\" outside of any section", name);
	for (i = 0; i < t->n_keys && !streq(t->keys[i].name, name); i++)
		;
	if (i == t->n_keys)
		return fail_unknown_key(p, name);
	if ((p->seen & (1ULL << i)) && !(t->keys[i].flags & KEY_REPEAT))
		return fail_at(p, p->line, p->section, name, "duplicate key (first at line %u)",
			       p->key_line[i]);
	p->repeat = (p->seen & (1ULL << i)) != 0;
	p->seen |= 1ULL << i;
	p->key_line[i] = p->line;
	p->key = t->keys[i].name;
	return t->keys[i].parse(p, &t->keys[i], value, p->object);
}

static int ini_handler_cb(void *user, const char *section, const char *name, const char *value)
{
	struct parser *p = user;
	int r;

	if (p->r < 0)
		return 0;
	r = handle_key(p, name, value);
	p->key = NULL;
	if (r < 0 && p->r == 0)
		p->r = r;
	return r >= 0;
}

/* ---- whole-file checks ---- */

static int check_sink_list(struct parser *p, const struct sink_ref *sinks, size_t n,
			   const char *section, unsigned line)
{
	for (size_t i = 0; i < n; i++) {
		const struct sink_ref *s = &sinks[i];
		bool found = s->type == SINK_DESKTOP ||
			     (s->type == SINK_WEBHOOK && config_find_webhook(p->config, s->name)) ||
			     (s->type == SINK_EXEC && config_find_exec(p->config, s->name));

		if (!found)
			return fail_at(p, line, section, "sinks", "no [%s %s] section",
				       s->type == SINK_WEBHOOK ? "webhook" : "exec", s->name);
	}
	return 0;
}

static int check_mailbox_section(struct parser *p, const struct config_mailbox *m)
{
	const struct config_account *a = config_find_account(p->config, m->account);
	_cleanup_free_ char *section = NULL;
	bool watched = false;

	if (asprintf(&section, "mailbox %s/%s", m->account, m->mailbox) < 0)
		return -ENOMEM;
	if (!a)
		return fail_at(p, m->line, section, NULL, "no [account %s] section", m->account);
	for (char **i = a->mailboxes; i && *i && !watched; i++)
		watched = mailbox_same(*i, m->mailbox);
	if (!watched)
		return fail_at(p, m->line, section, NULL,
			       "\"%s\" is not among [account %s]'s mailboxes", m->mailbox,
			       m->account);
	return check_sink_list(p, m->sinks, m->n_sinks, section, m->sinks_line);
}

static int check_sink_refs(struct parser *p, const struct config_account *a)
{
	for (size_t i = 0; i < a->n_sinks; i++) {
		const struct sink_ref *s = &a->sinks[i];
		_cleanup_free_ char *section = NULL;
		bool found = s->type == SINK_DESKTOP ||
			     (s->type == SINK_WEBHOOK && config_find_webhook(p->config, s->name)) ||
			     (s->type == SINK_EXEC && config_find_exec(p->config, s->name));

		if (found)
			continue;
		if (asprintf(&section, "account %s", a->name) < 0)
			return -ENOMEM;
		return fail_at(p, a->sinks_line, section, "sinks", "no [%s %s] section",
			       s->type == SINK_WEBHOOK ? "webhook" : "exec", s->name);
	}
	return 0;
}

static int default_state_dir(struct parser *p)
{
	const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
	int n;

	/* The XDG spec says to ignore relative values. */
	if (xdg && xdg[0] == '/')
		n = asprintf(&p->config->state_dir, "%s/imapidled", xdg);
	else if (home && home[0] == '/')
		n = asprintf(&p->config->state_dir, "%s/.local/state/imapidled", home);
	else
		return fail_at(p, 0, "imapidled", "state_dir",
			       "neither $XDG_STATE_HOME nor $HOME is set; set state_dir");
	if (n < 0) {
		p->config->state_dir = NULL;
		return -ENOMEM;
	}
	return 0;
}

static int finish_config(struct parser *p)
{
	struct config *c = p->config;
	int r = section_end(p);

	for (size_t i = 0; r >= 0 && i < c->n_accounts; i++)
		r = check_sink_refs(p, &c->accounts[i]);
	for (size_t i = 0; r >= 0 && i < c->n_mailboxes; i++)
		r = check_mailbox_section(p, &c->mailboxes[i]);
	if (r >= 0 && c->n_accounts == 0)
		r = fail_at(p, 0, NULL, NULL, "no [account NAME] section");
	if (r >= 0 && !c->state_dir)
		r = default_state_dir(p);
	return r;
}

static struct config *config_new(const char *path)
{
	struct config *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->path = strdup(path);
	if (!c->path)
		return config_free(c);
	c->log_level = LOG_INFO;
	c->max_connecting = 50;
	/* Defaults hold even without a [desktop] section. */
	c->desktop.action_open = true;
	c->desktop.urgency = URGENCY_NORMAL;
	c->desktop.expire_timeout = USEC_INFINITY;
	c->desktop.summary_threshold = 3;
	c->desktop.summary_window = 2 * USEC_PER_SEC;
	return c;
}

static void parser_done(struct parser *p)
{
	/* The line buffer held "password = ..." lines. */
	secure_wipe(p->buf, p->bufsize);
	free(p->buf);
	free(p->section);
	for (size_t i = 0; i < ELEMENTSOF(p->exec_text); i++)
		free(p->exec_text[i]);
	free(p->error);
}

static int open_config_file(struct parser *p, FILE **ret)
{
	FILE *f = fopen(p->path, "re");
	struct stat st;
	int e;

	if (!f) {
		e = errno;
		fail_at(p, 0, NULL, NULL, "cannot open: %s", strerror(e));
		return -e;
	}
	if (fstat(fileno(f), &st) < 0 || S_ISDIR(st.st_mode)) {
		e = S_ISDIR(st.st_mode) ? EISDIR : errno;
		fclose(f);
		fail_at(p, 0, NULL, NULL, "cannot open: %s", strerror(e));
		return -e;
	}
	*ret = f;
	return 0;
}

int config_parse(const char *path, struct config **ret, char **ret_error)
{
	_cleanup_(parser_done) struct parser p = { .path = path };
	_cleanup_config_free_ struct config *c = NULL;
	_cleanup_(fclosep) FILE *f = NULL;
	int r;

	c = config_new(path);
	if (!c)
		return -ENOMEM;
	p.config = c;
	r = open_config_file(&p, &f);
	if (r >= 0) {
		p.f = f;
		r = ini_parse_stream(read_line, &p, ini_handler_cb, &p);
		if (p.r == 0 && r == -2)
			p.r = -ENOMEM;
		else if (p.r == 0 && r > 0) /* inih disagreed with examine_line() */
			fail_at(&p, (unsigned)r, NULL, NULL, "syntax error");
		if (p.r == 0)
			r = finish_config(&p);
		if (p.r == 0)
			p.r = MIN(r, 0);
		r = p.r;
	}
	if (r < 0) {
		if (ret_error)
			*ret_error = TAKE_PTR(p.error);
		return r;
	}
	*ret = TAKE_PTR(c);
	return 0;
}

/* ---- lookup, comparison, destruction ---- */

static char *strv_join(char *const *v, const char *sep)
{
	size_t len = 1;
	char *j;

	for (size_t i = 0; v && v[i]; i++)
		len += strlen(v[i]) + strlen(sep);
	j = calloc(len, 1);
	for (size_t i = 0; j && v && v[i]; i++) {
		if (i > 0)
			strcat(j, sep);
		strcat(j, v[i]);
	}
	return j;
}

static int config_candidates(char ***ret)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	_cleanup_strv_free_ char **v = NULL;
	char *c = NULL;
	int n = 0;

	if (xdg && xdg[0] == '/') /* the XDG spec says to ignore relative values */
		n = asprintf(&c, "%s/imapidled/config", xdg);
	else if (home && home[0] == '/')
		n = asprintf(&c, "%s/.config/imapidled/config", home);
	if (n < 0)
		return -ENOMEM;
	if ((c && strv_push(&v, c) < 0) || strv_extend(&v, "/etc/imapidled/config") < 0)
		return -ENOMEM;
	*ret = TAKE_PTR(v);
	return 0;
}

int config_find(const char *explicit_path, char **ret_path, char **ret_tried)
{
	_cleanup_strv_free_ char **candidates = NULL;
	char *found;
	int r;

	if (explicit_path) {
		found = strdup(explicit_path);
		if (!found)
			return -ENOMEM;
		*ret_path = found;
		return 0;
	}
	r = config_candidates(&candidates);
	if (r < 0)
		return r;
	for (char **c = candidates; *c; c++)
		if (access(*c, F_OK) == 0) {
			found = strdup(*c);
			if (!found)
				return -ENOMEM;
			*ret_path = found;
			return 0;
		}
	if (ret_tried) {
		char *tried = strv_join(candidates, ", ");

		if (!tried)
			return -ENOMEM;
		*ret_tried = tried;
	}
	return -ENOENT;
}

static void secret_source_done(struct secret_source *s)
{
	/* For SECRET_VALUE the value is the secret; for the others wiping costs nothing. */
	s->value = secure_free(s->value);
	s->argv = strv_free(s->argv);
	s->key = mfree(s->key);
}

static void account_done(struct config_account *a)
{
	free(a->name);
	free(a->host);
	free(a->tls_ca_file);
	free(a->username);
	secret_source_done(&a->password);
	strv_free(a->oauth_token_command);
	strv_free(a->mailboxes);
	sinks_free(a->sinks, a->n_sinks);
}

static void webhook_done(struct config_webhook *w)
{
	free(w->name);
	free(w->url);
	secret_source_done(&w->secret);
	strv_free(w->headers);
	free(w->tls_ca_file);
}

static void exec_done(struct config_exec *e)
{
	free(e->name);
	strv_free(e->command);
	strv_free(e->post_command);
}

struct config *config_free(struct config *c)
{
	if (!c)
		return NULL;
	for (size_t i = 0; i < c->n_accounts; i++)
		account_done(&c->accounts[i]);
	free(c->accounts);
	strv_free(c->desktop.on_click);
	free(c->desktop.desktop_entry);
	for (size_t i = 0; i < c->n_webhooks; i++)
		webhook_done(&c->webhooks[i]);
	free(c->webhooks);
	for (size_t i = 0; i < c->n_execs; i++)
		exec_done(&c->execs[i]);
	free(c->execs);
	for (size_t i = 0; i < c->n_mailboxes; i++) {
		free(c->mailboxes[i].account);
		free(c->mailboxes[i].mailbox);
		sinks_free(c->mailboxes[i].sinks, c->mailboxes[i].n_sinks);
	}
	free(c->mailboxes);
	free(c->path);
	free(c->state_dir);
	return mfree(c);
}

bool config_uses_sink(const struct config *c, enum sink_type type)
{
	for (size_t i = 0; i < c->n_accounts; i++)
		for (size_t j = 0; j < c->accounts[i].n_sinks; j++)
			if (c->accounts[i].sinks[j].type == type)
				return true;
	for (size_t i = 0; i < c->n_mailboxes; i++)
		for (size_t j = 0; j < c->mailboxes[i].n_sinks; j++)
			if (c->mailboxes[i].sinks[j].type == type)
				return true;
	return false;
}

bool config_mailbox_sinks(const struct config *c, const char *account, const char *mailbox,
			  const struct sink_ref **ret, size_t *ret_n)
{
	const struct config_account *a = config_find_account(c, account);

	if (!a)
		return false;
	for (size_t i = 0; i < c->n_mailboxes; i++)
		if (streq(c->mailboxes[i].account, account) &&
		    mailbox_same(c->mailboxes[i].mailbox, mailbox)) {
			*ret = c->mailboxes[i].sinks;
			*ret_n = c->mailboxes[i].n_sinks;
			return true;
		}
	*ret = a->sinks;
	*ret_n = a->n_sinks;
	return true;
}

const struct config_account *config_find_account(const struct config *c, const char *name)
{
	for (size_t i = 0; c && i < c->n_accounts; i++)
		if (streq(c->accounts[i].name, name))
			return &c->accounts[i];
	return NULL;
}

const struct config_webhook *config_find_webhook(const struct config *c, const char *name)
{
	for (size_t i = 0; c && i < c->n_webhooks; i++)
		if (streq(c->webhooks[i].name, name))
			return &c->webhooks[i];
	return NULL;
}

const struct config_exec *config_find_exec(const struct config *c, const char *name)
{
	for (size_t i = 0; c && i < c->n_execs; i++)
		if (streq(c->execs[i].name, name))
			return &c->execs[i];
	return NULL;
}

static bool secret_source_equal(const struct secret_source *a, const struct secret_source *b)
{
	return a->kind == b->kind && streq_ptr(a->value, b->value) && strv_equal(a->argv, b->argv);
}

static bool sinks_equal(const struct config_account *a, const struct config_account *b)
{
	if (a->n_sinks != b->n_sinks)
		return false;
	for (size_t i = 0; i < a->n_sinks; i++)
		if (a->sinks[i].type != b->sinks[i].type ||
		    !streq_ptr(a->sinks[i].name, b->sinks[i].name))
			return false;
	return true;
}

static bool account_tls_equal(const struct config_account *a, const struct config_account *b)
{
	if (a->has_fingerprint != b->has_fingerprint)
		return false;
	if (a->has_fingerprint &&
	    memcmp(a->tls_fingerprint, b->tls_fingerprint, sizeof(a->tls_fingerprint)) != 0)
		return false;
	return a->tls == b->tls && a->allow_plaintext == b->allow_plaintext &&
	       streq_ptr(a->tls_ca_file, b->tls_ca_file);
}

bool config_account_equal(const struct config_account *a, const struct config_account *b)
{
	return streq(a->name, b->name) && streq_ptr(a->host, b->host) && a->port == b->port &&
	       account_tls_equal(a, b) && streq_ptr(a->username, b->username) &&
	       secret_source_equal(&a->password, &b->password) && a->auth == b->auth &&
	       strv_equal(a->oauth_token_command, b->oauth_token_command) &&
	       a->send_id == b->send_id && strv_equal(a->mailboxes, b->mailboxes) &&
	       sinks_equal(a, b) && a->skip_seen == b->skip_seen && a->catch_up == b->catch_up &&
	       a->idle_refresh == b->idle_refresh && a->poll_interval == b->poll_interval &&
	       a->connect_timeout == b->connect_timeout && a->reply_timeout == b->reply_timeout;
}

const char *tls_mode_to_string(enum tls_mode m)
{
	return (size_t)m < ELEMENTSOF(tls_names) ? tls_names[m] : "?";
}

const char *auth_mech_to_string(enum auth_mech m)
{
	return (size_t)m < ELEMENTSOF(auth_names) ? auth_names[m] : "?";
}
