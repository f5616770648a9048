"""The engine issue's quick figures: RSS watching N mailboxes over TLS, and the delay from
APPEND to the exec sink over K deliveries against the real Dovecot, with the daemon's own share
read from its debug log (DONE sent -> exec recorder running; 1 ms resolution).

    /usr/bin/python3 bench/engine-delay.py N K      e.g. 1 100, or 100 0
bench/run is the full suite; this is the small script its figures started from."""
"""Quick measurements for the engine issue: RSS at 1 and 100 mailboxes, APPEND -> event delay."""
import os, sys, time, subprocess, statistics, json
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
from imapidled_test import certs, daemon, dovecot, util

BIN = os.environ.get("BIN", os.path.join(REPO, "imapidled"))

def rss(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[k] = int(v.split()[0])
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1])
    except OSError:
        pass
    return out

own = []
def run(nmbox, deliveries):
    d = util.make_tmpdir("measure-")
    os.makedirs(d + "/pki"); pki = certs.TestPKI(d + "/pki")
    srv = dovecot.Dovecot(pki, extra_conf="service imap {\n  process_limit = 2000\n  client_limit = 50\n}\nservice imap-login {\n  service_count = 0\n  process_min_avail = 2\n  client_limit = 2000\n}\n"); srv.start()
    user = srv.new_user("m")
    boxes = ["INBOX"] + [f"box{i}" for i in range(1, nmbox)]
    for b in boxes[1:]:
        srv.create_mailbox(user.name, b)
    rec = d + "/events"
    script = d + "/rec.py"
    open(script, "w").write("#!/usr/bin/python3\nimport os,sys,time\nt=time.clock_gettime(time.CLOCK_REALTIME)\nopen(%r,'a').write('%%s %%f\\n' %% (os.environ['IMAPIDLED_UID'], t))\n" % rec)
    os.chmod(script, 0o755)
    cfg = daemon.DaemonConfig(d + "/config")
    cfg.account("m", srv, user, tls="implicit", mailboxes=boxes, sinks=["exec:rec"])
    cfg.exec("rec", script)
    cfg.write()
    p = subprocess.Popen([BIN, "-vv", "--config", cfg.path], env=daemon.daemon_env(d), stderr=open(d + "/log", "w"))
    t0 = time.time()
    while "all %d mailbox" % nmbox not in open(d + "/log").read():
        time.sleep(0.05)
        if time.time() - t0 > 60: raise SystemExit("not idle: " + open(d+"/log").read()[-2000:])
    t_idle = time.time() - t0
    time.sleep(1)
    mem = rss(p.pid)
    delays = []
    for i in range(deliveries):
        before = open(rec).read().count("\n") if os.path.exists(rec) else 0
        uid = user.deliver(subject=f"m{i}")
        t_app = time.clock_gettime(time.CLOCK_REALTIME)
        while True:
            lines = open(rec).read().splitlines() if os.path.exists(rec) else []
            if len(lines) > before: break
            time.sleep(0.002)
        delays.append(float(lines[-1].split()[1]) - t_app)
    p.terminate(); p.wait(10)
    # The daemon's own share: EXISTS seen (it answers with DONE at once) -> exec started.
    import datetime
    dones = []
    for line in open(d + "/log"):
        if "imap state idling → idle-done" in line:
            hh, mm, ss = line.split()[0].split(":")
            t = datetime.datetime.now().replace(hour=int(hh), minute=int(mm), second=int(float(ss)), microsecond=int(round((float(ss) % 1) * 1e6)))
            dones.append(t.timestamp())
    starts = [float(l.split()[1]) for l in open(rec).read().splitlines()] if os.path.exists(rec) else []
    global own
    own = [s_ - d_ for d_, s_ in zip(dones, starts)]
    srv.close()
    return t_idle, mem, delays

if __name__ == "__main__":
    n = int(sys.argv[1]); k = int(sys.argv[2])
    t_idle, mem, delays = run(n, k)
    print(json.dumps({"mailboxes": n, "startup_to_all_idle_s": round(t_idle, 3), "mem_kib": mem}))
    if delays:
        ds = sorted(delays)
        o = sorted(own)
        if o:
            print("daemon share EXISTS->exec (ms, log has 1 ms resolution): n=%d min=%.1f median=%.1f p95=%.1f max=%.1f" % (len(o), o[0]*1000, statistics.median(o)*1000, o[int(len(o)*0.95)-1]*1000, o[-1]*1000))
        print("delay APPEND->exec (ms): n=%d min=%.1f median=%.1f p95=%.1f max=%.1f" % (len(ds), ds[0]*1000, statistics.median(ds)*1000, ds[int(len(ds)*0.95)-1]*1000, ds[-1]*1000))
