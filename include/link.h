/* An IMAP session over a transport connection, on the event loop.
 *
 * The link is the only place where the sans-I/O session meets the world: it feeds the
 * session the transport's bytes and the clock, sends what the session writes, runs the
 * STARTTLS upgrade it asks for, and keeps one timer at the session's deadline. Everything
 * the session learns reaches the owner through the same imap_session_ops it gave (send and
 * start_tls are the link's own and ignored there).
 *
 * Lifetime: the owner creates the link and ends it with link_release(), which may be called
 * from inside any of the link's callbacks: the link stops calling back at once and is freed
 * from the event loop right after. */
#pragma once

#include <systemd/sd-event.h>

#include "imap/session.h"
#include "net/conn.h"

struct link;
struct resolver;

int link_new(sd_event *e, struct resolver *r, const struct conn_params *cp,
	     const struct imap_session_params *sp, const struct imap_session_ops *ops,
	     void *userdata, struct link **ret);

/* The connection and login parameters of an account, for a link named name (for logs) with
 * the given goal; the caller adds what its goal needs (mailbox, state, store_uid...).
 * Everything is borrowed from c, name, password and token. */
void link_params_from_account(const struct config_account *c, const char *name,
			      enum imap_goal goal, const char *password, const char *token,
			      struct conn_params *ret_cp, struct imap_session_params *ret_sp);

/* Stop and free (deferred). Returns NULL. */
struct link *link_release(struct link *l);

/* Forwarded to the session (see session.h); they do nothing on a dead link. */
int link_probe(struct link *l);
int link_logout(struct link *l);
uint64_t link_capabilities(const struct link *l);
bool link_is_idle(const struct link *l);
