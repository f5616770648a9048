"""A scripted fake IMAP server on 127.0.0.1, for what no real server will do on purpose.

FakeImapServer accepts connections and runs one Session per connection in a thread of its
own: `session` for the first connection, `then` for every later one (default: `session`
again). Session speaks just enough well-behaved IMAP for imapidled to reach IDLE
(CAPABILITY, STARTTLS, LOGIN, AUTHENTICATE PLAIN, ENABLE, ID, EXAMINE, IDLE/DONE, UID FETCH,
NOOP, LOGOUT); a test subclasses it and overrides one step to misbehave:

    class Garbage(fakeserver.Session):
        def greet(self):
            self.send(b"* OK hi\\r\\n\\x00\\xff\\xfe garbage\\r\\n")

    srv = fake_imap(Garbage, then=fakeserver.Session)   # the fixture
    cfg.account("x", srv, "me", tls="none", ...)        # srv.endpoint() / srv.users work
    srv.wait_for_connections(2)

Everything a connection received (before and after TLS) is kept: conn.received (bytes), and
srv.received() joins all of them; srv.leaked(secret) looks for a secret in it, raw or in any
base64 token. Sessions end when the client closes, on a socket error, or at close().

tls=True makes the listener implicit TLS (the test PKI's server certificate, names
localhost / 127.0.0.1); STARTTLS upgrades with the same certificate.
"""
import base64
import binascii
import re
import socket
import ssl
import threading
import time

from . import util

_B64_TOKEN = re.compile(rb"[A-Za-z0-9+/]{4,}={0,2}")


class Closed(Exception):
    """The client went away (or the server is shutting down)."""


class Session:
    """One connection's script. Override greet(), capabilities(), or cmd_VERB(tag, args) to
    misbehave; on_idle() runs once the client is told "+ idling"."""

    greeting = b"* OK fake IMAP server ready\r\n"
    uidvalidity = 42
    uidnext = 2          # the mailbox has UID 1 already: a first run reports nothing old
    exists = 1
    idle = True          # advertise IDLE
    starttls = True      # advertise STARTTLS before TLS
    read_timeout = 30.0

    def __init__(self, server, sock, index):
        self.server = server
        self.sock = sock
        self.index = index         # 0 for the first connection
        self.tls = server.tls
        self.received = bytearray()
        self.sent = bytearray()
        self.commands = []         # [(tag, VERB, args)] in order
        self.logged_in = False
        self.closed = False
        self._buf = bytearray()

    # -- I/O ---------------------------------------------------------------------------------

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        try:
            self.sock.sendall(data)
        except (OSError, ValueError) as e:
            raise Closed(str(e)) from None
        self.sent += data

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise Closed("read timeout") from None
        except (OSError, ValueError) as e:
            raise Closed(str(e)) from None
        if not chunk:
            raise Closed("EOF")
        self.received += chunk
        self._buf += chunk

    def readline(self):
        """One line without its CRLF (bytes). Raises Closed at EOF."""
        while True:
            i = self._buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[:i + 2]
                return line
            self._fill()

    def read_command(self):
        """(tag, VERB, args) of the next command; a synchronizing literal is answered with
        "+" and read (args then holds the literal bytes in place of {n})."""
        line = self.readline()
        while True:
            m = re.search(rb"\{(\d+)(\+?)\}$", line)
            if not m:
                break
            n = int(m.group(1))
            if not m.group(2):
                self.send(b"+ go ahead\r\n")
            while len(self._buf) < n:
                self._fill()
            lit = bytes(self._buf[:n])
            del self._buf[:n]
            line = line[:m.start()] + b'"' + lit + b'"' + self.readline()
        parts = line.split(b" ", 2)
        tag = parts[0].decode(errors="replace")
        verb = parts[1].decode(errors="replace").upper() if len(parts) > 1 else ""
        args = parts[2] if len(parts) > 2 else b""
        if verb == "UID" and args:
            sub, _, rest = args.partition(b" ")
            verb, args = "UID " + sub.decode(errors="replace").upper(), rest
        self.commands.append((tag, verb, args))
        return tag, verb, args

    def upgrade(self):
        """Server side of a TLS handshake on the connection (after a STARTTLS OK)."""
        ctx = self.server.tls_context()
        self.sock.settimeout(10)
        try:
            self.sock = ctx.wrap_socket(self.sock, server_side=True)
        except (OSError, ssl.SSLError) as e:
            raise Closed(f"TLS handshake: {e}") from None
        self.sock.settimeout(self.read_timeout)
        self.tls = True
        self._buf.clear()

    # -- the script --------------------------------------------------------------------------

    def run(self):
        self.greet()
        while True:
            tag, verb, args = self.read_command()
            handler = getattr(self, "cmd_" + verb.replace(" ", "_"), None)
            if handler is None:
                self.send(f"{tag} BAD unknown command\r\n")
            else:
                handler(tag, args)

    def greet(self):
        self.send(self.greeting)

    def capabilities(self):
        caps = ["IMAP4rev1", "AUTH=PLAIN", "ENABLE", "ID"]
        if self.idle:
            caps.append("IDLE")
        if not self.tls and self.starttls:
            caps.append("STARTTLS")
        return " ".join(caps)

    def cmd_CAPABILITY(self, tag, args):
        self.send(f"* CAPABILITY {self.capabilities()}\r\n{tag} OK done\r\n")

    def cmd_STARTTLS(self, tag, args):
        self.send(f"{tag} OK Begin TLS negotiation now\r\n")
        self.upgrade()

    def cmd_LOGIN(self, tag, args):
        self.logged_in = True
        self.send(f"{tag} OK [CAPABILITY {self.capabilities()}] logged in\r\n")

    def cmd_AUTHENTICATE(self, tag, args):
        if b" " not in args.strip():           # no SASL-IR: the payload follows a "+"
            self.send(b"+ \r\n")
            self.readline()
        self.logged_in = True
        self.send(f"{tag} OK [CAPABILITY {self.capabilities()}] logged in\r\n")

    def cmd_ENABLE(self, tag, args):
        self.send(f"{tag} OK enabled\r\n")

    def cmd_ID(self, tag, args):
        self.send(f'* ID ("name" "fake")\r\n{tag} OK done\r\n')

    def cmd_EXAMINE(self, tag, args):
        self.send(f"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
                  f"* {self.exists} EXISTS\r\n* 0 RECENT\r\n"
                  f"* OK [UIDVALIDITY {self.uidvalidity}] UIDs valid\r\n"
                  f"* OK [UIDNEXT {self.uidnext}] Predicted next UID\r\n"
                  f"{tag} OK [READ-ONLY] Examine completed\r\n")

    cmd_SELECT = cmd_EXAMINE

    def cmd_IDLE(self, tag, args):
        self.send(b"+ idling\r\n")
        self.on_idle()
        while True:
            line = self.readline()
            if line.upper() == b"DONE":
                break
        self.send(f"{tag} OK Idle completed\r\n")

    def on_idle(self):
        pass

    def cmd_UID_FETCH(self, tag, args):
        self.send(f"{tag} OK Fetch completed\r\n")

    def cmd_FETCH(self, tag, args):
        self.send(f"{tag} OK Fetch completed\r\n")

    def cmd_NOOP(self, tag, args):
        self.send(f"{tag} OK NOOP completed\r\n")

    def cmd_LOGOUT(self, tag, args):
        self.send(f"* BYE Logging out\r\n{tag} OK Logout completed\r\n")
        raise Closed("logout")


def fetch_response(seq, uid, subject="Fake", from_=("Fake Sender", "fake", "example.com"),
                   flags="", size=100):
    """One untagged FETCH with the items imapidled asks for (UID FLAGS ENVELOPE ...)."""
    name, mbox, host = from_
    env = (f'(NIL "{subject}" (("{name}" NIL "{mbox}" "{host}")) NIL NIL NIL NIL NIL NIL '
           f'"<fake{uid}@example.com>")')
    return (f'* {seq} FETCH (UID {uid} FLAGS ({flags}) RFC822.SIZE {size} '
            f'INTERNALDATE "01-Jan-2024 00:00:00 +0000" ENVELOPE {env})\r\n').encode()


class FakeImapServer:
    """The listener (see the module docstring)."""

    name = "fake-imap"

    def __init__(self, session, then=None, tls=False, pki=None, host="127.0.0.1"):
        self.session_cls = session
        self.then_cls = then or session
        self.tls = tls
        self.pki = pki
        self.host = host
        self.users = {}            # for DaemonConfig.account(): name -> password
        self.sessions = []
        self.errors = []           # exceptions a session raised other than Closed
        self._lsock = None
        self._threads = []
        self._cond = threading.Condition()
        self._closing = False
        self._ctx = None

    # Lets DaemonConfig.account(name, server, user, ...) point at this server.
    def endpoint(self, tls="implicit"):
        return self.host, self.port

    def add_user(self, name, password):
        self.users[name] = password
        return name

    def tls_context(self):
        if self._ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.pki.server_cert, self.pki.server_key)
            self._ctx = ctx
        return self._ctx

    def start(self):
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((self.host, 0))
        self._lsock.listen(16)
        self.port = self._lsock.getsockname()[1]
        t = threading.Thread(target=self._accept, name=f"fake-imap:{self.port}", daemon=True)
        t.start()
        self._threads.append(t)
        util.register(self)
        return self

    def _accept(self):
        while not self._closing:
            try:
                sock, _ = self._lsock.accept()
            except OSError:
                return
            if self._closing:
                sock.close()
                return
            with self._cond:
                index = len(self.sessions)
                cls = self.session_cls if index == 0 else self.then_cls
                sess = cls(self, sock, index)
                self.sessions.append(sess)
                self._cond.notify_all()
            t = threading.Thread(target=self._serve, args=(sess,), daemon=True,
                                 name=f"fake-imap:{self.port}#{index}")
            t.start()
            self._threads.append(t)

    def _serve(self, sess):
        try:
            sess.sock.settimeout(sess.read_timeout)
            if self.tls:
                sess.upgrade()
            sess.run()
        except Closed:
            pass
        except Exception as e:  # noqa: BLE001 - reported by the test through .errors
            self.errors.append(repr(e))
        finally:
            try:
                sess.sock.close()
            except OSError:
                pass
            with self._cond:
                sess.closed = True
                self._cond.notify_all()

    # -- observation -------------------------------------------------------------------------

    def wait_for_connections(self, n, timeout=10.0):
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.sessions) >= n, timeout):
                raise TimeoutError(f"{len(self.sessions)} of {n} connections to the fake "
                                   f"server within {timeout} s")
            return self.sessions[n - 1]

    def wait_closed(self, sess, timeout=10.0):
        """Wait until the client (or the script) has ended sess."""
        with self._cond:
            if not self._cond.wait_for(lambda: sess.closed, timeout):
                raise TimeoutError(f"connection #{sess.index} still open after {timeout} s")

    def received(self):
        with self._cond:
            return b"".join(bytes(s.received) for s in self.sessions)

    def verbs(self, index=None):
        """The commands' verbs, of one connection or all."""
        with self._cond:
            ss = self.sessions if index is None else [self.sessions[index]]
            return [v for s in ss for _, v, _ in s.commands]

    def leaked(self, secret, user=None):
        """Where the secret appears in what clients sent: raw, or inside a base64 token (SASL
        PLAIN's authzid NUL user NUL password among them). [] when nowhere."""
        data = self.received()
        s = secret.encode() if isinstance(secret, str) else secret
        found = []
        if s in data:
            found.append("raw")
        forms = {base64.b64encode(s)}
        if user is not None:
            u = user.encode()
            forms.add(base64.b64encode(b"\0" + u + b"\0" + s))
            forms.add(base64.b64encode(u + b"\0" + u + b"\0" + s))
        for f in forms:
            if f.rstrip(b"=") in data:
                found.append(f"base64 {f.decode()}")
        for tok in _B64_TOKEN.findall(data):
            try:
                dec = base64.b64decode(tok + b"=" * (-len(tok) % 4))
            except (binascii.Error, ValueError):
                continue
            if s in dec:
                found.append(f"inside base64 token {tok[:40]!r}")
        return found

    def close(self):
        util.unregister(self)
        self._closing = True
        if self._lsock is not None:
            try:  # shutdown wakes the thread blocked in accept(); close alone does not
                self._lsock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                self._lsock.close()
            except OSError:
                pass
        with self._cond:
            sessions = list(self.sessions)
        for s in sessions:
            try:
                s.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.sock.close()
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def failure_report(self):
        lines = [f"--- fake IMAP server 127.0.0.1:{getattr(self, 'port', '?')} ---"]
        for s in self.sessions:
            lines.append(f"#{s.index} received {len(s.received)} bytes, commands "
                         f"{[v for _, v, _ in s.commands]}, tls={s.tls}, closed={s.closed}")
        lines.extend(f"error: {e}" for e in self.errors)
        return "\n".join(lines)
