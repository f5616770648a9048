"""The desktop sink against a real session bus (dbus-daemon), python-dbusmock's notification
server and the real Dovecot: what Notify carries, bursts, actions, a missing or restarting
server, no bus at all.
"""
import json
import os
import re
import signal
import time

import dbus
import pytest

from imapidled_test import bus

FAST = {"connect_timeout": "2s", "reply_timeout": "2s", "idle_refresh": "10s"}
CLICK_SCRIPT = """#!/usr/bin/python3 -I
import json, os, sys
out = sys.argv[1]
n = 0
while os.path.exists(f"{out}.{n}"):
    n += 1
with open(f"{out}.{n}.tmp", "w") as f:
    json.dump({"env": dict(os.environ), "argv": sys.argv[1:]}, f)
os.rename(f"{out}.{n}.tmp", f"{out}.{n}")
"""


def _idle(d, user, name="a"):
    d.wait_for_log(rf"{name}/INBOX: (back in IDLE|idle)$", timeout=15)
    user.wait_for_idle()


@pytest.fixture
def click(tmp_path):
    """An on_click command that records its environment: (argv string, runs())."""
    script = tmp_path / "on-click"
    script.write_text(CLICK_SCRIPT)
    script.chmod(0o755)
    out = str(tmp_path / "click")

    def runs(n=1, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            got = []
            while os.path.exists(f"{out}.{len(got)}"):
                with open(f"{out}.{len(got)}") as f:
                    got.append(json.load(f))
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.02)

    return f"{script} {out} 'two words'", runs


@pytest.fixture
def start(daemon_config, imapidled, dovecot, mail_user):
    """start(desktop keys..., sinks=..., env=...) -> the daemon, idle on a/INBOX."""
    def run(sinks=("desktop",), env=None, wait_idle=True, args=(), recorder=None,
            **desktop):
        daemon_config.account("a", dovecot, mail_user, sinks=list(sinks), **FAST)
        if recorder is not None:  # an exec sink beside the desktop
            recorder.configure(daemon_config)
        if desktop:
            daemon_config.desktop(**desktop)
        d = imapidled(env=env, args=args)
        if recorder is not None:
            recorder.attach(d)
        if wait_idle:
            _idle(d, mail_user)
        return d
    return run


def test_notify_carries_sender_subject_hints_and_actions(start, mail_user, notification_daemon,
                                                         click):
    start(on_click=click[0], actions=["open", "mark-read"], urgency="critical",
          desktop_entry="org.example.Mail")
    mail_user.deliver(subject='Tom & Jerry <3 "quotes" \'too\'',
                      from_="Jörg Müller <joerg@example.com>")
    n = notification_daemon.wait_for_notifications(1)[0]
    assert (n.app_name, n.replaces_id, n.icon, n.summary) == (
        "imapidled", 0, "mail-unread", "Jörg Müller")
    # The default capabilities include body-markup: the subject is escaped.
    assert n.body == "Tom &amp; Jerry &lt;3 &quot;quotes&quot; &apos;too&apos;"
    assert n.hints == {"category": "email.arrived", "urgency": 2,
                       "desktop-entry": "org.example.Mail"}
    assert n.actions == ["default", "Open", "open", "Open", "mark-read", "Mark as read"]
    assert n.expire_timeout == -1


@pytest.mark.notification_caps("body")
def test_plain_server_gets_raw_body_and_no_actions(start, mail_user, notification_daemon,
                                                   click):
    start(on_click=click[0], actions=["open", "mark-read"], urgency="low")
    mail_user.deliver(subject="a < b & c", from_="<only@address.example>")
    n = notification_daemon.wait_for_notifications(1)[0]
    assert n.summary == "only@address.example"
    assert n.body == "a < b & c"
    assert n.actions == []
    assert n.hints == {"category": "email.arrived", "urgency": 0}


def test_without_on_click_no_open_action(start, mail_user, notification_daemon):
    start()
    mail_user.deliver(subject="hello")
    n = notification_daemon.wait_for_notifications(1)[0]
    assert n.actions == []  # open needs on_click; mark-read is off by default
    assert n.hints["urgency"] == 1


@pytest.mark.parametrize("value,expected", [("never", 0), ("0", 0), ("5s", 5000),
                                            ("1500ms", 1500), ("default", -1)])
def test_expire_timeout(start, mail_user, notification_daemon, value, expected):
    start(expire_timeout=value)
    mail_user.deliver(subject="expiring")
    assert notification_daemon.wait_for_notifications(1)[0].expire_timeout == expected


@pytest.mark.parametrize("key", ["default", "open"])
def test_action_runs_on_click_with_event_env_and_token(start, mail_user, notification_daemon,
                                                       click, key):
    start(on_click=click[0])
    uid = mail_user.deliver(subject="Grüße", from_="Alice Example <alice@example.com>")
    n = notification_daemon.wait_for_notifications(1)[0]
    # Some servers send the token first, right before ActionInvoked.
    notification_daemon.emit_activation_token(n.id, "token-123")
    notification_daemon.emit_action_invoked(n.id, key)
    run = click[1](1)[0]
    env = run["env"]
    assert run["argv"][1:] == ["two words"]
    assert env["XDG_ACTIVATION_TOKEN"] == "token-123"
    assert env["IMAPIDLED_EVENT"] == "mail.received"
    assert (env["IMAPIDLED_ACCOUNT"], env["IMAPIDLED_MAILBOX"]) == ("a", "INBOX")
    assert env["IMAPIDLED_UID"] == str(uid)
    assert env["IMAPIDLED_SUBJECT"] == "Grüße"
    assert env["IMAPIDLED_FROM_ADDRESS"] == "alice@example.com"
    assert env["DBUS_SESSION_BUS_ADDRESS"]  # the daemon's own environment is passed on

    # A second click without a token: the first one is not reused.
    notification_daemon.emit_action_invoked(n.id, key)
    second = click[1](2)
    assert len(second) == 2 and "XDG_ACTIVATION_TOKEN" not in second[1]["env"]


def test_signals_from_others_than_the_server_are_ignored(start, mail_user, notification_daemon,
                                                         session_bus, click):
    d = start(on_click=click[0])
    mail_user.deliver(subject="hello")
    n = notification_daemon.wait_for_notifications(1)[0]
    conn = session_bus.connection()
    msg = dbus.lowlevel.SignalMessage(bus.NOTIFY_PATH, bus.NOTIFY_IFACE, "ActionInvoked")
    msg.append(dbus.UInt32(n.id), "default", signature="us")
    conn.send_message(msg)
    conn.flush()
    # Then the real server's click: the command runs once, for that one only.
    notification_daemon.emit_action_invoked(n.id, "open")
    assert len(click[1](1)) == 1
    time.sleep(0.3)
    assert len(click[1](2, timeout=0)) == 1, d.log_tail()


def test_mark_read_sets_seen_over_imap(start, mail_user, notification_daemon):
    d = start(actions=["mark-read"])
    uid = mail_user.deliver(subject="read me from the popup")
    n = notification_daemon.wait_for_notifications(1)[0]
    assert n.action_map == {"mark-read": "Mark as read"}
    assert "\\Seen" not in mail_user.fetch_flags("INBOX", uid)
    notification_daemon.emit_action_invoked(n.id, "mark-read")
    deadline = time.monotonic() + 10
    while "\\Seen" not in mail_user.fetch_flags("INBOX", uid):
        assert time.monotonic() < deadline, d.log_tail()
        time.sleep(0.05)
    assert d.running


@pytest.mark.parametrize("how", ["read", "expunged"])
def test_read_elsewhere_closes_the_popup(start, mail_user, dovecot, notification_daemon, how):
    d = start()
    keep = mail_user.deliver(subject="stays")
    gone = mail_user.deliver(subject=f"{how} on the phone")
    got = notification_daemon.wait_for_notifications(2)
    ids = {x.body: x.id for x in got}
    if how == "read":
        dovecot.store_flags(mail_user.name, "INBOX", gone, ["\\Seen"])
    else:
        dovecot.expunge(mail_user.name, "INBOX", gone)
    notification_daemon.wait_for_closed(ids[f"{how} on the phone"])
    time.sleep(0.3)
    assert notification_daemon.closed_ids() == [ids[f"{how} on the phone"]], d.log_tail()
    assert keep and d.running


def _wait_for_summary(n, text, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        got = n.notifications()
        if got and got[-1].summary == text:
            return got
        assert time.monotonic() < deadline, [(x.id, x.replaces_id, x.summary) for x in got]
        time.sleep(0.05)


def test_burst_becomes_one_summary_updated_in_place(start, mail_user, notification_daemon):
    start(summary_threshold=3, summary_window="10s")
    # In waves, each of which Dovecot reports at once: two single popups, then the burst.
    for i in range(2):
        mail_user.deliver(subject=f"single {i}")
    notification_daemon.wait_for_notifications(2)
    for i in range(6):
        mail_user.deliver(subject=f"burst {i}")
    _wait_for_summary(notification_daemon, "8 new messages in a/INBOX")
    for i in range(12):
        mail_user.deliver(subject=f"more {i}")
    got = _wait_for_summary(notification_daemon, "20 new messages in a/INBOX")
    summaries = [x for x in got if "new messages in" in x.summary]
    singles = [x for x in got if x not in summaries]
    assert [x.body for x in singles] == ["single 0", "single 1"]
    assert len(got) <= 6, [(x.id, x.replaces_id, x.summary) for x in got]
    # One popup: every summary call after the first replaces the first.
    first = summaries[0]
    assert first.replaces_id == 0 and len(summaries) >= 2
    assert all(x.replaces_id == first.id for x in summaries[1:])
    assert all(x.hints["category"] == "email.arrived" and x.body == "" for x in summaries)
    # The single popups of the burst were closed when the summary took over.
    for x in singles:
        notification_daemon.wait_for_closed(x.id)


def test_burst_in_one_fetch_is_one_popup(start, mail_user, notification_daemon):
    d = start(summary_threshold=3, summary_window="5s")
    for i in range(20):
        mail_user.deliver(subject=f"burst {i}")
    got = _wait_for_summary(notification_daemon, "20 new messages in a/INBOX")
    # However the 20 came in (Dovecot tends to report them together), few calls, one popup.
    assert len(got) <= 8, [(x.id, x.replaces_id, x.summary) for x in got]
    assert d.running


def test_quiet_window_ends_the_burst(start, mail_user, notification_daemon):
    d = start(summary_threshold=0, summary_window="1s")
    mail_user.deliver(subject="one")
    first = notification_daemon.wait_for_notifications(1)[0]
    assert first.summary == "1 new message in a/INBOX"  # threshold 0: always a summary
    time.sleep(1.5)
    mail_user.deliver(subject="two")
    second = notification_daemon.wait_for_notifications(2)[1]
    assert (second.summary, second.replaces_id) == ("1 new message in a/INBOX", 0), d.log_tail()


def _exec_recorder(daemon_config, event_recorder):
    event_recorder.configure(daemon_config)
    return event_recorder


def test_no_server_other_sinks_deliver_then_server_appears(daemon_config, imapidled, dovecot,
                                                           mail_user, session_bus,
                                                           event_recorder):
    daemon_config.account("a", dovecot, mail_user, sinks=["desktop"], **FAST)
    _exec_recorder(daemon_config, event_recorder)
    d = event_recorder.attach(imapidled())
    _idle(d, mail_user)
    first = mail_user.deliver(subject="nobody listens")
    second = mail_user.deliver(subject="still nobody")
    event_recorder.wait_for_uid("a", "INBOX", first)
    event_recorder.wait_for_uid("a", "INBOX", second)
    missing = [x for x in d.lines() if "no notification server" in x]
    assert len(missing) == 1, d.log_tail()

    server = bus.NotificationDaemon(session_bus).start()
    try:
        d.wait_for_log(r"desktop: a notification server appeared")
        third = mail_user.deliver(subject="now you see me")
        event_recorder.wait_for_uid("a", "INBOX", third)
        n = server.wait_for_notifications(1)
        assert [x.body for x in n] == ["now you see me"]
    finally:
        server.close()


def test_server_restart(start, mail_user, notification_daemon, event_recorder):
    d = start(recorder=event_recorder)
    mail_user.deliver(subject="before")
    notification_daemon.wait_for_notifications(1)
    mark = d.mark()
    notification_daemon.stop()
    d.wait_for_log(r"desktop: the notification server left", since=mark)
    uid = mail_user.deliver(subject="while away")
    event_recorder.wait_for_uid("a", "INBOX", uid)
    notification_daemon.restart(capabilities="body")
    d.wait_for_log(r"desktop: a notification server appeared", since=mark)
    mail_user.deliver(subject="after <restart>")
    n = notification_daemon.wait_for_notifications(1)[0]
    # The capabilities were asked again: this server does not read markup.
    assert n.body == "after <restart>"
    assert d.running


def test_no_session_bus_at_all(daemon_config, imapidled, dovecot, mail_user, event_recorder):
    daemon_config.account("a", dovecot, mail_user, sinks=["desktop"], **FAST)
    _exec_recorder(daemon_config, event_recorder)
    d = event_recorder.attach(imapidled(env={"DBUS_SESSION_BUS_ADDRESS": None}))
    _idle(d, mail_user)
    uids = [mail_user.deliver(subject=f"m{i}") for i in range(2)]
    for uid in uids:
        event_recorder.wait_for_uid("a", "INBOX", uid)
    lines = [x for x in d.lines() if re.search(r"desktop: no session bus", x)]
    assert len(lines) == 1, d.log_tail()
    assert d.running


def test_session_bus_goes_away(start, mail_user, notification_daemon, session_bus,
                               event_recorder):
    d = start(recorder=event_recorder)
    mail_user.deliver(subject="before")
    notification_daemon.wait_for_notifications(1)
    notification_daemon.close()
    os.kill(session_bus.pid, 15)
    d.wait_for_log(r"desktop: lost the session bus")
    uid = mail_user.deliver(subject="after")
    event_recorder.wait_for_uid("a", "INBOX", uid)
    assert d.running
    # A closed connection must not leave the loop spinning on it.
    cpu = _cpu_seconds(d.pid)
    time.sleep(1.0)
    assert _cpu_seconds(d.pid) - cpu < 0.2


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _line_time(d, pattern, since=0):
    """The monotonic time at which the daemon logged the first line matching pattern."""
    rx = re.compile(pattern)
    return next(t for t, text in d.timed_lines(since) if rx.search(text))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_session_bus_restarts(start, mail_user, notification_daemon, session_bus,
                              event_recorder, sig):
    """The bus goes under the daemon (restarted, or crashed: SIGKILL leaves its socket behind,
    refusing) and a new one comes up at the same path, as a user's bus does at
    $XDG_RUNTIME_DIR/bus: the notifications resume on it, the loss and the return said once."""
    d = start(recorder=event_recorder,
              env={"DBUS_SESSION_BUS_ADDRESS": session_bus.path_address})
    mail_user.deliver(subject="before")
    notification_daemon.wait_for_notifications(1)
    mark = d.mark()
    session_bus.stop(sig)
    d.wait_for_log(r"desktop: lost the session bus at " + re.escape(session_bus.path_address),
                   since=mark)
    # Meanwhile the other sinks and the mailbox move on; the popup is not shown later.
    uid = mail_user.deliver(subject="while the bus is down")
    event_recorder.wait_for_uid("a", "INBOX", uid)
    assert d.running

    session_bus.start()
    up = time.monotonic()
    notification_daemon.restart()
    # Attempts are at most 1 s apart at first, then [1 s, 4 s], [1 s, 8 s], ...
    d.wait_for_log(r"desktop: reconnected to the session bus at ", since=mark, timeout=20)
    # Whichever came first on the new bus, the daemon or the server, it asks the server.
    notification_daemon.wait_for_call("GetCapabilities")
    mail_user.deliver(subject="after the restart")
    n = notification_daemon.wait_for_notifications(1, timeout=15)
    seen = time.monotonic()
    assert [x.body for x in n] == ["after the restart"]
    lines = d.lines(mark)
    assert len([x for x in lines if "lost the session bus" in x]) == 1, d.log_tail()
    assert len([x for x in lines if "reconnected to the session bus" in x]) == 1, d.log_tail()
    print(f"bus up → reconnected: "
          f"{_line_time(d, 'reconnected to the session bus', mark) - up:.2f} s; "
          f"bus up → Notify of the next mail: {seen - up:.2f} s")


def test_reload_and_stop_while_the_bus_is_down(start, mail_user, notification_daemon,
                                               session_bus, event_recorder):
    """A reload builds a new desktop sink while there is no bus: it says so and retries on
    its own; a shutdown in the middle of the attempts is clean (the fixture checks the
    sanitizers)."""
    d = start(recorder=event_recorder,
              env={"DBUS_SESSION_BUS_ADDRESS": session_bus.path_address})
    mail_user.deliver(subject="before")
    notification_daemon.wait_for_notifications(1)
    session_bus.stop()
    d.wait_for_log(r"desktop: lost the session bus")
    mark = d.mark()
    d.reload()
    d.wait_for_log(r"reloaded ", since=mark)
    d.wait_for_log(r"desktop: no session bus .*no notifications until it appears", since=mark)
    uid = mail_user.deliver(subject="after the reload")
    event_recorder.wait_for_uid("a", "INBOX", uid)

    session_bus.start()
    notification_daemon.restart()
    d.wait_for_log(r"desktop: connected to the session bus at ", since=mark, timeout=20)
    notification_daemon.wait_for_call("GetCapabilities")
    mail_user.deliver(subject="on the new bus")
    assert [x.body for x in notification_daemon.wait_for_notifications(1, timeout=15)] == [
        "on the new bus"]

    session_bus.stop()
    d.wait_for_log(r"desktop: lost the session bus", since=mark)
    assert d.stop() == 0, d.log_tail()
