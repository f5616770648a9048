#!/usr/bin/python3
"""`make demo`: imapidled against a throwaway Dovecot, step by step.

Everything runs on loopback in temporary directories and is removed at the end (also on
Ctrl-C). Uses the integration-test harness (tests/integration/imapidled_test).

    /usr/bin/python3 scripts/demo.py [--keep]      (--keep: leave the temp files behind)
"""
import argparse
import contextlib
import os
import re
import signal
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from imapidled_test import certs, daemon, dovecot, util  # noqa: E402

USER, PASSWORD = "demo", "demo-password"

# (From, Subject as it goes on the wire, what a person reads). The second subject is UTF-8 in
# an RFC 2047 encoded word: imapidled decodes it.
SAMPLES = [
    ("Alice Example <alice@example.com>", "Lunch on Friday?", "Lunch on Friday?"),
    ("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <jorg@example.de>",
     "=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4g4pyT?=", "Grüße aus Köln ✓"),
    ("CI <ci@example.com>", "[build] main is green again", "[build] main is green again"),
]

_step = 0


def step(text):
    global _step
    _step += 1
    print(f"\n[{_step}] {text}", flush=True)


def detail(text=""):
    for line in str(text).splitlines() or [""]:
        print(f"    {line}", flush=True)


class LogEcho:
    """Prints the daemon's log lines that have not been shown yet, indented under a step."""

    def __init__(self, d):
        self.d, self.shown = d, 0

    def __call__(self):
        lines = self.d.lines(self.shown)
        self.shown += len(lines)
        for line in lines:
            print(f"      imapidled | {line}", flush=True)


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


# What the exec sink runs for each burst of new mail: it shows what it received, from its
# environment and from the JSON events on its stdin. Its output lands in the daemon's log.
EXEC_COMMAND = ("echo \"got $IMAPIDLED_COUNT mail(s): $IMAPIDLED_FROM_NAME: $IMAPIDLED_SUBJECT\"; "
                "while read -r event; do echo \"stdin: $event\"; done")


def write_config(workdir, server, user):
    step("Writing an imapidled config: one account (implicit TLS checked against the demo CA) "
         "and an exec sink")
    cfg = daemon.DaemonConfig(os.path.join(workdir, "config"))
    cfg.account("demo", server, user, tls="implicit", mailboxes=["INBOX"], sinks=["exec:show"])
    cfg.exec("show", EXEC_COMMAND, shell=True, timeout="10s")
    path = cfg.write()
    detail(f"{path}:")
    detail(cfg.text().rstrip())
    detail("(desktop and webhook sinks are not implemented yet; an exec sink is)")
    return cfg


def check_config(workdir, cfg):
    step("Checking it: imapidled check --connect (logs in once, lists what it finds)")
    code, out, err = daemon.run_check(cfg.path, env=daemon.daemon_env(workdir))
    for line in (out + err).splitlines():
        detail(line)
    if code != 0:
        raise SystemExit(f"demo: `imapidled check --connect` failed with exit status {code}")


def start_daemon(workdir, cfg, user, stack):
    step("Starting the daemon: imapidled --config ... and waiting until it sits in IDLE")
    t0 = time.monotonic()
    d = daemon.Daemon(cfg.path, workdir, env=daemon.daemon_env(workdir))
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


def deliver_samples(d, echo, user):
    step(f"Delivering {len(SAMPLES)} mails to demo's INBOX, one at a time; imapidled reports "
         "each")
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
    detail(f"delivery to log line: {', '.join(f'{s * 1000:.0f} ms' for s in delays)} "
           "(Dovecot itself waits ~500 ms before it tells IDLE clients)")
    return delays


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
    print("New mail shows up twice below: as the daemon's own log line, and as the output of a\n"
          "command it runs for it (an exec sink). Desktop notifications and webhooks have not\n"
          "landed yet, so the demo does not show them.")
    with contextlib.ExitStack() as stack:
        workdir = tempfile.mkdtemp(prefix="imapidled-demo-")
        stack.callback(util.remove_tree, workdir)
        server, user = start_dovecot(stack)
        cfg = write_config(workdir, server, user)
        check_config(workdir, cfg)
        d, echo = start_daemon(workdir, cfg, user, stack)
        delays = deliver_samples(d, echo, user)
        stop_daemon(d, echo)
        reports = d.sanitizer_reports()
        if reports:
            raise SystemExit("demo: a sanitizer reported:\n" + "\n".join(reports))
        count = server.status(USER)["MESSAGES"]
        runs = sum(1 for line in d.lines() if re.search(r"exec show: stdout: got ", line))
        step("Cleaning up")
    detail("Dovecot stopped, temporary files removed." if not args.keep
           else f"Dovecot stopped; files kept in {workdir} and /tmp/imapidled-dovecot-*")

    print("\nSummary")
    print("  config -> TLS to Dovecot (verified against the demo CA) -> login -> IDLE: ok")
    print(f"  mails delivered: {len(SAMPLES)}, in INBOX: {count}, reported by imapidled: "
          f"{len(delays)} (slowest {max(delays) * 1000:.0f} ms after delivery)")
    print(f"  exec sink runs: {runs}, each with the mail in its environment and on stdin")
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
