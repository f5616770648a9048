#!/usr/bin/python3
"""A minimal IMAP IDLE server for the benchmarks: asyncio, one process, loopback only.

It speaks just what imapidled needs (CAPABILITY, LOGIN, AUTHENTICATE PLAIN, EXAMINE/SELECT,
IDLE/DONE, UID FETCH, FETCH, NOOP, LOGOUT) plus APPEND, and it sends `* N EXISTS` to every
connection idling on a mailbox the moment a message is added: no notification delay, so what
is left of an APPEND -> event delay is the client's own. Any user name and password log in;
mailboxes exist as soon as they are named; every mailbox has UIDVALIDITY 1 and starts empty.

    idleserver.py --cert C --key K      implicit TLS on the IMAP port (else plaintext)

Prints one line `READY imap=PORT plain=PORT ctl=PORT` on stdout once listening. PORT plain
is a second, plaintext IMAP listener (for the bench's own APPEND connection); ctl is a line
protocol, one command a line, one JSON answer a line:

    stats                  counters: accepts, conns, idling, peak_inflight, accept rate peaks,
                           unprompted (TLS records written to an idling connection that no
                           command or new message asked for: late handshake records, say)
    reset                  zero accepts, peak_inflight and the accept log
    down                   stop listening and cut every connection (a server crash)
    up                     listen again on the same ports
    add MAILBOX N          add N messages (works while down: reported after reconnect)
    trace MAILBOX          the timing trace of the last message added to MAILBOX (see below)
    waitidle N TIMEOUT     answer once N connections idle: {"ok":, "t": monotonic time}
    quit                   exit

Trace: for the first connection idling on the mailbox when a message arrives, the server
records time.monotonic() (CLOCK_MONOTONIC, the same clock as the bench's C recorder) when it
wrote EXISTS, read DONE, wrote the IDLE's tagged OK, read the UID FETCH, and wrote its reply.
"""
import argparse
import asyncio
import collections
import json
import re
import socket
import ssl
import sys
import time

CAPS = "IMAP4rev1 AUTH=PLAIN IDLE LITERAL+ ID"
ENVELOPE = ('(NIL "Bench {uid}" (("Bench Sender" NIL "bench" "example.com")) NIL NIL '
            'NIL NIL NIL NIL "<bench{uid}@example.com>")')
LITERAL = re.compile(rb"\{(\d+)(\+?)\}$")


class Mailbox:
    def __init__(self, name):
        self.name = name
        self.uids = []        # UIDs in sequence order
        self.idlers = []      # connections idling here, oldest first
        self.trace = {}       # label -> time of the last message's path
        self.traced = None    # the connection traced for the last message


class Server:
    def __init__(self, ctx):
        self.ctx = ctx
        self.boxes = {}
        self.conns = set()
        self.servers = []
        self.ports = {}
        self.accepts = 0
        self.accept_log = []  # monotonic times of accepts since reset
        self.inflight = 0     # accepted, not yet in IDLE (a client's connect attempt)
        self.peak_inflight = 0
        self.idling = 0
        self.waiters = []     # (n, future)
        self.unprompted = 0   # raw writes to idling connections outside Conn.send()
        self.unprompted_log = collections.deque(maxlen=20)  # (monotonic, bytes, head hex)

    def box(self, name):
        b = self.boxes.get(name)
        if b is None:
            b = self.boxes[name] = Mailbox(name)
        return b

    # -- listeners ----------------------------------------------------------------------

    async def listen(self, port_imap=0, port_plain=0):
        extra = {"ssl": self.ctx, "ssl_handshake_timeout": 60} if self.ctx else {}
        imap = await asyncio.start_server(self.serve_tls, "127.0.0.1", port_imap,
                                          backlog=4096, reuse_address=True, **extra)
        plain = await asyncio.start_server(self.serve_plain, "127.0.0.1", port_plain,
                                           backlog=64, reuse_address=True)
        self.servers = [imap, plain]
        self.ports = {"imap": imap.sockets[0].getsockname()[1],
                      "plain": plain.sockets[0].getsockname()[1]}

    def down(self):
        for s in self.servers:
            s.close()
        self.servers = []
        for c in list(self.conns):
            c.abort()

    async def up(self):
        if not self.servers:
            await self.listen(self.ports["imap"], self.ports["plain"])

    async def serve_tls(self, reader, writer):
        await Conn(self, reader, writer, counted=True).run()

    async def serve_plain(self, reader, writer):
        await Conn(self, reader, writer, counted=False).run()

    # -- mail -----------------------------------------------------------------------------

    def add(self, name, n=1):
        b = self.box(name)
        for _ in range(n):
            b.uids.append(len(b.uids) + 1)
        if not b.idlers:
            return b.uids[-1] if b.uids else 0
        t = time.monotonic()
        line = f"* {len(b.uids)} EXISTS\r\n".encode()
        first = True
        for c in list(b.idlers):
            c.send(line)
            if first:
                b.trace = {"exists_sent": t}
                b.traced = c
                first = False
        return b.uids[-1]

    def idle_changed(self, delta):
        self.idling += delta
        if delta > 0:
            now = time.monotonic()
            keep = []
            for n, fut in self.waiters:
                if self.idling >= n and not fut.done():
                    fut.set_result(now)
                elif not fut.done():
                    keep.append((n, fut))
            self.waiters = keep

    def stats(self):
        per_sec = collections.Counter(int(t) for t in self.accept_log)
        peak_1s = max(per_sec.values()) if per_sec else 0
        # Peak over any sliding 1 s window (per_sec buckets are aligned to whole seconds).
        peak_win = 0
        log = self.accept_log
        j = 0
        for i in range(len(log)):
            while log[i] - log[j] > 1.0:
                j += 1
            peak_win = max(peak_win, i - j + 1)
        return {"accepts": self.accepts, "conns": len(self.conns), "idling": self.idling,
                "peak_inflight": self.peak_inflight, "peak_accepts_per_s_bucket": peak_1s,
                "peak_accepts_per_s_window": peak_win,
                "first_accept": log[0] if log else None, "last_accept": log[-1] if log else None,
                "listening": bool(self.servers), "unprompted": self.unprompted,
                "unprompted_log": list(self.unprompted_log)}


class Conn:
    def __init__(self, srv, reader, writer, counted):
        self.srv, self.reader, self.writer = srv, reader, writer
        self.counted = counted
        self.box = None
        self.idle_tag = None
        self.was_idle = False   # reached IDLE once: no longer "in flight"
        self.sending = False

    def abort(self):
        self.writer.transport.abort()

    def send(self, s):
        self.sending = True
        try:
            self.writer.write(s.encode() if isinstance(s, str) else s)
        finally:
            self.sending = False

    def watch_raw_writes(self):
        """Count what the TLS layer writes to an idling connection on its own. asyncio's
        SSL transport keeps its socket transport in private attributes: without them
        (another Python), nothing is counted and `unprompted` stays 0."""
        proto = getattr(self.writer.transport, "_ssl_protocol", None)
        raw = getattr(proto, "_transport", None)
        if raw is None or not hasattr(raw, "write"):
            return
        write = raw.write

        def counted(data):
            if self.idle_tag is not None and not self.sending:
                self.srv.unprompted += 1
                self.srv.unprompted_log.append((time.monotonic(), len(data),
                                                bytes(data[:5]).hex()))
            write(data)
        raw.write = counted

    def traced(self):
        return self.box is not None and self.box.traced is self

    async def run(self):
        srv = self.srv
        srv.conns.add(self)
        if self.counted:
            srv.accepts += 1
            srv.accept_log.append(time.monotonic())
            srv.inflight += 1
            srv.peak_inflight = max(srv.peak_inflight, srv.inflight)
        self.watch_raw_writes()
        try:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.send("* OK bench IMAP server ready\r\n")
            while True:
                line = await self.reader.readline()
                if not line:
                    return
                if not await self.command(line.rstrip(b"\r\n")):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            return
        finally:
            self.stop_idle()
            if self.counted and not self.was_idle:
                srv.inflight -= 1
            srv.conns.discard(self)
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - already gone
                pass

    def stop_idle(self):
        if self.idle_tag is not None:
            self.idle_tag = None
            self.box.idlers.remove(self)
            self.srv.idle_changed(-1)

    async def command(self, line):
        if self.idle_tag is not None:
            if line.upper() == b"DONE":
                t = time.monotonic()
                tag = self.idle_tag
                traced = self.traced()
                self.stop_idle()
                if traced:
                    self.box.trace["done_recv"] = t
                    self.box.trace["idle_ok_sent"] = time.monotonic()
                self.send(f"{tag} OK Idle completed\r\n")
            return True
        parts = line.split(b" ", 2)
        tag = parts[0].decode(errors="replace")
        verb = parts[1].decode(errors="replace").upper() if len(parts) > 1 else ""
        args = parts[2] if len(parts) > 2 else b""
        if verb == "UID" and args:
            sub, _, args = args.partition(b" ")
            verb = "UID " + sub.decode(errors="replace").upper()
        h = getattr(self, "cmd_" + verb.replace(" ", "_"), None)
        if h is None:
            self.send(f"{tag} BAD unknown command\r\n")
            return True
        return await h(tag, args)

    async def cmd_CAPABILITY(self, tag, args):
        self.send(f"* CAPABILITY {CAPS}\r\n{tag} OK done\r\n")
        return True

    async def cmd_LOGIN(self, tag, args):
        self.send(f"{tag} OK [CAPABILITY {CAPS}] logged in\r\n")
        return True

    async def cmd_AUTHENTICATE(self, tag, args):
        if b" " not in args.strip():
            self.send(b"+ \r\n")
            await self.reader.readline()
        self.send(f"{tag} OK [CAPABILITY {CAPS}] logged in\r\n")
        return True

    async def cmd_ID(self, tag, args):
        self.send(f'* ID ("name" "bench")\r\n{tag} OK done\r\n')
        return True

    async def cmd_NOOP(self, tag, args):
        self.send(f"{tag} OK done\r\n")
        return True

    async def cmd_LOGOUT(self, tag, args):
        self.send(f"* BYE bye\r\n{tag} OK done\r\n")
        await self.writer.drain()
        return False

    async def cmd_EXAMINE(self, tag, args):
        name = args.strip().strip(b'"').decode(errors="replace")
        self.box = self.srv.box(name)
        b = self.box
        self.send(f"* FLAGS (\\Seen)\r\n* {len(b.uids)} EXISTS\r\n* 0 RECENT\r\n"
                  f"* OK [UIDVALIDITY 1] ok\r\n* OK [UIDNEXT {len(b.uids) + 1}] ok\r\n"
                  f"{tag} OK [READ-ONLY] done\r\n")
        return True

    cmd_SELECT = cmd_EXAMINE

    async def cmd_IDLE(self, tag, args):
        self.idle_tag = tag
        self.box.idlers.append(self)
        self.send(b"+ idling\r\n")
        if self.counted and not self.was_idle:
            self.was_idle = True
            self.srv.inflight -= 1
        self.srv.idle_changed(+1)
        return True

    async def cmd_UID_FETCH(self, tag, args):
        t = time.monotonic()
        b = self.box
        rng = args.split(b" ", 1)[0].decode()
        lo = int(rng.split(":")[0])
        out = []
        if b.uids:
            start = lo - 1 if lo <= len(b.uids) else len(b.uids) - 1  # n:* is never empty
            for seq in range(start + 1, len(b.uids) + 1):
                uid = b.uids[seq - 1]
                if b"ENVELOPE" in args:
                    out.append(f'* {seq} FETCH (UID {uid} FLAGS () INTERNALDATE '
                               f'"01-Jan-2024 00:00:00 +0000" RFC822.SIZE 100 ENVELOPE '
                               f'{ENVELOPE.format(uid=uid)})\r\n')
                else:
                    out.append(f"* {seq} FETCH (UID {uid} FLAGS ())\r\n")
        out.append(f"{tag} OK done\r\n")
        data = "".join(out)
        if self.traced():
            self.box.trace["fetch_recv"] = t
            self.box.trace["fetch_sent"] = time.monotonic()
        self.send(data)
        return True

    async def cmd_FETCH(self, tag, args):
        b = self.box
        if b.uids:
            self.send(f"* {len(b.uids)} FETCH (UID {b.uids[-1]})\r\n")
        self.send(f"{tag} OK done\r\n")
        return True

    async def cmd_APPEND(self, tag, args):
        # APPEND mailbox [flags] [date] {n} or {n+}
        m = LITERAL.search(args)
        if not m:
            self.send(f"{tag} BAD literal expected\r\n")
            return True
        if not m.group(2):
            self.send(b"+ go\r\n")
        await self.reader.readexactly(int(m.group(1)))
        await self.reader.readline()  # the CRLF ending the command
        name = args.split(b" ", 1)[0].strip(b'"').decode(errors="replace")
        b = self.srv.box(name)
        uid = len(b.uids) + 1
        # The appender hears OK first, then the watchers hear EXISTS: the measured delay
        # starts no later than the server's notification.
        self.send(f"{tag} OK [APPENDUID 1 {uid}] done\r\n")
        self.srv.add(name, 1)
        return True


async def control(srv, reader, writer):
    while True:
        line = await reader.readline()
        if not line:
            break
        words = line.decode().split()
        if not words:
            continue
        cmd = words[0]
        ans = {"ok": True}
        if cmd == "stats":
            ans.update(srv.stats())
        elif cmd == "reset":
            srv.accepts = 0
            srv.accept_log = []
            srv.peak_inflight = srv.inflight
        elif cmd == "down":
            srv.down()
        elif cmd == "up":
            await srv.up()
        elif cmd == "add":
            ans["uid"] = srv.add(words[1], int(words[2]))
        elif cmd == "trace":
            b = srv.box(words[1])
            ans["trace"] = b.trace
        elif cmd == "waitidle":
            n, timeout = int(words[1]), float(words[2])
            if srv.idling >= n:
                ans["t"] = time.monotonic()
            else:
                fut = asyncio.get_running_loop().create_future()
                srv.waiters.append((n, fut))
                try:
                    ans["t"] = await asyncio.wait_for(fut, timeout)
                except asyncio.TimeoutError:
                    ans = {"ok": False, "idling": srv.idling}
        elif cmd == "quit":
            writer.write(b'{"ok": true}\n')
            await writer.drain()
            sys.exit(0)
        else:
            ans = {"ok": False, "error": f"unknown command {cmd}"}
        writer.write((json.dumps(ans) + "\n").encode())
        await writer.drain()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--tls12", action="store_true", help="offer TLS 1.2 only")
    a = ap.parse_args()
    ctx = None
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        if a.tls12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    srv = Server(ctx)
    await srv.listen()
    ctl = await asyncio.start_server(lambda r, w: control(srv, r, w), "127.0.0.1", 0)
    print(f"READY imap={srv.ports['imap']} plain={srv.ports['plain']} "
          f"ctl={ctl.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
