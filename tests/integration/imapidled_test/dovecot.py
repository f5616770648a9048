"""A private Dovecot 2.3 for one test session (or one test), on random loopback ports.

Listeners (all on loopback, ports chosen at construction and kept across stop()/start()):
  imaps     host:imaps_port                   implicit TLS
  starttls  starttls_host:starttls_port       plaintext greeting; STARTTLS, and LOGINDISABLED
                                              until it is done (a real server's behaviour)
  plain     host:plain_port                   plaintext; LOGIN/AUTHENTICATE allowed (and
                                              STARTTLS offered too)

Why two plaintext listeners: Dovecot 2.3 has one global `disable_plaintext_auth` and treats a
connection whose remote IP equals its local IP as "secured", so from 127.0.0.1 to 127.0.0.1
plaintext auth is always allowed. The starttls listener therefore binds 127.0.0.2 (the kernel
answers all of 127/8 on lo and picks 127.0.0.1 as the source), which Dovecot does not count
as secured: it advertises LOGINDISABLED and refuses LOGIN before STARTTLS. The certificate
carries IP SANs for both addresses and DNS:localhost. Where 127.0.0.2 cannot be bound the
starttls listener falls back to 127.0.0.1 and `strict_starttls` is False.

Runs as root (mail processes as `nobody`, or $IMAPIDLED_TEST_MAIL_USER; internal/login users
dovecot/dovenull) and as an ordinary user (every service as that user, no chroot).
"""
import email.message
import email.policy
import email.utils
import grp
import imaplib
import os
import pwd
import re
import secrets
import signal
import socket
import subprocess
import threading
import time

from . import util

DOVECOT = os.environ.get("IMAPIDLED_TEST_DOVECOT", "/usr/sbin/dovecot")
DOVEADM = os.environ.get("IMAPIDLED_TEST_DOVEADM", "/usr/bin/doveadm")

# Dovecot 2.3.19's built-in post-login capability list (it adds LITERAL+, SPECIAL-USE and
# NOTIFY itself), minus IDLE. Dovecot still *accepts* IDLE when it is not advertised: this
# only changes what a client is told.
CAPABILITY_WITHOUT_IDLE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE SORT SORT=DISPLAY THREAD=REFERENCES "
    "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
    "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
    "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW "
    "STATUS=SIZE SAVEDATE")

# The harness's own IMAP sessions come from this source address (trusted, so plaintext
# LOGIN is allowed), which keeps them out of login_count() and imap_sessions() by default.
HARNESS_SOURCE = "127.0.0.3"

_PROCTITLE = re.compile(r"/imap \[(\S+) (\S+) (.*)\]$")
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")


def imap_utf7(name):
    """Encode a mailbox name in IMAP's modified UTF-7 (RFC 3501 5.1.3)."""
    import base64
    out, buf = [], []

    def flush():
        if buf:
            b = base64.b64encode("".join(buf).encode("utf-16-be")).rstrip(b"=")
            out.append("&" + b.decode().replace("/", ",") + "-")
            buf.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7e:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            buf.append(ch)
    flush()
    return "".join(out)


def quote_mailbox(name):
    n = imap_utf7(name)
    return '"' + n.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_message(subject="Test message", from_="Alice Example <alice@example.com>",
                  to="Bob Example <bob@example.com>", body="Hello.\n", headers=None):
    """An RFC 5322 message as CRLF bytes; non-ASCII headers become RFC 2047 words."""
    m = email.message.EmailMessage(policy=email.policy.SMTP)
    m["From"] = from_
    m["To"] = to
    m["Subject"] = subject
    m["Date"] = email.utils.formatdate(localtime=False)
    m["Message-ID"] = email.utils.make_msgid(domain="imapidled.test")
    for k, v in (headers or {}).items():
        m[k] = v
    m.set_content(body)
    return m.as_bytes()


class _SourceMixin:
    source = None

    def _create_socket(self, timeout):
        if timeout is not None and not timeout:
            raise ValueError("Non-blocking socket (timeout=0) is not supported")
        src = (self.source, 0) if self.source else None
        return socket.create_connection((self.host, self.port), timeout, source_address=src)


class IMAP4(_SourceMixin, imaplib.IMAP4):
    def __init__(self, host, port, timeout=None, source=None):
        self.source = source
        super().__init__(host, port, timeout)


class IMAP4_SSL(_SourceMixin, imaplib.IMAP4_SSL):
    def __init__(self, host, port, ssl_context, timeout=None, source=None):
        self.source = source
        super().__init__(host, port, ssl_context=ssl_context, timeout=timeout)

    def _create_socket(self, timeout):
        sock = _SourceMixin._create_socket(self, timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class MailUser:
    """A user of one Dovecot, with the Dovecot helpers bound to it."""

    def __init__(self, dovecot, name, password):
        self.dovecot, self.name, self.password = dovecot, name, password

    def __repr__(self):
        return f"MailUser({self.name!r})"

    def deliver(self, mailbox="INBOX", **kw):
        return self.dovecot.deliver(self.name, mailbox, **kw)

    def imap_client(self, **kw):
        return self.dovecot.imap_client(self.name, **kw)

    def deliver_offline(self, **kw):
        return self.dovecot.deliver_offline(self.name, **kw)

    def fetch_flags(self, mailbox, uid):
        return self.dovecot.fetch_flags(self.name, mailbox, uid)

    def status(self, mailbox="INBOX"):
        return self.dovecot.status(self.name, mailbox)

    def wait_for_idle(self, count=1, timeout=10.0, harness=False):
        return self.dovecot.wait_for_idle(self.name, count, timeout, harness)

    def login_count(self):
        return self.dovecot.login_count(self.name)


class Dovecot:
    """A private Dovecot. Construct, then start() (the fixtures do both); close() at the end."""

    name = "dovecot"

    def __init__(self, pki, *, disable_idle=False, imap_capability=None, extra_conf="",
                 mail_user=None, auth_penalty=False, oauth2=None):
        self.pki = pki
        self.dir = util.make_tmpdir("imapidled-dovecot-")
        self.conf_path = os.path.join(self.dir, "dovecot.conf")
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.stderr_path = os.path.join(self.dir, "dovecot.stderr")
        self.users_dir = os.path.join(self.dir, "users")
        self.home_root = os.path.join(self.dir, "home")
        self.base_dir = os.path.join(self.dir, "run")
        self.host = "127.0.0.1"
        self.strict_starttls = util.can_bind("127.0.0.2")
        self.starttls_host = "127.0.0.2" if self.strict_starttls else "127.0.0.1"
        self.harness_source = HARNESS_SOURCE if util.can_bind(HARNESS_SOURCE) else None
        self._harness_logins = {}
        self.disable_idle = disable_idle
        self.imap_capability = imap_capability or (CAPABILITY_WITHOUT_IDLE if disable_idle
                                                    else None)
        self.extra_conf = extra_conf
        self.auth_penalty = auth_penalty
        # oauth2: settings for an oauth2 passdb (dovecot-oauth2.conf.ext), e.g.
        # {"introspection_mode": "post", "introspection_url": "http://127.0.0.1:P/introspect",
        #  "username_attribute": "username"}. It then offers AUTH=XOAUTH2 and AUTH=OAUTHBEARER
        # and checks their tokens there; PLAIN and LOGIN still use the users' passwords.
        self.oauth2 = dict(oauth2) if oauth2 else None
        self.users = {}
        self.proc = None
        self._lock = threading.Lock()
        self._seq = 0
        self._clients = []
        self.start_seconds = None
        self._pick_ports()
        self._setup_identity(mail_user)
        os.makedirs(self.home_root)
        os.chown(self.home_root, self.mail_uid, self.mail_gid)
        os.makedirs(self.users_dir)
        self._write_conf()

    # -- configuration -------------------------------------------------------------------

    def _pick_ports(self):
        self.imaps_port = util.free_port(self.host)
        self.plain_port = util.free_port(self.host)
        self.starttls_port = util.free_port(self.starttls_host)

    def _setup_identity(self, mail_user):
        if os.geteuid() == 0:
            mail_user = mail_user or os.environ.get("IMAPIDLED_TEST_MAIL_USER", "nobody")
            pw = pwd.getpwnam(mail_user)
            self.mail_uid, self.mail_gid = pw.pw_uid, pw.pw_gid
            self.internal_user, self.login_user = "dovecot", "dovenull"
            self.internal_group = "dovecot"
        else:
            me = pwd.getpwuid(os.getuid()).pw_name
            self.mail_uid, self.mail_gid = os.getuid(), os.getgid()
            self.internal_user = self.login_user = me
            try:
                self.internal_group = grp.getgrgid(os.getgid()).gr_name
            except KeyError:
                self.internal_group = str(os.getgid())

    def _write_conf(self):
        trusted = (f"login_trusted_networks = {self.harness_source}/32\n"
                   if self.harness_source else "")
        capability = (f"imap_capability = {self.imap_capability}\n"
                      if self.imap_capability else "")
        # Without this, anvil makes every failed login from an IP wait 2, 4, 8... up to 15 s
        # more (a failed login is then answered after a flat ~0.5 s).
        penalty = ("" if self.auth_penalty else
                   "  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n")
        oauth2_mechanisms = oauth2_passdb = passwd_mechanisms = ""
        if self.oauth2 is not None:
            oauth2_mechanisms = " xoauth2 oauthbearer"
            oauth2_passdb = ("passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                             f"  args = {self._write_oauth2_conf()}\n}}\n")
            passwd_mechanisms = "\n  mechanisms = plain login"
        conf = f"""# Written by the imapidled test harness; includes nothing from /etc/dovecot.
base_dir = {self.base_dir}
state_dir = {self.dir}/state
instance_name = imapidled-test
log_path = {self.log_path}
log_timestamp = "%Y-%m-%d %H:%M:%S.%{{usecs}} "
protocols = imap
listen = {self.host}
default_internal_user = {self.internal_user}
default_internal_group = {self.internal_group}
default_login_user = {self.login_user}
first_valid_uid = 1
first_valid_gid = 1
verbose_proctitle = yes
{trusted}{capability}
ssl = yes
ssl_cert = <{self.pki.server_cert}
ssl_key = <{self.pki.server_key}
ssl_min_protocol = TLSv1.2

auth_mechanisms = plain login{oauth2_mechanisms}
disable_plaintext_auth = yes
auth_verbose = yes
# Failed logins are answered at once (default: after 2 s), which keeps auth-failure tests fast.
auth_failure_delay = 0
{oauth2_passdb}passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.users_dir}/%Lu{passwd_mechanisms}
}}
userdb {{
  driver = static
  args = uid={self.mail_uid} gid={self.mail_gid} home={self.home_root}/%u
}}

mail_location = maildir:~/Maildir
mail_fsync = never
mail_max_userip_connections = 1000
namespace inbox {{
  inbox = yes
  separator = /
}}

# chroot needs root; the login processes run unchrooted in both modes.
service anvil {{
  chroot =
{penalty}}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {self.host}
    port = {self.plain_port}
  }}
  inet_listener imap_starttls {{
    address = {self.starttls_host}
    port = {self.starttls_port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {self.imaps_port}
    ssl = yes
  }}
}}
{self.extra_conf}
"""
        with open(self.conf_path, "w") as f:
            f.write(conf)

    def _write_oauth2_conf(self):
        path = os.path.join(self.dir, "dovecot-oauth2.conf.ext")
        with open(path, "w") as f:
            f.writelines(f"{k} = {v}\n" for k, v in self.oauth2.items())
        return path

    def _write_passwd(self, name, password):
        """One passwd-file per user (the passdb path has %u in it): Dovecot re-reads a
        passwd-file at most once a second (and only when its mtime or size changed), so
        one shared file would hide a user added just after another, while a new user's new
        file is read at its first lookup. Returns True when an existing file changed."""
        path = os.path.join(self.users_dir, name)
        try:
            old_mtime = os.stat(path).st_mtime
        except FileNotFoundError:
            old_mtime = None
        if password is None:
            if old_mtime is not None:
                os.unlink(path)
            return old_mtime is not None
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{name}:{{PLAIN}}{password}\n")
        os.chmod(tmp, 0o644)
        if old_mtime is not None:  # a whole second later, or Dovecot may not see a change
            t = max(int(old_mtime) + 1, int(time.time()))
            os.utime(tmp, (t, t))
        os.rename(tmp, path)
        return old_mtime is not None

    @staticmethod
    def _wait_next_second():
        """Dovecot's auth process looks at a changed passwd-file again only in a later second
        of its clock than the last look."""
        now = time.time()
        time.sleep(int(now) + 1.02 - now)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, retries=3):
        """Start the master in the foreground (its own process group) and wait until every
        listener accepts connections and a greeting arrives. Same ports every time; on the
        very first start, a port taken meanwhile by someone else means new ports."""
        for attempt in range(retries):
            try:
                self._start_once()
                break
            except _PortTaken:
                if self.start_seconds is not None or attempt == retries - 1:
                    raise
                self._pick_ports()
                self._write_conf()
        util.register(self)
        return self

    def _start_once(self):
        t0 = time.monotonic()
        try:
            os.unlink(os.path.join(self.base_dir, "master.pid"))  # stale after a SIGKILL
        except FileNotFoundError:
            pass
        err = open(self.stderr_path, "ab")
        try:
            self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.conf_path],
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         start_new_session=True)
        finally:
            err.close()
        try:
            for host, port in self.listeners():
                util.wait_port(host, port, timeout=10, alive=lambda: self.running)
            self._read_greeting()
        except Exception as e:
            self.stop()
            text = util.tail(self.stderr_path, 20) + "\n" + util.tail(self.log_path, 20)
            if "Address already in use" in text:
                raise _PortTaken(text) from None
            raise RuntimeError(f"Dovecot did not start: {e}\n{text}") from None
        self.start_seconds = time.monotonic() - t0

    def _read_greeting(self):
        with socket.create_connection((self.host, self.plain_port), timeout=10) as s:
            data = s.recv(512)
        if not data.startswith(b"* OK"):
            raise RuntimeError(f"unexpected greeting {data!r}")

    def listeners(self):
        return [(self.host, self.imaps_port), (self.starttls_host, self.starttls_port),
                (self.host, self.plain_port)]

    def processes(self):
        """PIDs of the master and all its processes (they share its process group)."""
        return util.group_members(self.proc.pid) if self.proc else []

    def stop(self, graceful=False, timeout=5.0):
        """Stop the server. Default: SIGKILL to the whole process group (instant; clients see
        the connection drop). graceful=True: SIGTERM, so IDLE clients get `* BYE Server
        shutting down.`; the master itself then lingers about 1 s before it exits. Clients
        made by imap_client() stay open (to watch them see the server go)."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        if graceful and self.proc.poll() is None:
            # The mail processes first: each says BYE, through its login process (which
            # holds the TLS) while that is still there; then the master.
            sessions = [pid for pid in util.group_members(pgid)
                        if re.search(r"/imap( |$)", util.cmdline(pid))]
            for pid in sessions:
                util.kill_pid(pid, signal.SIGTERM)
            util.wait_gone(sessions, timeout)
            util.kill_pid(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        util.kill_group(pgid, signal.SIGKILL)
        self.proc.wait()
        left = util.wait_gone(util.group_members(pgid), timeout)
        if left:
            raise RuntimeError(f"Dovecot processes {left} survived SIGKILL")

    def restart(self, graceful=False):
        self.stop(graceful=graceful)
        return self.start()

    def close(self):
        util.unregister(self)
        self.close_clients()
        try:
            self.stop()
        finally:
            util.remove_tree(self.dir)

    def failure_report(self):
        return (f"--- dovecot log {self.log_path} (tail) ---\n" + util.tail(self.log_path, 40))

    # -- users and mail ------------------------------------------------------------------

    def add_user(self, name, password=None):
        """Add (or change the password of) a user; returns a MailUser. Names: lower-case
        letters, digits, '.', '-', '_'. A new user can log in at once; a password change
        (or removal) takes up to a second to be seen, and this waits for it."""
        if not re.fullmatch(r"[a-z0-9._-]+", name):
            raise ValueError(f"user name {name!r}")
        password = password or secrets.token_urlsafe(12)
        with self._lock:
            self.users[name] = password
            changed = self._write_passwd(name, password)
        if changed:
            self._wait_next_second()
        return MailUser(self, name, password)

    def set_password(self, name, password):
        return self.add_user(name, password)

    def remove_user(self, name):
        with self._lock:
            self.users.pop(name, None)
            changed = self._write_passwd(name, None)
        if changed:
            self._wait_next_second()

    def new_user(self, prefix="user", password=None):
        """A user no other test has used: an empty INBOX, a clean log history."""
        with self._lock:
            self._seq += 1
            name = f"{prefix}{self._seq}"
        return self.add_user(name, password)

    def user(self, name):
        return MailUser(self, name, self.users[name])

    def endpoint(self, tls="implicit"):
        """(host, port) for a daemon's `tls =` mode: implicit, starttls or none."""
        return {"implicit": (self.host, self.imaps_port),
                "starttls": (self.starttls_host, self.starttls_port),
                "none": (self.host, self.plain_port)}[tls]

    def imap_client(self, user, kind="imaps", login=True, ssl_context=None, host=None,
                    harness=True):
        """A logged-in imaplib client; kind is imaps (verified against the test CA, hostname
        `localhost`), starttls (upgraded before login) or plain. Closed by close_clients().
        harness=True connects from the harness address: not counted by login_count() and
        trusted (so no LOGINDISABLED on the starttls port); False connects like the daemon."""
        ctx = ssl_context or self.pki.client_context()
        src = self.harness_source if harness else None
        if kind == "imaps":
            c = IMAP4_SSL(host or "localhost", self.imaps_port, ctx, timeout=10, source=src)
        elif kind == "starttls":
            c = IMAP4(host or self.starttls_host, self.starttls_port, timeout=10, source=src)
            c.starttls(ssl_context=ctx)
        elif kind == "plain":
            c = IMAP4(host or self.host, self.plain_port, timeout=10, source=src)
        else:
            raise ValueError(kind)
        self._clients.append(c)
        if login:
            self._login(c, user, counted=not harness)
        return c

    def _login(self, c, user, counted=False):
        if not counted and not self.harness_source:
            with self._lock:
                self._harness_logins[user] = self._harness_logins.get(user, 0) + 1
        c.login(user, self.users[user])

    def close_clients(self):
        clients, self._clients = self._clients, []
        for c in clients:
            try:
                c.shutdown()
            except Exception:  # noqa: BLE001 - already closed or server gone
                pass

    def _admin(self, user):
        """A short-lived plaintext session for the helpers below (no TLS: faster)."""
        c = IMAP4(self.host, self.plain_port, timeout=10, source=self.harness_source)
        self._login(c, user)
        return c

    @staticmethod
    def _check(typ, data, what):
        if typ != "OK":
            raise RuntimeError(f"{what}: {typ} {data!r}")
        return data

    def deliver(self, user, mailbox="INBOX", subject="Test message",
                from_="Alice Example <alice@example.com>", to=None, body="Hello.\n",
                raw=None, flags=(), headers=None, internaldate=None):
        """Append a message (instantly visible to IDLE clients, after Dovecot's ~0.5 s
        notification delay); returns its UID."""
        msg = raw if raw is not None else build_message(
            subject, from_, to or f"{user} <{user}@example.com>", body, headers)
        if isinstance(msg, str):
            msg = msg.encode()
        flag_list = "(" + " ".join(flags) + ")" if flags else None
        c = self._admin(user)
        try:
            typ, data = c.append(quote_mailbox(mailbox), flag_list, internaldate, msg)
            self._check(typ, data, f"APPEND to {mailbox}")
        finally:
            c.logout()
        m = _APPENDUID.search(data[0] or b"")
        if not m:
            raise RuntimeError(f"no APPENDUID in {data!r}")
        return int(m.group(2))

    def deliver_offline(self, user, subject="Test message",
                        from_="Alice Example <alice@example.com>", body="Hello.\n", raw=None):
        """Put a message straight into the user's INBOX Maildir (new/), as a local delivery
        agent would: works while Dovecot is stopped. The message gets its UID when Dovecot
        next syncs the mailbox. Returns the file name."""
        msg = raw if raw is not None else build_message(
            subject, from_, f"{user} <{user}@example.com>", body)
        if isinstance(msg, str):
            msg = msg.encode()
        md = os.path.join(self.home_root, user, "Maildir")
        with self._lock:
            self._seq += 1
            name = f"{int(time.time())}.P{os.getpid()}Q{self._seq}.imapidled-test"
        for sub in ("", "tmp", "new", "cur"):
            path = os.path.join(md, sub)
            if not os.path.isdir(path):
                os.makedirs(path, mode=0o700, exist_ok=True)
                os.chown(path, self.mail_uid, self.mail_gid)
        tmp = os.path.join(md, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(msg)
        os.chown(tmp, self.mail_uid, self.mail_gid)
        os.rename(tmp, os.path.join(md, "new", name))
        return name

    def fetch_flags(self, user, mailbox, uid):
        """The message's flags as a set of strings (e.g. {'\\\\Seen'}); None if it is gone."""
        c = self._admin(user)
        try:
            self._check(*c.select(quote_mailbox(mailbox), readonly=True), f"EXAMINE {mailbox}")
            typ, data = c.uid("FETCH", str(uid), "(FLAGS)")
            self._check(typ, data, "UID FETCH")
        finally:
            c.logout()
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            m = _FLAGS.search(line or b"")
            if m:
                return set(m.group(1).decode().split())
        return None

    def store_flags(self, user, mailbox, uid, flags, op="+FLAGS"):
        c = self._admin(user)
        try:
            self._check(*c.select(quote_mailbox(mailbox)), f"SELECT {mailbox}")
            self._check(*c.uid("STORE", str(uid), op, "(" + " ".join(flags) + ")"), "STORE")
        finally:
            c.logout()

    def expunge(self, user, mailbox, uid):
        self.store_flags(user, mailbox, uid, ["\\Deleted"])
        c = self._admin(user)
        try:
            self._check(*c.select(quote_mailbox(mailbox)), f"SELECT {mailbox}")
            self._check(*c.uid("EXPUNGE", str(uid)), "UID EXPUNGE")
        finally:
            c.logout()

    def status(self, user, mailbox="INBOX"):
        """{'MESSAGES': n, 'UIDNEXT': n, 'UIDVALIDITY': n, 'UNSEEN': n}"""
        c = self._admin(user)
        try:
            data = self._check(*c.status(quote_mailbox(mailbox),
                                         "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)"), "STATUS")
        finally:
            c.logout()
        inner = data[0].decode().rsplit("(", 1)[1].rstrip(")").split()
        return {k: int(v) for k, v in zip(inner[::2], inner[1::2])}

    def uidvalidity(self, user, mailbox="INBOX"):
        return self.status(user, mailbox)["UIDVALIDITY"]

    def create_mailbox(self, user, mailbox):
        c = self._admin(user)
        try:
            self._check(*c.create(quote_mailbox(mailbox)), f"CREATE {mailbox}")
        finally:
            c.logout()

    def delete_mailbox(self, user, mailbox):
        c = self._admin(user)
        try:
            self._check(*c.delete(quote_mailbox(mailbox)), f"DELETE {mailbox}")
        finally:
            c.logout()

    def doveadm(self, *args, check=True):
        r = subprocess.run([DOVEADM, "-c", self.conf_path, *args], capture_output=True,
                           text=True, timeout=30)
        if check and r.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)}: exit {r.returncode}: {r.stderr}")
        return r

    def set_uidvalidity(self, user, mailbox, value):
        """Give an existing mailbox a new UIDVALIDITY (doveadm mailbox update). Sessions that
        have it selected notice at their next sync (Dovecot then disconnects them)."""
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), mailbox)

    def recreate_mailbox(self, user, mailbox):
        """Make a mailbox start over with a new UIDVALIDITY; returns the new value.
        INBOX cannot be deleted over IMAP: its messages are expunged and its UIDVALIDITY
        bumped instead. Other mailboxes are deleted and created again."""
        old = self.uidvalidity(user, mailbox)
        if mailbox.upper() == "INBOX":
            c = self._admin(user)
            try:
                self._check(*c.select("INBOX"), "SELECT INBOX")
                c.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
                self._check(*c.expunge(), "EXPUNGE")
            finally:
                c.logout()
            self.set_uidvalidity(user, mailbox, old + 1)
        else:
            self.delete_mailbox(user, mailbox)
            self.create_mailbox(user, mailbox)
        new = self.uidvalidity(user, mailbox)
        assert new != old, f"{mailbox}: UIDVALIDITY stayed {old}"
        return new

    # -- observation ---------------------------------------------------------------------

    def log_text(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=40):
        return util.tail(self.log_path, lines)

    def login_count(self, user):
        """Successful logins of user since this Dovecot first started, not counting the
        harness's own (deliver(), fetch_flags(), imap_client(), ...)."""
        logins = re.findall(rf"imap-login: Info: Login: user=<{re.escape(user)}>, .*"
                            r"rip=([0-9a-f.:]+),", self.log_text())
        if self.harness_source:
            return sum(1 for rip in logins if rip != self.harness_source)
        return len(logins) - self._harness_logins.get(user, 0)

    def imap_sessions(self, user=None, harness=False):
        """[(pid, user, remote ip, state)] of the post-login imap processes (from
        verbose_proctitle); state is e.g. 'IDLE', or a command name while it runs. The
        harness's own sessions are left out unless harness=True."""
        out = []
        if not self.proc:
            return out
        for pid in util.children_of(self.proc.pid):
            m = _PROCTITLE.search(util.cmdline(pid))
            if not m or (user is not None and m.group(1) != user):
                continue
            if not harness and self.harness_source and m.group(2) == self.harness_source:
                continue
            out.append((pid, m.group(1), m.group(2), m.group(3)))
        return out

    def idle_count(self, user, harness=False):
        return sum(1 for s in self.imap_sessions(user, harness) if s[3] == "IDLE")

    def wait_for_idle(self, user, count=1, timeout=10.0, harness=False):
        """Wait until at least count of user's sessions sit in IDLE; returns their PIDs.
        Sessions the harness opened itself (imap_client()) count only with harness=True."""
        deadline = time.monotonic() + timeout
        while True:
            idle = [s[0] for s in self.imap_sessions(user, harness) if s[3] == "IDLE"]
            if len(idle) >= count:
                return idle
            if time.monotonic() > deadline:
                raise TimeoutError(f"{user}: {len(idle)} of {count} sessions in IDLE after "
                                   f"{timeout} s; sessions: "
                                   f"{self.imap_sessions(user, harness=True)}")
            time.sleep(0.01)

    def wait_for_log(self, pattern, timeout=10.0, count=1):
        """Wait until pattern (a regex) matches count times in the log; returns the matches."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = rx.findall(self.log_text())
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pattern!r} seen {len(found)}/{count} times in the "
                                   f"Dovecot log\n{self.log_tail(20)}")
            time.sleep(0.02)


class _PortTaken(RuntimeError):
    pass
