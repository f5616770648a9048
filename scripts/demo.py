#!/usr/bin/python3
"""`make demo`: imapidled against a throwaway Dovecot, with all three sinks, step by step.

New mail goes to a command (exec sink), to a local HTTP receiver as a signed webhook
(Standard Webhooks), and to a desktop notification: a real popup when this runs inside a
desktop session whose session bus has a notification server, else to a stand-in server
(python-dbusmock) on a private session bus, which records what it is sent.

Everything runs on loopback in temporary directories and is stopped and removed at the end
(also on Ctrl-C). Uses the integration-test harness (tests/integration/imapidled_test).

    /usr/bin/python3 scripts/demo.py [--keep]      (--keep: leave the temp files behind)
"""
import argparse
import base64
import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from imapidled_test import bus, certs, daemon, dovecot, util, webhook  # noqa: E402

USER, PASSWORD = "demo", "demo-password"

# (From, Subject as it goes on the wire, what a person reads). The second subject is UTF-8 in
# an RFC 2047 encoded word: imapidled decodes it.
SAMPLES = [
    ("Alice Example <alice@example.com>", "Lunch on Friday?", "Lunch on Friday?"),
    ("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <jorg@example.de>",
     "=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4g4pyT?=", "Grüße aus Köln ✓"),
    ("CI <ci@example.com>", "[build] main is green again", "[build] main is green again"),
]

WIDTH = 118  # the exec sink's JSON lines are cut to this (the full JSON is shown later)

_step = 0


def step(text):
    global _step
    _step += 1
    print(f"\n[{_step}] {text}", flush=True)


def detail(text="", indent=4):
    for line in str(text).splitlines() or [""]:
        print(" " * indent + line, flush=True)


def cut(line, width=WIDTH):
    return line if len(line) <= width else line[:width - 1] + "…"


class LogEcho:
    """Prints the daemon's log lines that have not been shown yet, indented under a step."""

    def __init__(self, d):
        self.d, self.shown = d, 0

    def __call__(self):
        lines = self.d.lines(self.shown)
        self.shown += len(lines)
        for line in lines:
            line = f"      imapidled | {line}"
            print(cut(line) if "stdout: stdin: {" in line else line, flush=True)


def compact(value, depth=0):
    """JSON with the first two levels one key a line, anything deeper on one line."""
    pad = "  " * (depth + 1)
    if isinstance(value, dict) and depth < 2 and value:
        items = [f'{pad}{json.dumps(k)}: {compact(v, depth + 1)}' for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"
    return json.dumps(value, ensure_ascii=False)


# -- the desktop: a real session's notification server, or a stand-in --------------------

NOTIFY = bus.NOTIFY_NAME


def _busctl(env, *args, timeout=5):
    """busctl --user ...; (exit status, stdout, stderr). Never hangs: timeouts on both the
    call and the process."""
    try:
        r = subprocess.run(["busctl", "--user", "--timeout=2", *args], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
    except FileNotFoundError:
        return 127, "", "busctl not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"busctl did not answer within {timeout} s"
    return r.returncode, r.stdout.strip(), r.stderr.strip()


def find_desktop_server():
    """(address, server description) of the user's session bus when it has a notification
    server, else (None, why not)."""
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if not address:
        return None, "DBUS_SESSION_BUS_ADDRESS is not set: no desktop session here"
    env = dict(os.environ)
    code, out, err = _busctl(env, "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                             "org.freedesktop.DBus", "NameHasOwner", "s", NOTIFY)
    if code != 0:
        return None, f"the session bus {address} does not answer ({err or code})"
    if out != "b true":
        return None, f"nothing owns {NOTIFY} on the session bus {address}"
    code, out, err = _busctl(env, "--json=short", "call", NOTIFY, bus.NOTIFY_PATH,
                             bus.NOTIFY_IFACE, "GetServerInformation")
    server = "a notification server"
    if code == 0:
        with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
            name, vendor, version, _ = json.loads(out)["data"]
            server = f"{name} {version} ({vendor})"
    return address, server


def _plain(v):
    """busctl's JSON for a D-Bus value: variants are {"type": ..., "data": ...}."""
    if isinstance(v, dict) and set(v) == {"type", "data"}:
        return _plain(v["data"])
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


class BusWatch:
    """`busctl --user monitor` on the session bus: the Notify calls imapidled makes to the
    real notification server, and the ids it answers. Stopped by PID."""

    name = "busctl-monitor"

    def __init__(self, env):
        self.env = env
        self.proc = None
        self.calls = []      # [{"cookie", "sender", "args", "id"}]
        self.problem = None
        self._cond = threading.Condition()

    def start(self, timeout=5.0):
        self.proc = subprocess.Popen(
            ["busctl", "--user", "--json=short", "monitor", NOTIFY], env=self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True)
        util.register(self)
        # busctl says "Monitoring bus message stream." once it receives messages.
        ready, _, _ = select.select([self.proc.stderr], [], [], timeout)
        line = self.proc.stderr.readline().strip() if ready else ""
        if "Monitoring" not in line:
            self.problem = line or f"busctl monitor said nothing within {timeout} s"
            self.close()
            return self
        threading.Thread(target=self._read, daemon=True, name="busctl-monitor").start()
        return self

    def _read(self):
        for raw in self.proc.stdout:
            try:
                m = json.loads(raw)
            except ValueError:
                continue
            with self._cond:
                if (m.get("type") == "method_call" and m.get("member") == "Notify"
                        and m.get("interface") == bus.NOTIFY_IFACE):
                    args = _plain(m.get("payload", {}).get("data", []))
                    if args and args[0] == "imapidled":
                        self.calls.append({"cookie": m.get("cookie"), "sender": m.get("sender"),
                                           "args": args, "id": None})
                elif m.get("type") in ("method_return", "error"):
                    for c in self.calls:
                        if (c["cookie"] == m.get("reply_cookie")
                                and c["sender"] == m.get("destination")):
                            data = _plain(m.get("payload", {}).get("data", []))
                            c["id"] = (data[0] if m["type"] == "method_return" and data
                                       else f"error {m.get('error_name')}")
                self._cond.notify_all()

    def notifications(self):
        with self._cond:
            return [dict(c) for c in self.calls]

    def wait(self, n, timeout=10.0):
        """Wait for n answered Notify calls from imapidled."""
        with self._cond:
            if not self._cond.wait_for(
                    lambda: sum(1 for c in self.calls if c["id"] is not None) >= n, timeout):
                raise TimeoutError(f"{len(self.calls)} Notify call(s) seen on the session bus, "
                                   f"{n} expected, within {timeout} s")

    def close(self):
        util.unregister(self)
        if self.proc is not None:
            util.stop_popen(self.proc)
            for f in (self.proc.stdout, self.proc.stderr):
                with contextlib.suppress(Exception):
                    f.close()
            self.proc = None

    def failure_report(self):
        return ""


class Desktop:
    """Where the desktop sink's popups go, and what they were."""

    def __init__(self, stack):
        self.stack = stack
        self.real = False
        self.address = None
        self.server = None
        self.mock = None
        self.watch = None

    def start(self):
        step("Looking for a desktop notification server (for the desktop sink)")
        address, found = find_desktop_server()
        if address:
            self.real, self.address, self.server = True, address, found
            detail(f"found: {found} on your session bus ({address})")
            detail("-> the daemon uses YOUR desktop: real popups appear on your screen.")
            self.watch = BusWatch(dict(os.environ)).start()
            self.stack.callback(self.watch.close)
            if self.watch.problem:
                detail(f"(cannot watch the bus to show what was sent: {self.watch.problem})")
            return
        detail(f"none: {found}.")
        detail("-> starting a private session bus (dbus-daemon) with a stand-in notification")
        detail("   server (python-dbusmock) that records every Notify call; no popup appears.")
        session = bus.SessionBus()
        self.stack.callback(session.close)
        session.start()
        self.mock = bus.NotificationDaemon(session)
        self.stack.callback(self.mock.close)
        self.mock.start()
        self.address = session.address
        self.server = "the stand-in notification server (python-dbusmock, private bus)"
        detail(f"bus {session.address}")

    def env(self):
        return {"DBUS_SESSION_BUS_ADDRESS": self.address}

    def wait(self, n, timeout=10.0):
        if self.mock is not None:
            self.mock.wait_for_notifications(n, timeout=timeout)
        elif self.watch and not self.watch.problem:
            self.watch.wait(n, timeout=timeout)

    def notifications(self):
        """[(id, app_name, summary, body, actions, hints, expire_timeout)] so far."""
        if self.mock is not None:
            return [(n.id, n.app_name, n.summary, n.body, n.actions, n.hints, n.expire_timeout)
                    for n in self.mock.notifications()]
        if self.watch and not self.watch.problem:
            return [(c["id"], c["args"][0], c["args"][3], c["args"][4], c["args"][5],
                     c["args"][6], c["args"][7]) for c in self.watch.notifications()]
        return None  # sent to the real server, not observed


# -- the steps -----------------------------------------------------------------------------

def start_dovecot(stack):
    step("Making a throwaway certificate authority and a certificate for localhost")
    pki_dir = util.make_tmpdir("imapidled-demo-pki-")
    stack.callback(util.remove_tree, pki_dir)
    pki = certs.TestPKI(pki_dir)
    detail(f"CA:          {pki.ca_file}")
    detail(f"fingerprint: {pki.fingerprint()}")

    step("Starting a private Dovecot on loopback, with a user demo / demo-password")
    server = dovecot.Dovecot(pki)
    stack.callback(server.close)
    server.start()
    user = server.add_user(USER, PASSWORD)
    detail(f"implicit TLS  {server.host}:{server.imaps_port}")
    detail(f"STARTTLS      {server.starttls_host}:{server.starttls_port}")
    detail(f"log           {server.log_path}")
    detail(f"ready in {server.start_seconds * 1000:.0f} ms")
    return server, user


def start_receiver(stack):
    step("Starting a local HTTP receiver for the webhook sink, and making a signing secret")
    receiver = webhook.HttpReceiver()
    stack.callback(receiver.close)
    receiver.start()
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    detail(f"listening on {receiver.url()} (answers 200 to every request)")
    detail(f"secret       {secret} (the receiver checks each signature with it)")
    return receiver, secret


# What the exec sink runs for each burst of new mail: it shows what it received, from its
# environment and from the JSON events on its stdin. Its output lands in the daemon's log.
EXEC_COMMAND = ("echo \"got $IMAPIDLED_COUNT mail(s): $IMAPIDLED_FROM_NAME: $IMAPIDLED_SUBJECT\"; "
                "while read -r event; do echo \"stdin: $event\"; done")


def write_config(workdir, server, user, receiver, secret):
    step("Writing an imapidled config: one account (implicit TLS checked against the demo CA) "
         "and three sinks")
    cfg = daemon.DaemonConfig(os.path.join(workdir, "config"))
    cfg.account("demo", server, user, tls="implicit", mailboxes=["INBOX"],
                sinks=["exec:show", "webhook:receiver", "desktop"])
    cfg.exec("show", EXEC_COMMAND, shell=True, timeout="10s")
    cfg.webhook("receiver", receiver.url(), secret=secret)
    cfg.desktop(expire_timeout="10s")  # the demo's popups go away by themselves
    path = cfg.write()
    detail(f"{path}:")
    detail(cfg.text().rstrip(), indent=6)
    return cfg


def check_config(workdir, cfg, desktop):
    step("Checking it: imapidled check --config ... --connect (logs in once, lists mailboxes)")
    code, out, err = daemon.run_check(cfg.path, env=daemon.daemon_env(workdir,
                                                                      extra=desktop.env()))
    for line in (out + err).splitlines():
        detail(line)
    if code != 0:
        raise SystemExit(f"demo: `imapidled check --connect` failed with exit status {code}")


def start_daemon(workdir, cfg, user, desktop, stack):
    step("Starting the daemon: imapidled --config ... -v, and waiting until it sits in IDLE")
    t0 = time.monotonic()
    d = daemon.Daemon(cfg.path, workdir, env=daemon.daemon_env(workdir, extra=desktop.env()))
    stack.callback(d.close)
    d.start()
    echo = LogEcho(d)
    d.wait_for_log(r"all 1 mailbox idle", timeout=15)
    user.wait_for_idle(timeout=10)  # Dovecot agrees: one session of demo is in IDLE
    took = time.monotonic() - t0
    echo()
    detail(f"pid {d.pid}; connected, logged in and idle after {took * 1000:.0f} ms "
           "(Dovecot shows the session as IDLE too)")
    return d, echo


def raw_message(from_, subject, n):
    return (f"From: {from_}\r\n"
            f"To: Demo <demo@example.com>\r\n"
            f"Subject: {subject}\r\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
            f"Message-ID: <demo-{n}-{os.getpid()}@imapidled.demo>\r\n"
            f"MIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n"
            f"\r\nSample message {n} from scripts/demo.py.\r\n").encode("ascii")


def deliver_samples(d, echo, user, receiver, secret, desktop):
    step(f"Delivering {len(SAMPLES)} mails to demo's INBOX, one at a time; each one reaches "
         "the three sinks")
    delays = []
    for n, (from_, wire_subject, subject) in enumerate(SAMPLES, 1):
        mark = d.mark()
        t0 = time.monotonic()
        uid = user.deliver(raw=raw_message(from_, wire_subject, n))
        detail(f"delivered UID {uid}: Subject: {wire_subject}")
        m = d.wait_for_log(rf"demo/INBOX: new mail, UID {uid}, from .*: (.*)$", timeout=10,
                           since=mark)
        delays.append(time.monotonic() - t0)
        d.wait_for_log(r"exec show: stdout: got .*" + re.escape(subject) + "$", timeout=10,
                       since=mark)
        d.wait_for_log(r"exec show: stdout: stdin: ", timeout=10, since=mark)
        echo()
        if m.group(1) != subject:
            raise SystemExit(f"demo: expected subject {subject!r}, imapidled logged "
                             f"{m.group(1)!r}")
        req = receiver.wait_for(n, timeout=10)[n - 1]
        ok = "signature verified" if req.verify(secret, tolerance=300) else "BAD SIGNATURE"
        detail(f"  webhook   | {req.method} {req.path}, {len(req.body)} bytes, "
               f"webhook-id {req.header('webhook-id')}, {ok}")
        desktop.wait(n)
        got = desktop.notifications()
        if got is not None:
            nid, _, summary, body, _, _, _ = got[n - 1]
            detail(f"  desktop   | Notify: {summary!r} / {body!r} -> notification id {nid}")
    detail(f"delivery to the daemon's log line: {', '.join(f'{s * 1000:.0f} ms' for s in delays)}"
           " (Dovecot itself waits ~500 ms before it tells IDLE clients)")
    return delays


def show_webhook(receiver, secret):
    step("What the webhook receiver got (the first of the POSTs)")
    reqs = receiver.requests
    first = reqs[0]
    for name in ("content-type", "webhook-id", "webhook-timestamp", "webhook-signature"):
        detail(f"{name}: {first.header(name)}")
    detail(compact(first.json()))
    verified = sum(1 for r in reqs if r.verify(secret, tolerance=300))
    wrong = "whsec_" + base64.b64encode(b"not the secret at all!!!").decode()
    detail(f"signatures verified with the secret: {verified} of {len(reqs)} "
           f"(with a wrong secret: {sum(1 for r in reqs if r.verify(wrong))} of {len(reqs)})")
    return reqs, verified


def show_desktop(desktop):
    step("What the notification server got: " + desktop.server)
    got = desktop.notifications()
    if got is None:
        detail("(not observed: see above why the bus could not be watched; look at your screen)")
        return None
    for nid, app, summary, body, actions, hints, expire in got:
        detail(f"Notify -> id {nid}: app_name {app!r}, summary {summary!r}, body {body!r}")
        detail(f"    hints {json.dumps(hints, ensure_ascii=False)}, actions {actions}, "
               f"expire_timeout {expire} ms")
    if desktop.real:
        detail("These popups are on your screen now (they ask to expire after 10 s; some servers "
               "keep them in a list).")
    return got


def stop_daemon(d, echo):
    step("Stopping imapidled with SIGTERM")
    t0 = time.monotonic()
    code = d.stop()
    echo()
    detail(f"exit status {code} after {(time.monotonic() - t0) * 1000:.0f} ms")
    if code != 0:
        raise SystemExit(f"demo: imapidled exited with status {code}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the temporary files")
    args = ap.parse_args()
    if args.keep:
        os.environ["IMAPIDLED_TEST_KEEP"] = "1"
    if not os.access(daemon.binary(), os.X_OK):
        raise SystemExit(f"demo: no imapidled binary at {daemon.binary()} (run `make` first, "
                         "or `make demo`)")
    # Ctrl-C and SIGTERM (a CI timeout, `kill`) unwind through the ExitStack below, which
    # stops everything started so far (also when started with SIGINT ignored, as `cmd &` is).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)

    t_start = time.monotonic()
    print("imapidled demo: a throwaway Dovecot on loopback, the real daemon watching it.")
    print("Each new mail reaches three sinks: a command it runs (exec), a signed JSON POST to a\n"
          "local HTTP receiver (webhook), and a desktop notification (desktop). Everything the\n"
          "demo starts is stopped and removed at the end, also on Ctrl-C.")
    with contextlib.ExitStack() as stack:
        workdir = tempfile.mkdtemp(prefix="imapidled-demo-")
        stack.callback(util.remove_tree, workdir)
        server, user = start_dovecot(stack)
        receiver, secret = start_receiver(stack)
        desktop = Desktop(stack)
        desktop.start()
        cfg = write_config(workdir, server, user, receiver, secret)
        check_config(workdir, cfg, desktop)
        d, echo = start_daemon(workdir, cfg, user, desktop, stack)
        delays = deliver_samples(d, echo, user, receiver, secret, desktop)
        reqs, verified = show_webhook(receiver, secret)
        popups = show_desktop(desktop)
        stop_daemon(d, echo)
        reports = d.sanitizer_reports()
        if reports:
            raise SystemExit("demo: a sanitizer reported:\n" + "\n".join(reports))
        count = server.status(USER)["MESSAGES"]
        runs = sum(1 for line in d.lines() if re.search(r"exec show: stdout: got ", line))
        warnings = [line for line in d.lines() if re.search(r" (warning|error) ", line)]
        step("Cleaning up: stopping Dovecot, the receiver"
             + (", the bus watcher" if desktop.real else ", the private bus and its server")
             + "; removing temporary files")
    detail("done." if not args.keep
           else f"done; files kept in {workdir} and /tmp/imapidled-*")

    print("\nSummary")
    print("  config -> TLS to Dovecot (verified against the demo CA) -> login -> IDLE: ok")
    print(f"  mails delivered: {len(SAMPLES)}, in INBOX: {count}, reported by imapidled: "
          f"{len(delays)} (slowest {max(delays) * 1000:.0f} ms after delivery)")
    print(f"  exec sink:    {runs} runs of the command, each with the mail in its environment "
          "and as JSON on stdin")
    print(f"  webhook sink: {len(reqs)} POSTs to {receiver.url()}, {verified} of {len(reqs)} "
          "signatures verified (Standard Webhooks, whsec_ secret)")
    if desktop.real and popups is None:
        print(f"  desktop sink: sent to your desktop's {desktop.server} (not observed)")
    elif desktop.real:
        ids = ", ".join(str(p[0]) for p in popups)
        print(f"  desktop sink: {len(popups)} popups sent to your desktop's {desktop.server}, "
              f"which accepted each (ids {ids})")
    else:
        print(f"  desktop sink: {len(popups)} Notify calls recorded by the stand-in "
              "notification server (no desktop session found, so no popup)")
    if warnings:
        print(f"  daemon warnings: {len(warnings)} (see the log lines above)")
    print("  SIGTERM: clean exit (status 0)")
    print(f"  demo took {time.monotonic() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ndemo: interrupted; everything it started has been stopped.", file=sys.stderr)
        sys.exit(130)
    except (TimeoutError, AssertionError) as e:
        print(f"\ndemo: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
