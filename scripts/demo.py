#!/usr/bin/python3
"""`make demo`: imapidled against a throwaway Dovecot, step by step.

Everything runs on loopback in temporary directories and is removed at the end (also on
Ctrl-C). Uses the integration-test harness (tests/integration/imapidled_test).

    /usr/bin/python3 scripts/demo.py [--keep]      (--keep: leave the temp files behind)
"""
import argparse
import contextlib
import json
import os
import sys
import tempfile

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from imapidled_test import certs, daemon, dovecot, util, webhook  # noqa: E402

# Flip once `imapidled run` works: the demo then starts it and shows the event it sends.
WITH_DAEMON = False
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

_step = 0


def step(text):
    global _step
    _step += 1
    print(f"\n[{_step}] {text}", flush=True)


def detail(text=""):
    for line in str(text).splitlines() or [""]:
        print(f"    {line}", flush=True)


def start_dovecot(stack):
    step("Making a throwaway certificate authority and a certificate for localhost")
    pki_dir = util.make_tmpdir("imapidled-demo-pki-")
    stack.callback(util.remove_tree, pki_dir)
    pki = certs.TestPKI(pki_dir)
    detail(f"CA:          {pki.ca_file}")
    detail(f"fingerprint: {pki.fingerprint()}")

    step("Starting a private Dovecot on loopback")
    server = dovecot.Dovecot(pki)
    stack.callback(server.close)
    server.start()
    detail(f"implicit TLS  {server.host}:{server.imaps_port}")
    detail(f"STARTTLS      {server.starttls_host}:{server.starttls_port}")
    detail(f"plaintext     {server.host}:{server.plain_port}")
    detail(f"log           {server.log_path}")
    detail(f"ready in {server.start_seconds * 1000:.0f} ms")
    return pki, server


def write_config(workdir, server, user, receiver):
    step("Writing an imapidled config for the demo user")
    cfg = daemon.DaemonConfig(os.path.join(workdir, "config"))
    cfg.account("demo", server, user, tls="implicit", mailboxes=["INBOX"],
                sinks=["webhook:demo"])
    cfg.webhook("demo", receiver.url("/mail"), secret=WEBHOOK_SECRET)
    path = cfg.write()
    detail(f"{path}:")
    detail(cfg.text())
    return cfg


def start_daemon(workdir, cfg):
    step("Starting imapidled")
    d = daemon.Daemon(cfg.path, workdir, env=daemon.daemon_env(workdir))
    d.start()
    user_host = cfg.sections["account demo"]
    d.wait_for_log(r"demo/INBOX", timeout=15)
    detail(f"pid {d.pid}, watching {user_host['host']}:{user_host['port']}; log {d.log_path}")
    return d


def deliver(user):
    step(f"Delivering a message to {user.name}'s INBOX")
    uid = user.deliver(subject="Hello from the demo", from_="Demo Sender <sender@example.com>",
                       body="This message was delivered by scripts/demo.py.\n")
    detail(f"UID {uid}")
    return uid


def check_with_imaplib(user, uid):
    step("Checking with a plain IMAP client (imaplib, TLS verified against the demo CA)")
    c = user.imap_client()
    try:
        c.select("INBOX", readonly=True)
        typ, data = c.uid("FETCH", str(uid), "(FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])")
    finally:
        c.logout()
    if typ != "OK" or not data or not isinstance(data[0], tuple):
        raise SystemExit(f"demo: UID {uid} is not in INBOX: {typ} {data!r}")
    detail(data[0][1].decode().strip())


def show_webhook_event(receiver, timeout=15):
    step("Waiting for imapidled's webhook")
    req = receiver.wait_for(1, timeout)[0]
    ok = webhook.verify_signature(WEBHOOK_SECRET, req.headers, req.body)
    detail(f"{req.method} {req.path}  webhook-id: {req.header('webhook-id')}  "
           f"signature {'valid' if ok else 'INVALID'}")
    detail(json.dumps(req.json(), indent=2, ensure_ascii=False))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the temporary files")
    args = ap.parse_args()
    if args.keep:
        os.environ["IMAPIDLED_TEST_KEEP"] = "1"

    with contextlib.ExitStack() as stack:
        workdir = tempfile.mkdtemp(prefix="imapidled-demo-")
        stack.callback(util.remove_tree, workdir)
        _, server = start_dovecot(stack)
        user = server.add_user("demo", "demo-password")
        detail("user demo, password demo-password")
        receiver = webhook.HttpReceiver().start()
        stack.callback(receiver.close)
        cfg = write_config(workdir, server, user, receiver)

        if WITH_DAEMON:
            d = start_daemon(workdir, cfg)
            stack.callback(d.close)
            server.wait_for_idle(user.name, timeout=15)
            detail("imapidled is in IDLE")

        uid = deliver(user)
        check_with_imaplib(user, uid)

        if WITH_DAEMON:
            show_webhook_event(receiver)

        step("Cleaning up")
    detail("Dovecot stopped, temporary files removed." if not args.keep
           else f"Dovecot stopped; files kept in {workdir} and /tmp/imapidled-dovecot-*")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
