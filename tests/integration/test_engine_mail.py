"""imapidled against the real Dovecot: every new message becomes exactly one event.

Events are read through the `event_recorder` fixture (an exec sink that records its stdin and
environment). Exactly-once checks end with a sentinel delivery (EventRecorder.sync): once the
sentinel is reported, everything before it in that mailbox has been, so "nothing doubled,
nothing missing" is checked without sleeping.
"""
import base64
import re
import signal
import statistics
import time

import pytest

from imapidled_test.dovecot import build_message

FAST = {"connect_timeout": "2s", "reply_timeout": "2s", "idle_refresh": "10s"}


@pytest.fixture
def start(daemon_config, imapidled, event_recorder):
    """start(dovecot, user, name="a", **account keys) -> a running daemon, events recorded."""
    def run(dovecot=None, user=None, name="a", configure=True, **kw):
        if configure:
            daemon_config.account(name, dovecot, user, **{**FAST, **kw})
            event_recorder.configure(daemon_config)
        return event_recorder.attach(imapidled())
    return run


def _idle(d, user, name="a", mailbox="INBOX", since=0):
    d.wait_for_log(rf"{name}/{re.escape(mailbox)}: (back in IDLE|idle)$", timeout=15,
                   since=since)
    user.wait_for_idle()


def test_new_mail_in_idle_is_one_event(dovecot, mail_user, start, event_recorder):
    d = start(dovecot, mail_user)
    _idle(d, mail_user)
    subject = "Grüße aus Köln — ünïcødé ✓"
    uid = mail_user.deliver(subject=subject, from_="Jörg Müller <joerg@example.com>")
    ev = event_recorder.wait_for_uid("a", "INBOX", uid)
    assert ev["type"] == "mail.received"
    assert ev["subject"] == subject
    assert ev["from_name"] == "Jörg Müller"
    assert ev["from_address"] == "joerg@example.com"
    assert ev["uidvalidity"] == mail_user.status()["UIDVALIDITY"]
    assert ev["id"].startswith("msg_")
    env = ev["env"]
    if env is not None and env.get("IMAPIDLED_COUNT") == "1":
        assert env["IMAPIDLED_EVENT"] == "mail.received"
        assert env["IMAPIDLED_SUBJECT"] == subject
        assert env["IMAPIDLED_UID"] == str(uid)
        assert env["IMAPIDLED_ACCOUNT"] == "a" and env["IMAPIDLED_MAILBOX"] == "INBOX"
    sentinel = event_recorder.sync(mail_user, "a")
    event_recorder.assert_once([("a", "INBOX", uid), ("a", "INBOX", sentinel)])
    assert d.running


def test_two_accounts_three_mailboxes(dovecot, start, event_recorder, daemon_config):
    work, home = dovecot.new_user("work"), dovecot.new_user("home")
    dovecot.create_mailbox(work.name, "Lists/urgent")
    daemon_config.account("work", dovecot, work, mailboxes=["INBOX", "Lists/urgent"], **FAST)
    daemon_config.account("home", dovecot, home, tls="starttls", **FAST)
    event_recorder.configure(daemon_config)
    d = start(configure=False)
    d.wait_for_log(r"all 3 mailboxes idle", timeout=15)
    work.wait_for_idle(count=2)
    home.wait_for_idle(count=1)
    sent = {("work", "INBOX"): work.deliver("INBOX", subject="to work inbox"),
            ("work", "Lists/urgent"): work.deliver("Lists/urgent", subject="to work urgent"),
            ("home", "INBOX"): home.deliver("INBOX", subject="to home inbox")}
    for (acct, mbox), uid in sent.items():
        ev = event_recorder.wait_for_uid(acct, mbox, uid)
        assert ev["subject"] == f"to {acct} {'urgent' if 'urgent' in mbox else 'inbox'}", ev
    expected = [(a, m, u) for (a, m), u in sent.items()]
    for (acct, mbox), user in ((("work", "INBOX"), work), (("work", "Lists/urgent"), work),
                               (("home", "INBOX"), home)):
        expected.append((acct, mbox, event_recorder.sync(user, acct, mbox)))
    event_recorder.assert_once(expected)


@pytest.mark.parametrize("graceful", [False, True], ids=["killed", "bye"])
def test_dovecot_restart_reports_mail_delivered_while_down(dovecot_factory, start,
                                                           event_recorder, graceful):
    dv = dovecot_factory()
    user = dv.new_user()
    d = start(dv, user)
    _idle(d, user)
    before = user.deliver(subject="before the outage")
    event_recorder.wait_for_uid("a", "INBOX", before)
    mark = d.mark()
    dv.stop(graceful=graceful)
    user.deliver_offline(subject="delivered while the server was down")
    d.wait_for_log(r"a/INBOX: .*reconnecting in", since=mark, timeout=10)
    dv.start()
    _idle(d, user, since=mark)
    evs = event_recorder.wait_for(1, subject="delivered while the server was down")
    down_uid = evs[0]["uid"]
    sentinel = event_recorder.sync(user, "a")
    event_recorder.assert_once([("a", "INBOX", before), ("a", "INBOX", down_uid),
                                ("a", "INBOX", sentinel)])


def test_sigkill_and_restart_repeat_nothing_and_miss_nothing(dovecot, mail_user, start,
                                                             event_recorder):
    d1 = start(dovecot, mail_user)
    _idle(d1, mail_user)
    uids = [mail_user.deliver(subject="before the kill")]
    event_recorder.wait_for_uid("a", "INBOX", uids[0])
    d1.send_signal(signal.SIGKILL)
    assert d1.wait(10) == -signal.SIGKILL
    uids.append(mail_user.deliver(subject="while the daemon was dead"))
    uids.append(mail_user.deliver(subject="also while dead"))
    d2 = start(configure=False)  # same config, same state_dir
    _idle(d2, mail_user)
    uids.append(mail_user.deliver(subject="after the restart"))
    for uid in uids:
        event_recorder.wait_for_uid("a", "INBOX", uid)
    uids.append(event_recorder.sync(mail_user, "a"))
    event_recorder.assert_once([("a", "INBOX", u) for u in uids])


def test_uidvalidity_change_reports_no_old_mail(dovecot, mail_user, start, event_recorder):
    old = [mail_user.deliver(subject=f"old {i}") for i in range(3)]
    d = start(dovecot, mail_user)
    _idle(d, mail_user)
    first = mail_user.deliver(subject="before the change")
    event_recorder.wait_for_uid("a", "INBOX", first)
    old_validity = mail_user.status()["UIDVALIDITY"]
    mark = d.mark()
    dovecot.set_uidvalidity(mail_user.name, "INBOX", old_validity + 7)
    # A flag change wakes the IDLE session, whose sync then finds the new UIDVALIDITY (and
    # Dovecot drops it); otherwise that waits for the next IDLE refresh.
    dovecot.store_flags(mail_user.name, "INBOX", old[0], ["\\Flagged"])
    d.wait_for_log(rf"a/INBOX: UIDVALIDITY changed from {old_validity} to "
                   rf"{old_validity + 7}", since=mark, timeout=15)
    _idle(d, mail_user, since=mark)
    new = mail_user.deliver(subject="after the change")
    ev = event_recorder.wait_for_uid("a", "INBOX", new)
    assert ev["uidvalidity"] in (None, old_validity + 7)
    sentinel = event_recorder.sync(mail_user, "a")
    # The four messages kept their UIDs under the new UIDVALIDITY: none is reported again.
    event_recorder.assert_once([("a", "INBOX", first), ("a", "INBOX", new),
                                ("a", "INBOX", sentinel)])
    assert not event_recorder.events(type="mail.summary")
    assert all(u < new for u in old)


def test_polling_without_idle(dovecot_factory, start, event_recorder, daemon_config):
    dv = dovecot_factory(disable_idle=True)
    user = dv.new_user()
    daemon_config.set("imapidled", "log_level", "debug")
    d = start(dv, user, poll_interval="1s")
    d.wait_for_log(r"a/INBOX: idle$", timeout=10)
    t0 = time.monotonic()
    uid = user.deliver(subject="found by polling")
    ev = event_recorder.wait_for_uid("a", "INBOX", uid, timeout=5)
    assert ev["subject"] == "found by polling"
    took = time.monotonic() - t0
    assert took < 3.0, f"polling every 1 s took {took:.2f} s"
    sentinel = event_recorder.sync(user, "a")
    event_recorder.assert_once([("a", "INBOX", uid), ("a", "INBOX", sentinel)])
    sent = [line for line in d.lines() if re.search(r"a/INBOX: C: a\d+ ", line)]
    assert any(" NOOP" in line for line in sent), sent
    assert not any(re.search(r"C: a\d+ IDLE", line) for line in sent), sent
    assert dv.idle_count(user.name) == 0


SUBJECTS = [
    ("=?UTF-8?B?" + base64.b64encode("Grüße aus Köln ✓".encode()).decode() + "?=",
     "Grüße aus Köln ✓"),
    ("=?ISO-8859-1?Q?Caf=E9_cr=E8me_=E0_la_fran=E7aise?=", "Café crème à la française"),
    ("=?windows-1252?Q?=93Smart=94_quotes_cost_=8050?=", "“Smart” quotes cost €50"),
    ("=?ISO-2022-JP?B?" + base64.b64encode("日本語のテスト".encode("iso2022_jp")).decode() + "?=",
     "日本語のテスト"),
]


def test_encoded_subjects_become_utf8(dovecot, mail_user, start, event_recorder):
    d = start(dovecot, mail_user)
    _idle(d, mail_user)
    uids = {}
    # RFC 2047 words, and raw 8-bit UTF-8 (RFC 6532; Dovecot sends it as a literal).
    for raw_subject, text in SUBJECTS + [("Ünïcødé ohne Kodierung ✓".encode(),
                                          "Ünïcødé ohne Kodierung ✓")]:
        if isinstance(raw_subject, str):
            raw_subject = raw_subject.encode()
        raw = (b"From: =?ISO-8859-1?Q?J=F6rg?= <joerg@example.com>\r\n" +
               f"To: {mail_user.name}@example.com\r\n".encode() +
               b"Subject: " + raw_subject + b"\r\n" +
               f"Message-ID: <{len(uids)}.enc@imapidled.test>\r\n\r\nbody\r\n".encode())
        uids[mail_user.deliver(raw=raw)] = text
    for uid, text in uids.items():
        ev = event_recorder.wait_for_uid("a", "INBOX", uid)
        assert ev["subject"] == text, (uid, ev["subject"], text)
        assert ev["from_name"] == "Jörg"


def test_hostile_subject_is_sanitised(dovecot, mail_user, start, event_recorder):
    """Control characters (an encoded CR LF, ESC, NUL) never reach a sink; an overlong
    subject is cut on a character boundary."""
    d = start(dovecot, mail_user)
    _idle(d, mail_user)
    evil = "=?UTF-8?Q?evil=0D=0AIMAPIDLED=5FX=3D1=1B[31m=00end?="
    long_subject = "ä" * 3000
    u1 = mail_user.deliver(raw=f"From: a@example.com\r\nSubject: {evil}\r\n\r\nx\r\n")
    u2 = mail_user.deliver(subject=long_subject)
    ev = event_recorder.wait_for_uid("a", "INBOX", u1)
    assert "evil" in ev["subject"] and "end" in ev["subject"], ev["subject"]
    assert not re.search(r"[\x00-\x1f\x7f]", ev["subject"]), repr(ev["subject"])
    ev = event_recorder.wait_for_uid("a", "INBOX", u2)
    assert ev["subject"] and set(ev["subject"].rstrip("…")) == {"ä"}, ev["subject"][-40:]
    assert len(ev["subject"].encode()) <= 1024
    assert d.running


def test_mailbox_name_in_modified_utf7(dovecot, mail_user, start, event_recorder):
    box = "Straße & Co"
    dovecot.create_mailbox(mail_user.name, box)
    d = start(dovecot, mail_user, mailboxes=[box])
    _idle(d, mail_user, mailbox=box)
    uid = mail_user.deliver(box, subject="to a non-ASCII mailbox")
    ev = event_recorder.wait_for_uid("a", box, uid)
    assert ev["mailbox"] == box
    assert mail_user.deliver(subject="to INBOX, not watched")
    sentinel = event_recorder.sync(mail_user, "a", box)
    event_recorder.assert_once([("a", box, uid), ("a", box, sentinel)])


def test_seen_message_is_skipped(dovecot, mail_user, start, event_recorder):
    d = start(dovecot, mail_user)
    _idle(d, mail_user)
    seen = mail_user.deliver(subject="already read", flags=("\\Seen",))
    unseen = mail_user.deliver(subject="not read yet")
    event_recorder.wait_for_uid("a", "INBOX", unseen)
    sentinel = event_recorder.sync(mail_user, "a")
    event_recorder.assert_once([("a", "INBOX", unseen), ("a", "INBOX", sentinel)])
    assert seen < unseen


def test_first_run_reports_nothing_old(dovecot, mail_user, start, event_recorder):
    old = [mail_user.deliver(subject=f"old {i}") for i in range(3)]
    d = start(dovecot, mail_user)
    _idle(d, mail_user)
    d.wait_for_log(rf"a/INBOX: watching from UID {old[-1] + 1} on")
    sentinel = event_recorder.sync(mail_user, "a")
    event_recorder.assert_once([("a", "INBOX", sentinel)])
    assert not event_recorder.events(type="mail.summary")


def test_catch_up_summarises_the_oldest(dovecot, mail_user, start, event_recorder):
    d1 = start(dovecot, mail_user, catch_up=3)
    _idle(d1, mail_user)
    assert d1.stop() == 0
    uids = [mail_user.deliver(subject=f"missed {i}") for i in range(5)]
    d2 = start(configure=False)
    _idle(d2, mail_user)
    for uid in uids:
        event_recorder.wait_for_uid("a", "INBOX", uid)
    summaries = event_recorder.events(type="mail.summary")
    assert len(summaries) == 1, event_recorder.describe(event_recorder.events())
    s = summaries[0]
    assert (s["count"], s["first_uid"], s["uid"]) == (2, uids[0], uids[1]), s
    sentinel = event_recorder.sync(mail_user, "a")
    event_recorder.assert_once([("a", "INBOX", u) for u in uids[2:]] +
                               [("a", "INBOX", sentinel)])


def test_measure_delivery_latency(dovecot, mail_user, start, event_recorder):
    """Not a pass/fail limit: prints the delay from APPEND completing to the event (Dovecot
    itself holds IDLE notifications about 0.5 s)."""
    d = start(dovecot, mail_user)
    _idle(d, mail_user)
    to_log, to_sink = [], []
    for i in range(20):
        t_mono, t_clock = None, None
        uid = mail_user.deliver(subject=f"latency {i}")
        t_mono, t_clock = time.monotonic(), event_recorder.clock()
        ev = event_recorder.wait_for_uid("a", "INBOX", uid)
        line_t = next(t for t, line in d.timed_lines()
                      if re.search(rf"a/INBOX: new mail, UID {uid},", line))
        to_log.append(line_t - t_mono)
        to_sink.append(ev["t"] - t_clock)
        time.sleep(max(0.0, 0.7 - (time.monotonic() - t_mono)))
    event_recorder.assert_once([("a", "INBOX", u) for u in
                                sorted({e["uid"] for e in event_recorder.events()})])
    assert len(event_recorder.events()) == 20
    print(f"\nAPPEND → daemon log line: median {statistics.median(to_log) * 1000:.0f} ms, "
          f"max {max(to_log) * 1000:.0f} ms; APPEND → exec sink running: median "
          f"{statistics.median(to_sink) * 1000:.0f} ms, max {max(to_sink) * 1000:.0f} ms "
          f"(20 deliveries, {event_recorder.mode} mode)")
