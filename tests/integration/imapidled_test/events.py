"""What the daemon reported: one EventRecorder per test reads events the same way whatever
carries them.

Two sources, chosen once per run:
  exec  an `[exec rec]` sink (added to every account by configure()) runs a tiny Python
        script that appends one JSON record per run to a file: the IMAPIDLED_* environment
        and the JSON event lines it got on stdin. This is the real path (watch → dispatch →
        sink/exec) and the default once the tree has src/dispatch.c.
  log   before the exec sink is wired, the daemon logs each event it has no sink for:
        `ACCOUNT/MAILBOX: new mail, UID N, from NAME: SUBJECT` and
        `ACCOUNT/MAILBOX: N messages arrived while away (UID A to B): one summary`.
IMAPIDLED_TEST_EVENTS=exec|log forces one.

Every event is a dict: type (mail.received | mail.summary), account, mailbox, uid (summary:
the last), first_uid, count, subject, from_name, uidvalidity (None in log mode), id (None in
log mode), t (monotonic-comparable wall time of the report, see below).

    rec = event_recorder                    # the fixture
    cfg.account("a", dovecot, user, ...)
    rec.configure(cfg)
    d = rec.attach(imapidled())
    rec.wait_for(1)
    rec.assert_once(("a", "INBOX", 1))
"""
import collections
import json
import os
import re
import threading
import time

from . import util
from .daemon import REPO

_SCRIPT = r'''import json, os, sys, time
t = time.time()
data = sys.stdin.buffer.read()
env = {k: v for k, v in os.environ.items() if k.startswith("IMAPIDLED_")}
lines = [json.loads(l) for l in data.splitlines() if l.strip()]
rec = json.dumps({"t": t, "pid": os.getpid(), "env": env, "events": lines}) + "\n"
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, rec.encode())
os.close(fd)
'''

_PREFIX = r"^\d\d:\d\d:\d\d\.\d{3} \S+\s+"
_RX_MAIL = re.compile(_PREFIX + r"(?P<account>[^/\s]+)/(?P<mailbox>.+?): new mail, "
                      r"UID (?P<uid>\d+), from (?P<from>.*?): (?P<subject>.*)$")
_RX_SUMMARY = re.compile(_PREFIX + r"(?P<account>[^/\s]+)/(?P<mailbox>.+?): (?P<count>\d+) "
                         r"messages arrived while away \(UID (?P<first>\d+) to "
                         r"(?P<last>\d+)\): one summary$")


def default_mode():
    mode = os.environ.get("IMAPIDLED_TEST_EVENTS")
    if mode in ("exec", "log"):
        return mode
    return "exec" if os.path.exists(os.path.join(REPO, "src", "dispatch.c")) else "log"


class EventRecorder:
    """Collects the daemon's events (see the module docstring)."""

    def __init__(self, directory=None, mode=None, sink="rec"):
        # A short private dir by default: a config line holds at most 199 characters and
        # pytest's tmp_path can be long.
        self._own_dir = directory is None
        self.dir = str(directory) if directory else util.make_tmpdir("imapidled-ev-")
        os.makedirs(self.dir, exist_ok=True)
        self.mode = mode or default_mode()
        self.sink = sink
        self.path = os.path.join(self.dir, "events.jsonl")
        self.script = os.path.join(self.dir, "record-events.py")
        self.wrapper = os.path.join(self.dir, "rec")
        with open(self.script, "w") as f:
            f.write(_SCRIPT)
        with open(self.wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec /usr/bin/python3 -I -S {self.script} {self.path}\n")
        os.chmod(self.wrapper, 0o755)
        self.daemons = []
        self._lock = threading.Lock()

    def close(self):
        if self._own_dir:
            util.remove_tree(self.dir)

    # -- set-up ------------------------------------------------------------------------------

    def command(self):
        return self.wrapper

    def clock(self):
        """Now, on the clock of the events' "t" (wall time for exec, monotonic for log)."""
        return time.time() if self.mode == "exec" else time.monotonic()

    def configure(self, cfg, accounts=None):
        """Route every account of cfg (or those named) to the recorder. In log mode this
        only makes sure no other sink swallows the events. Returns cfg."""
        names = [s[len("account "):] for s in cfg.sections if s.startswith("account ")]
        for name in names:
            if accounts is not None and name not in accounts:
                continue
            s = cfg.sections[f"account {name}"]
            if self.mode == "exec":
                sinks = s.get("sinks") or []
                if isinstance(sinks, str):
                    sinks = [x.strip() for x in sinks.split(",") if x.strip()]
                if f"exec:{self.sink}" not in sinks:
                    sinks = list(sinks) + [f"exec:{self.sink}"]
                s["sinks"] = sinks
            else:
                s.pop("sinks", None)
        if self.mode == "exec":
            cfg.exec(self.sink, self.command())
        return cfg

    def attach(self, daemon):
        """Read log-mode events from this daemon (every daemon of the test, in order)."""
        self.daemons.append(daemon)
        return daemon

    # -- reading -----------------------------------------------------------------------------

    def runs(self):
        """Exec mode: [{t, pid, env, events}] per command run."""
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            if line.endswith("}"):
                out.append(json.loads(line))
        return out

    def events(self, **match):
        """Every event so far, oldest first; keyword arguments filter on fields."""
        evs = self._exec_events() if self.mode == "exec" else self._log_events()
        return [e for e in evs if all(e.get(k) == v for k, v in match.items())]

    def _exec_events(self):
        out = []
        for run in self.runs():
            for ev in run["events"]:
                d = ev.get("data", {})
                summary = ev.get("type") == "mail.summary"
                frm = d.get("from") or {}
                out.append({
                    "type": ev.get("type"), "account": d.get("account"),
                    "mailbox": d.get("mailbox"),
                    "uid": d.get("last_uid") if summary else d.get("uid"),
                    "first_uid": d.get("first_uid") if summary else d.get("uid"),
                    "count": d.get("count", 1) if summary else 1,
                    "subject": d.get("subject"), "from_name": frm.get("name"),
                    "from_address": frm.get("address"),
                    "uidvalidity": d.get("uidvalidity"), "id": d.get("id"),
                    "t": run["t"], "env": run["env"], "raw": ev,
                })
        return out

    def _log_events(self):
        out = []
        for d in self.daemons:
            for t, line in d.timed_lines():
                m = _RX_MAIL.search(line)
                if m:
                    uid = int(m["uid"])
                    out.append({"type": "mail.received", "account": m["account"],
                                "mailbox": m["mailbox"], "uid": uid, "first_uid": uid,
                                "count": 1, "subject": m["subject"],
                                "from_name": m["from"], "from_address": None,
                                "uidvalidity": None, "id": None, "t": t, "env": None,
                                "raw": line})
                    continue
                m = _RX_SUMMARY.search(line)
                if m:
                    out.append({"type": "mail.summary", "account": m["account"],
                                "mailbox": m["mailbox"], "uid": int(m["last"]),
                                "first_uid": int(m["first"]), "count": int(m["count"]),
                                "subject": None, "from_name": None, "from_address": None,
                                "uidvalidity": None, "id": None, "t": t, "env": None,
                                "raw": line})
        return out

    # -- waiting and asserting ---------------------------------------------------------------

    def wait_for(self, n=1, timeout=10.0, **match):
        """Wait until at least n events (matching the filter) were reported; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            evs = self.events(**match)
            if len(evs) >= n:
                return evs
            for d in self.daemons:
                if d.proc is not None and not d.running and d is self.daemons[-1]:
                    raise AssertionError(f"imapidled exited ({d.returncode}) with "
                                         f"{len(evs)}/{n} events {match}:\n{d.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(evs)} of {n} events {match} within {timeout} s: "
                                   f"{self.describe(evs)}\n{self._tails()}")
            time.sleep(0.01)

    def wait_for_uid(self, account, mailbox, uid, timeout=10.0):
        """Wait for the event (received, or a summary covering it) of one message."""
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events(account=account, mailbox=mailbox):
                if e["first_uid"] <= uid <= e["uid"]:
                    return e
            if time.monotonic() > deadline:
                raise TimeoutError(f"no event for {account}/{mailbox} UID {uid} within "
                                   f"{timeout} s: {self.describe(self.events())}\n"
                                   f"{self._tails()}")
            time.sleep(0.01)

    def received_uids(self, account, mailbox):
        return [e["uid"] for e in self.events(account=account, mailbox=mailbox,
                                              type="mail.received")]

    def assert_once(self, expected, account=None, mailbox=None, allow_others=False):
        """Every (account, mailbox, uid) of expected has exactly one mail.received event and
        (unless allow_others) there is no other mail.received event in the scope
        (account / mailbox filters limit it)."""
        match = {k: v for k, v in (("account", account), ("mailbox", mailbox)) if v}
        got = collections.Counter((e["account"], e["mailbox"], e["uid"])
                                  for e in self.events(type="mail.received", **match))
        want = collections.Counter(tuple(x) for x in expected)
        missing = [k for k in want if got[k] == 0]
        doubled = {k: n for k, n in got.items() if n > 1}
        extra = [k for k in got if k not in want]
        problems = []
        if missing:
            problems.append(f"missing: {sorted(missing)}")
        if doubled:
            problems.append(f"reported more than once: {doubled}")
        if extra and not allow_others:
            problems.append(f"unexpected: {sorted(extra)}")
        assert not problems, "; ".join(problems) + "\nevents: " + \
            self.describe(self.events()) + "\n" + self._tails()

    def sync(self, user, account, mailbox="INBOX", subject="sentinel", timeout=10.0):
        """Deliver a sentinel message and wait for its event: everything the daemon was
        going to report about earlier mail of this mailbox has been reported by then
        (events of one mailbox come in UID order). Returns the sentinel's UID."""
        uid = user.deliver(mailbox, subject=subject)
        self.wait_for_uid(account, mailbox, uid, timeout)
        return uid

    @staticmethod
    def describe(evs):
        return "[" + ", ".join(
            f"{e['account']}/{e['mailbox']}:{e['type'].split('.')[1]}"
            f"{e['first_uid']}-{e['uid']}" if e["type"] == "mail.summary" else
            f"{e['account']}/{e['mailbox']}:{e['uid']}" for e in evs) + "]"

    def _tails(self):
        return "\n".join(d.log_tail(25) for d in self.daemons[-1:])
