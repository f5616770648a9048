"""The watcher learns what becomes of a reported message: another client reads it (\\Seen) or
deletes it (expunge). With QRESYNC (Dovecot offers it) the watcher ENABLEs it and gets UIDs in
flag changes and VANISHED for expunges; without it (a Dovecot told not to advertise QRESYNC)
it ENABLEs CONDSTORE and maps EXPUNGE's sequence numbers through the messages it reported.

What the watcher learned is read from its debug log ("a/INBOX: UID 5 is now \\Seen",
"a/INBOX: UID 5 expunged"). What a sink does with it is tested with that sink: the desktop
sink closes the popup of a message read or deleted elsewhere (test_desktop.py,
test_read_elsewhere_closes_the_popup).
"""
import re

import pytest

from imapidled_test import dovecot as dovecot_mod

FAST = {"connect_timeout": "2s", "reply_timeout": "2s", "idle_refresh": "10s"}

# Dovecot's own list with IDLE, without QRESYNC: CONDSTORE only.
CAPABILITY_WITHOUT_QRESYNC = (
    dovecot_mod.CAPABILITY_WITHOUT_IDLE.replace(" QRESYNC", "") + " IDLE")


@pytest.fixture
def start(daemon_config, imapidled, event_recorder):
    """start(dovecot, user) -> a running daemon at log_level debug, in IDLE, events recorded."""
    def run(dovecot, user, name="a"):
        daemon_config.set("imapidled", "log_level", "debug")
        daemon_config.account(name, dovecot, user, **FAST)
        event_recorder.configure(daemon_config)
        d = event_recorder.attach(imapidled())
        d.wait_for_log(rf"{name}/INBOX: (back in IDLE|idle)$", timeout=15)
        user.wait_for_idle()
        return d
    return run


def _report(user, event_recorder, subject):
    uid = user.deliver(subject=subject)
    event_recorder.wait_for_uid("a", "INBOX", uid)
    return uid


def _seen_then_expunged(dovecot, user, d, event_recorder):
    first = _report(user, event_recorder, "first")
    second = _report(user, event_recorder, "second")
    mark = d.mark()
    # Another client reads the second message: the watcher learns it in IDLE.
    dovecot.store_flags(user.name, "INBOX", second, ["\\Seen"])
    d.wait_for_log(rf"a/INBOX: UID {second} is now \\Seen$", since=mark)
    # A flag other than \Seen is no news for the sinks: one line for two changes.
    mark = d.mark()
    dovecot.store_flags(user.name, "INBOX", first, ["\\Flagged"])
    dovecot.store_flags(user.name, "INBOX", first, ["\\Seen"])
    d.wait_for_log(rf"a/INBOX: UID {first} is now \\Seen$", since=mark)
    assert len([line for line in d.lines(since=mark)
                if re.search(rf"a/INBOX: UID {first} is now", line)]) == 1
    # Expunging the first shifts the second's sequence number down: the second expunge
    # must still name the right UID.
    mark = d.mark()
    dovecot.expunge(user.name, "INBOX", first)
    d.wait_for_log(rf"a/INBOX: UID {first} expunged$", since=mark)
    mark = d.mark()
    dovecot.expunge(user.name, "INBOX", second)
    d.wait_for_log(rf"a/INBOX: UID {second} expunged$", since=mark)
    # Still healthy: new mail after all that is reported as usual.
    third = _report(user, event_recorder, "third")
    assert third > second
    assert d.running


def test_qresync_seen_and_expunged_elsewhere(dovecot, mail_user, start, event_recorder):
    d = start(dovecot, mail_user)
    assert re.search(r"C: a\d+ ENABLE QRESYNC", d.log_text())
    _seen_then_expunged(dovecot, mail_user, d, event_recorder)


def test_condstore_only_seen_and_expunged_elsewhere(dovecot_factory, start, event_recorder):
    dv = dovecot_factory(imap_capability=CAPABILITY_WITHOUT_QRESYNC)
    user = dv.new_user()
    d = start(dv, user)
    assert re.search(r"C: a\d+ ENABLE CONDSTORE", d.log_text())
    assert "ENABLE QRESYNC" not in d.log_text()
    _seen_then_expunged(dv, user, d, event_recorder)
