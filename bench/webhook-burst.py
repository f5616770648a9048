"""N messages appended to one mailbox as fast as one client can, delivered through the webhook
sink to a local receiver: time until all arrived after the last APPEND, and none doubled.

    /usr/bin/python3 bench/webhook-burst.py 3000
"""
import os, sys, time, json
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
from imapidled_test import certs, daemon, dovecot, util, webhook
import subprocess
N = int(sys.argv[1])
d = util.make_tmpdir("burst-"); os.makedirs(d+"/pki"); pki = certs.TestPKI(d+"/pki")
srv = dovecot.Dovecot(pki); srv.start(); user = srv.new_user("b")
rx = webhook.HttpReceiver(); rx.start()
cfg = daemon.DaemonConfig(d+"/config")
cfg.account("w", srv, user, sinks=["webhook:r"]); cfg.webhook("r", rx.url("/h")); cfg.write()
p = subprocess.Popen([os.path.join(REPO, "imapidled"), "--config", cfg.path], env=daemon.daemon_env(d), stderr=open(d+"/log","w"))
t0=time.time()
while "all 1 mailbox idle" not in open(d+"/log").read(): time.sleep(0.05)
c = user.imap_client()
t_start = time.time()
for i in range(N):
    c.append("INBOX", None, None, ("From: a@b\r\nSubject: m%d\r\n\r\nx\r\n" % i).encode())
t_app = time.time()
ok = rx.wait_for(N, timeout=120)
t_done = time.time()
ids = [r.headers.get("webhook-id") for r in rx.requests]
print("N=%d appended in %.2fs; all received %.2fs after the last APPEND; requests=%d unique=%d" % (N, t_app-t_start, t_done-t_app, len(ids), len(set(ids))))
p.terminate(); p.wait(10); srv.close(); rx.close()
