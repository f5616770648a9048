/* Message header decoding: RFC 2047 encoded-words, address lists, dates → safe UTF-8.
 *
 * Every input here comes from a mail server we do not trust. All functions take a byte
 * string with an explicit length (embedded NULs allowed), never read past it, run in time
 * linear in it, and bound their output. Nothing fails because the input is malformed:
 * text that cannot be decoded is kept readable, and only out-of-memory (or, for dates, an
 * unparseable string) is an error.
 *
 * "Safe UTF-8", the form of every string these functions return:
 *   - valid UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF;
 *   - no control characters: C0 (U+0000-U+001F, so also TAB, CR, LF and ESC), DEL, C1
 *     (U+0080-U+009F), the line/paragraph separators U+2028/U+2029 and the bidi
 *     embeddings, overrides and isolates U+202A-U+202E, U+2066-U+2069 (used to spoof
 *     subjects and file names) are each replaced by a space;
 *   - runs of spaces collapsed to one, no leading or trailing space;
 *   - at most max_out bytes; when cut, the cut is on a character boundary and "…"
 *     (U+2026, 3 bytes, counted in max_out) ends the string if it fits.
 * So the result can go into a desktop notification, a JSON string, an environment
 * variable or a log line as it is. */
#pragma once

#include <stddef.h>
#include <time.h>

/* Bounds mime_parse_address_list() applies to each entry. */
#define MIME_NAME_MAX 256     /* display name, bytes of safe UTF-8 */
#define MIME_ADDRESS_MAX 320  /* address: 64 local-part + "@" + 255 domain (RFC 5321) */

/* Decode an unstructured header value (Subject, or a display name) to safe UTF-8.
 *
 * - RFC 2047 encoded-words "=?charset?B|Q?text?=" (B/Q in either case; an RFC 2231
 *   language suffix "charset*lang" is ignored) are decoded with iconv; any charset glibc
 *   knows works, a few common aliases it lacks are mapped (ks_c_5601-1987 → CP949,
 *   gb2312 → GB18030, iso-8859-1 → Windows-1252 as every browser does...).
 * - Encoded-words separated only by white space are joined, the white space dropped
 *   (RFC 2047 §6.2). The bytes of adjacent words in the same charset are decoded together,
 *   so a multi-byte character split across two words comes out whole.
 * - Leniency, as real mail needs: words are recognised even when glued to text
 *   ("Re:=?utf-8?q?x?="), Q text may carry raw 8-bit bytes, B text may lack its padding.
 * - A word that is malformed (bad base64, no "?=", an unknown charset such as
 *   "=?x-bogus?Q?a?=") is kept as its raw text; bytes a charset cannot convert become
 *   U+FFFD.
 * - Raw 8-bit text outside encoded-words: valid UTF-8 sequences pass through (RFC 6532);
 *   every byte that does not start one is read as Windows-1252 (the usual mislabelled
 *   Latin-1 of old mailers), and its five unassigned bytes become U+FFFD. Charsets that
 *   promise nothing ("us-ascii" carrying 8-bit bytes, "unknown-8bit", "x-unknown") get
 *   the same treatment.
 * - Folding (CRLF followed by white space) vanishes in the white-space collapse.
 *
 * Returns a newly allocated string (free() it), or NULL on out-of-memory only. */
char *mime_decode_header(const char *in, size_t len, size_t max_out);

/* Make an arbitrary byte string safe UTF-8: each byte that does not start a valid
 * UTF-8 sequence becomes U+FFFD, and controls are stripped as above. No RFC 2047
 * decoding. Returns a newly allocated string, or NULL on out-of-memory only. */
char *mime_sanitize_utf8(const char *in, size_t len, size_t max_out);

struct mime_address {
	char *name;    /* owned; decoded display name, or NULL when there is none */
	char *address; /* owned; never NULL, "" when the entry had only a name ("<>") */
};

/* Parse an address-list header value (From, To, Cc, Reply-To; RFC 5322 §3.4) into
 * entries: `"Name" <a@b>`, `Name <a@b>`, `a@b`, `a@b (Comment)` (the comment becomes the
 * name), `Name a@b` (angle brackets forgotten), groups (`Team: a@b, c@d;` yields the
 * members, `undisclosed-recipients:;` nothing), quoted-pairs, nested comments, commas
 * inside quotes and comments, obsolete source routes (`<@relay:a@b>`).
 *
 * Names are decoded with mime_decode_header() (encoded-words in quoted strings too, as
 * mail clients do) and bounded by MIME_NAME_MAX. Addresses are safe UTF-8 with all white
 * space removed, case kept, bounded by MIME_ADDRESS_MAX. Entries with neither a name nor
 * an address are skipped; at most max_addrs entries are returned, the rest is ignored.
 *
 * On success returns the number of entries n (≥ 0) and sets *ret to a newly allocated
 * array of n entries (NULL when n == 0) and *ret_n to n; free it with
 * mime_address_list_free(). Returns -ENOMEM on out-of-memory, and then writes neither. */
int mime_parse_address_list(const char *in, size_t len, size_t max_addrs,
			    struct mime_address **ret, size_t *ret_n);

/* Free an array from mime_parse_address_list() (NULL allowed). Returns NULL. */
struct mime_address *mime_address_list_free(struct mime_address *a, size_t n);

/* Find the first field called `name` (ASCII, case-insensitive; white space before the
 * colon tolerated) in a raw header block ("Name: value\r\n" lines with folding, LF-only
 * lines too; a blank line ends the block). On success sets *ret_value to a newly allocated
 * copy of the field's value, unfolded (each line break before white space removed),
 * leading and trailing white space trimmed, NUL bytes replaced by spaces, but otherwise
 * raw: still to be decoded. Returns 0, -ENOENT when there is no such field, -EINVAL for an
 * empty name, -ENOMEM. */
int mime_header_get(const char *block, size_t len, const char *name, char **ret_value);

/* Parse an RFC 5322 date-time ("Tue, 1 Jul 2003 10:52:37 +0200") into UTC seconds.
 * Lenient: day name optional, seconds optional, "-" accepted between date parts, full month
 * names, 2- and 3-digit years (RFC 5322 §4.3), obsolete zones (UT, GMT, EST, ... PDT,
 * military letters and unknown alphabetic zones as -0000), no zone at all (UTC), and a
 * trailing comment such as "(CEST)". Returns 0, or -EINVAL when unparseable or out of
 * range (year 1900-9999). */
int mime_parse_rfc5322_date(const char *s, time_t *ret);

/* Parse an IMAP INTERNALDATE (RFC 3501 date-time, "17-Jul-1996 02:44:25 -0700", the day
 * possibly space-padded, surrounding double quotes tolerated) into UTC seconds. Returns 0
 * or -EINVAL. */
int mime_parse_internaldate(const char *s, time_t *ret);

/* Format a time as RFC 3339 UTC, "2026-11-22T12:03:00Z". Years outside 0-9999 are
 * clamped to the nearest representable instant, so the buffer is always filled. */
void mime_format_rfc3339(time_t t, char buf[static 32]);
