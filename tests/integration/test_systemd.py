"""The daemon as a systemd service (issue 5): the sd_notify protocol (READY=1, STATUS=,
WATCHDOG=1, RELOADING=1, STOPPING=1), reload on SIGHUP, a polite and bounded shutdown,
credentials, and probing every connection after a resume (logind, mocked on a private system
bus) or a change of the default route (rtnetlink, in a network namespace)."""
import os
import re
import shutil
import subprocess
import time

import pytest

from imapidled_test import daemon, fakeserver, system, util

IDLE_TIMEOUT = 15.0


def notify_fields(sock, key):
    """[(monotonic time, value)] of every sd_notify message carrying key."""
    with sock._cond:
        return [(t, m[key]) for t, m in sock.messages if key in m]


def wait_notify_count(sock, key, value, count, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        got = [v for _, v in notify_fields(sock, key) if v == value]
        if len(got) >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(got)} of {count} sd_notify {key}={value} in {timeout} s: "
                               f"{sock.messages}")
        time.sleep(0.02)


def wait_status(sock, pattern, timeout=10.0):
    """The first STATUS= line matching the regex."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        for _, v in notify_fields(sock, "STATUS"):
            if rx.search(v):
                return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"no STATUS= matching {pattern!r} in {timeout} s: "
                               f"{[v for _, v in notify_fields(sock, 'STATUS')]}")
        time.sleep(0.02)


def stop_and_time(d):
    t0 = time.monotonic()
    code = d.stop(timeout=10)
    return code, time.monotonic() - t0


# -- sd_notify ------------------------------------------------------------------------------

def test_notify_ready_status_watchdog_stopping(imapidled, daemon_config, dovecot, mail_user,
                                               notify_socket):
    daemon_config.account("work", dovecot, mail_user)
    d = imapidled(notify_socket=notify_socket, env={"WATCHDOG_USEC": "1000000"})
    notify_socket.wait_for("READY", "1", timeout=IDLE_TIMEOUT)
    wait_status(notify_socket, r"^1/1 mailboxes idle$", timeout=IDLE_TIMEOUT)
    # sd-event pings well inside WATCHDOG_USEC (it aims at 1/4 to 1/2 of it, and an idle
    # loop wakes up for it), so the service manager never sees a full second pass.
    t0 = time.monotonic()
    wait_notify_count(notify_socket, "WATCHDOG", "1", 4, timeout=4)
    pings = [t for t, _ in notify_fields(notify_socket, "WATCHDOG")]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert gaps and max(gaps) < 0.9, gaps
    print(f"watchdog: {len(pings)} pings, largest gap {max(gaps) * 1000:.0f} ms "
          f"(WATCHDOG_USEC=1 s), waited {time.monotonic() - t0:.2f} s")

    mail_user.deliver(subject="status")
    d.wait_for_log(r"work/INBOX: new mail, UID 1,", timeout=5)
    wait_status(notify_socket, r"^1/1 mailboxes idle · last mail \d\d:\d\d$", timeout=5)

    code, took = stop_and_time(d)
    assert code == 0, d.log_tail()
    assert took < 3.0
    notify_socket.wait_for("STOPPING", "1", timeout=2)


def test_watchdog_pid_of_another_process_is_ignored(imapidled, daemon_config, dovecot,
                                                    mail_user, notify_socket):
    """WATCHDOG_PID names the process the service manager watches: not us, no pings."""
    daemon_config.account("work", dovecot, mail_user)
    d = imapidled(notify_socket=notify_socket,
                  env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    notify_socket.wait_for("READY", "1", timeout=IDLE_TIMEOUT)
    time.sleep(0.5)
    assert notify_fields(notify_socket, "WATCHDOG") == []
    assert d.stop() == 0


def test_status_names_the_failing_account(imapidled, daemon_config, dovecot, notify_socket):
    good, bad = dovecot.new_user(), dovecot.new_user()
    daemon_config.account("good", dovecot, good)
    daemon_config.account("bad", dovecot, bad, password="wrong password")
    d = imapidled(notify_socket=notify_socket)
    line = wait_status(notify_socket, r"reconnecting", timeout=20)
    d.wait_for_log(r"bad/INBOX: login as \S+ rejected", timeout=5)
    final = wait_status(notify_socket, r"^1/2 mailboxes idle · 1 account reconnecting "
                                       r"\(auth failed\)$", timeout=10)
    assert "auth failed" in line or final
    assert d.stop() == 0


def test_status_is_rate_limited(imapidled, daemon_config, dovecot, mail_user, notify_socket):
    """Twenty mailboxes reaching IDLE one after another make about one STATUS= a second,
    and the last one tells the truth."""
    names = [f"box{i:02d}" for i in range(20)]
    for n in names:
        dovecot.create_mailbox(mail_user.name, n)
    daemon_config.account("work", dovecot, mail_user, mailboxes=["INBOX", *names])
    d = imapidled(notify_socket=notify_socket)
    notify_socket.wait_for("READY", "1", timeout=IDLE_TIMEOUT)
    t_ready = notify_fields(notify_socket, "READY")[0][0]
    d.wait_for_log(r"all 21 mailboxes idle$", timeout=30)
    t_idle = time.monotonic()
    wait_status(notify_socket, r"^21/21 mailboxes idle$", timeout=3)
    statuses = [(t, v) for t, v in notify_fields(notify_socket, "STATUS") if t >= t_ready]
    span = t_idle - t_ready
    idle_lines = len(re.findall(r"work/\S+: idle$", d.log_text(), re.M))
    print(f"status: {len(statuses)} STATUS= lines for {idle_lines} watches going idle over "
          f"{span:.2f} s")
    assert len(statuses) <= span + 3, statuses
    assert statuses[-1][1] == "21/21 mailboxes idle"
    assert d.stop() == 0


# -- reload ---------------------------------------------------------------------------------

def two_accounts(imapidled, daemon_config, dovecot, notify_socket):
    a, b = dovecot.new_user(), dovecot.new_user()
    daemon_config.account("a", dovecot, a)
    daemon_config.account("b", dovecot, b)
    d = imapidled(notify_socket=notify_socket)
    d.wait_for_log(r"all 2 mailboxes idle$", timeout=IDLE_TIMEOUT)
    dovecot.wait_for_idle(a.name)
    dovecot.wait_for_idle(b.name)
    return d, a, b


def test_reload_restarts_only_the_changed_account(imapidled, daemon_config, dovecot,
                                                  notify_socket):
    d, a, b = two_accounts(imapidled, daemon_config, dovecot, notify_socket)
    assert (a.login_count(), b.login_count()) == (1, 1)
    mark = d.mark()
    daemon_config.sections["account b"]["idle_refresh"] = "9m"
    daemon_config.write()
    d.reload()
    d.wait_for_log(r"reloaded \S+: 1 account kept, 1 restarted, 0 added, 0 removed$",
                   since=mark)
    d.wait_for_log(r"b/INBOX: idle$", since=mark, timeout=IDLE_TIMEOUT)
    wait_notify_count(notify_socket, "RELOADING", "1", 1)
    wait_notify_count(notify_socket, "READY", "1", 2)
    dovecot.wait_for_idle(b.name)
    assert a.login_count() == 1, "the unchanged account reconnected"
    assert b.login_count() == 2
    assert "a/INBOX: idle" not in "\n".join(d.lines(mark))
    # The kept account still reports mail, through the rebuilt sinks.
    a.deliver(subject="after reload")
    d.wait_for_log(r"a/INBOX: new mail, UID 1, from Alice Example: after reload$",
                   since=mark, timeout=5)
    code, took = stop_and_time(d)
    assert code == 0 and took < 3.0


def test_reload_with_a_broken_config_keeps_the_old_one(imapidled, daemon_config, dovecot,
                                                       mail_user, notify_socket):
    daemon_config.account("work", dovecot, mail_user)
    d = imapidled(notify_socket=notify_socket)
    d.wait_for_log(r"all 1 mailbox idle$", timeout=IDLE_TIMEOUT)
    good = open(daemon_config.path).read()
    with open(daemon_config.path, "a") as f:
        f.write("\n[account broken]\nport = 99999\n")
    mark = d.mark()
    d.reload()
    d.wait_for_log(r"imapidled\.conf:\d+: .*port", since=mark)
    d.wait_for_log(r"reload failed; keeping the running configuration$", since=mark)
    wait_notify_count(notify_socket, "RELOADING", "1", 1)
    wait_notify_count(notify_socket, "READY", "1", 2)
    reloading = [t for t, _ in notify_fields(notify_socket, "RELOADING")][0]
    ready_again = [t for t, _ in notify_fields(notify_socket, "READY")][1]
    assert reloading <= ready_again
    assert d.running
    mail_user.wait_for_idle(timeout=2)
    assert mail_user.login_count() == 1
    mail_user.deliver(subject="still watching")
    d.wait_for_log(r"work/INBOX: new mail, UID 1, from Alice Example: still watching$",
                   since=mark, timeout=5)
    # Fixed again: a second reload goes through and keeps the connection.
    with open(daemon_config.path, "w") as f:
        f.write(good)
    d.reload()
    d.wait_for_log(r"reloaded \S+: 1 account kept, 0 restarted, 0 added, 0 removed$",
                   since=mark)
    assert mail_user.login_count() == 1
    assert d.stop() == 0


def test_reload_adds_and_removes_accounts(imapidled, daemon_config, dovecot, notify_socket):
    a, b = dovecot.new_user(), dovecot.new_user()
    daemon_config.account("a", dovecot, a)
    d = imapidled(notify_socket=notify_socket)
    d.wait_for_log(r"all 1 mailbox idle$", timeout=IDLE_TIMEOUT)
    dovecot.wait_for_idle(a.name)
    mark = d.mark()
    del daemon_config.sections["account a"]
    daemon_config.account("b", dovecot, b)
    daemon_config.write()
    d.reload()
    d.wait_for_log(r"a: removed, logging out$", since=mark)
    d.wait_for_log(r"reloaded \S+: 0 accounts kept, 0 restarted, 1 added, 1 removed$",
                   since=mark)
    d.wait_for_log(r"b/INBOX: idle$", since=mark, timeout=IDLE_TIMEOUT)
    dovecot.wait_for_idle(b.name)
    # a said LOGOUT, and the server saw it (not a dropped connection).
    dovecot.wait_for_log(rf"imap\({re.escape(a.name)}\).*Logged out", timeout=5)
    deadline = time.monotonic() + 5
    while dovecot.imap_sessions(a.name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dovecot.imap_sessions(a.name) == []
    wait_status(notify_socket, r"^1/1 mailboxes idle$")
    assert d.stop() == 0


# -- shutdown -------------------------------------------------------------------------------

class SwallowLogout(fakeserver.Session):
    """Never answers LOGOUT (nor closes): only the daemon's deadline ends the wait."""

    def cmd_LOGOUT(self, tag, args):
        while True:
            self.readline()


def test_sigterm_exits_in_time_when_logout_is_never_answered(imapidled, daemon_config,
                                                             fake_imap, notify_socket):
    srv = fake_imap(SwallowLogout)
    srv.add_user("me", "secret")
    daemon_config.account("x", srv, "me", tls="none", ca_file=None, password_via="value")
    d = imapidled(notify_socket=notify_socket)
    d.wait_for_log(r"x/INBOX: idle$", timeout=IDLE_TIMEOUT)
    code, took = stop_and_time(d)
    print(f"shutdown: exit {code} after {took:.2f} s with a server that swallows LOGOUT")
    assert code == 0, d.log_tail()
    assert took < 3.0, f"SIGTERM took {took:.2f} s"
    assert "LOGOUT" in srv.verbs(), srv.verbs()
    assert "did not finish logging out in time" in d.log_text()
    notify_socket.wait_for("STOPPING", "1", timeout=1)


def test_sigterm_logs_out_politely(imapidled, daemon_config, dovecot, mail_user):
    daemon_config.account("work", dovecot, mail_user)
    d = imapidled()
    d.wait_for_log(r"all 1 mailbox idle$", timeout=IDLE_TIMEOUT)
    code, took = stop_and_time(d)
    assert code == 0 and took < 1.5, (code, took)
    dovecot.wait_for_log(rf"imap\({re.escape(mail_user.name)}\).*Logged out", timeout=5)
    assert "did not finish logging out" not in d.log_text()


# -- credentials ----------------------------------------------------------------------------

def test_password_from_credentials_directory(imapidled, daemon_config, dovecot, mail_user,
                                             tmp_path):
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    daemon.write_secret(str(creds / "work-password"), mail_user.password)
    daemon_config.account("work", dovecot, mail_user, password_via=None,
                          password_credential="work-password")
    d = imapidled(env={"CREDENTIALS_DIRECTORY": str(creds)})
    d.wait_for_log(r"all 1 mailbox idle$", timeout=IDLE_TIMEOUT)
    mail_user.wait_for_idle()
    assert mail_user.password not in d.log_text()
    assert d.stop() == 0


def test_missing_credential_is_a_config_error(imapidled, daemon_config, dovecot, mail_user,
                                              tmp_path):
    daemon_config.account("work", dovecot, mail_user, password_via=None,
                          password_credential="work-password")
    d = imapidled(env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert d.wait(timeout=10) == 78
    assert "work-password" in d.log_text()


# -- suspend and resume ---------------------------------------------------------------------

@pytest.fixture
def system_bus():
    b = system.SystemBus()
    try:
        yield b.start()
    finally:
        b.close()


@pytest.fixture
def logind(system_bus):
    mock = system.Logind(system_bus)
    try:
        yield mock.start()
    finally:
        mock.close()


@pytest.fixture
def proxy():
    made = []

    def make(host, port):
        p = system.TcpProxy(host, port).start()
        made.append(p)
        return p

    try:
        yield make
    finally:
        for p in made:
            p.close()


def test_resume_recovers_a_silently_cut_connection(imapidled, daemon_config, dovecot,
                                                   mail_user, system_bus, logind, proxy):
    p = proxy(*dovecot.endpoint("implicit"))
    daemon_config.account("work", dovecot, mail_user, host="127.0.0.1", port=p.port)
    d = imapidled(env=system_bus.env())
    d.wait_for_log(r"system bus: listening for suspend and resume$", timeout=10)
    d.wait_for_log(r"work/INBOX: idle$", timeout=IDLE_TIMEOUT)
    mail_user.wait_for_idle()
    assert p.cut() == 1

    mark = d.mark()
    logind.emit_prepare_for_sleep(True)
    d.wait_for_log(r"system is going to sleep$", since=mark)
    t0 = time.monotonic()
    logind.emit_prepare_for_sleep(False)
    d.wait_for_log(r"system resumed: checking every connection$", since=mark)
    d.wait_for_log(r"work/INBOX: back in IDLE$", since=mark, timeout=15)
    took = time.monotonic() - t0
    print(f"resume: signal to back in IDLE in {took:.2f} s (probe timeout 5 s)")
    assert p.connections == 2
    assert took < 7.0, took
    # Straight back: no backoff between the dead probe and the new connection.
    log = "\n".join(d.lines(mark))
    assert re.search(r"work/INBOX: no answer from server .*: the link is dead; "
                     r"reconnecting now$", log, re.M), log
    mail_user.deliver(subject="after resume")
    d.wait_for_log(r"work/INBOX: new mail, UID 1, from Alice Example: after resume$",
                   since=mark, timeout=5)
    assert d.stop() == 0


def test_resume_leaves_a_live_connection_alone(imapidled, daemon_config, dovecot, mail_user,
                                               system_bus, logind):
    daemon_config.account("work", dovecot, mail_user)
    d = imapidled(env=system_bus.env())
    d.wait_for_log(r"system bus: listening for suspend and resume$", timeout=10)
    d.wait_for_log(r"all 1 mailbox idle$", timeout=IDLE_TIMEOUT)
    mark = d.mark()
    logind.emit_prepare_for_sleep(False)
    d.wait_for_log(r"system resumed", since=mark)
    time.sleep(1.0)
    mail_user.wait_for_idle(timeout=5)
    assert mail_user.login_count() == 1
    assert "reconnecting" not in "\n".join(d.lines(mark))
    assert d.stop() == 0


def test_without_a_system_bus_says_so_once(imapidled, daemon_config, dovecot, mail_user,
                                           tmp_path):
    daemon_config.account("work", dovecot, mail_user)
    d = imapidled(env={"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/no-such-bus"})
    d.wait_for_log(r"all 1 mailbox idle$", timeout=IDLE_TIMEOUT)
    assert len(re.findall(r"no system bus", d.log_text())) == 1, d.log_text()
    assert d.stop() == 0


# -- network changes ------------------------------------------------------------------------

def _can_make_netns():
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    name = f"imapidled-probe-{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return ok


class NetNs:
    """A network namespace joined to this one by a veth pair: 10.W.X.1 here, .2 inside."""

    name = "netns"

    def __init__(self):
        n = os.getpid() % 200 + 20
        self.ns = f"imapidled-test-{os.getpid()}"
        self.host_if, self.ns_if = f"imv{os.getpid() % 100000}h", f"imv{os.getpid() % 100000}n"
        self.host_ip, self.ns_ip = f"10.213.{n}.1", f"10.213.{n}.2"

    def ip(self, *args, inside=False, check=True):
        argv = ["ip", *(["-n", self.ns] if inside else []), *args]
        return subprocess.run(argv, capture_output=True, text=True, check=check)

    def start(self):
        self.ip("netns", "add", self.ns)
        util.register(self)
        self.ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self.ip("link", "set", self.ns_if, "netns", self.ns)
        self.ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
        self.ip("link", "set", self.host_if, "up")
        self.ip("addr", "add", f"{self.ns_ip}/24", "dev", self.ns_if, inside=True)
        self.ip("link", "set", self.ns_if, "up", inside=True)
        self.ip("link", "set", "lo", "up", inside=True)
        return self

    def wrap(self, argv):
        return ["ip", "netns", "exec", self.ns, *argv]

    def close(self):
        util.unregister(self)
        self.ip("link", "del", self.host_if, check=False)
        self.ip("netns", "del", self.ns, check=False)

    def failure_report(self):
        return self.ip("route", inside=True, check=False).stdout


@pytest.mark.skipif(not _can_make_netns(), reason="needs root and network namespaces")
def test_default_route_change_probes_every_connection(daemon_config, dovecot, mail_user,
                                                      tmp_path):
    ns = NetNs().start()
    p = d = None
    try:
        # The daemon lives in the namespace and reaches Dovecot through the veth pair and a
        # proxy on its host side (plain IMAP: the test certificate names only loopback).
        p = system.TcpProxy(*dovecot.endpoint("none"), listen_host=ns.host_ip).start()
        daemon_config.account("work", dovecot, mail_user, tls="none", ca_file=None,
                              host=ns.host_ip, port=p.port)
        workdir = tmp_path / "imapidled"
        workdir.mkdir(exist_ok=True)
        d = daemon.Daemon(daemon_config.write(), workdir, env=daemon.daemon_env(workdir))
        d.argv = ns.wrap(d.argv)
        d.start()
        d.wait_for_log(r"work/INBOX: idle$", timeout=IDLE_TIMEOUT)
        mail_user.wait_for_idle()
        assert p.cut() == 1
        mark = d.mark()
        t0 = time.monotonic()
        ns.ip("route", "add", "default", "via", ns.host_ip, inside=True)
        d.wait_for_log(r"default route changed: checking every connection$", since=mark,
                       timeout=5)
        t_probe = time.monotonic() - t0
        d.wait_for_log(r"work/INBOX: back in IDLE$", since=mark, timeout=15)
        took = time.monotonic() - t0
        print(f"route: change noticed after {t_probe:.2f} s (debounce 1 s), back in IDLE "
              f"after {took:.2f} s")
        assert 0.9 <= t_probe < 3.0
        assert took < 9.0
        assert p.connections == 2
        # A route that is not a default one is no reason to probe.
        mark = d.mark()
        ns.ip("route", "add", "10.214.0.0/16", "via", ns.host_ip, inside=True)
        time.sleep(1.5)
        assert "default route changed" not in "\n".join(d.lines(mark))
        assert d.stop() == 0
        assert not d.sanitizer_reports(), d.sanitizer_reports()
    finally:
        if d is not None:
            d.close()
        if p is not None:
            p.close()
        ns.close()


def test_reload_lets_a_running_command_finish(imapidled, daemon_config, dovecot, mail_user,
                                              tmp_path):
    """Sinks are rebuilt on reload, but the old ones live until their work is done: a command
    running at the time (mbsync, say) is not cut off."""
    mark_file = tmp_path / "finished"
    daemon_config.account("work", dovecot, mail_user, sinks=["exec:sync"])
    daemon_config.exec("sync", f'/bin/sh -c "echo started; sleep 2; echo finished; '
                               f'touch {mark_file}"')
    d = imapidled()
    d.wait_for_log(r"all 1 mailbox idle$", timeout=IDLE_TIMEOUT)
    mail_user.deliver(subject="sync me")
    d.wait_for_log(r"exec sync: .*started$", timeout=5)
    mark = d.mark()
    # The account changes too, so nothing of the old configuration is borrowed any more
    # once it has logged out: only the running command keeps the old sinks.
    daemon_config.sections["exec sync"]["timeout"] = "4m"
    daemon_config.sections["account work"]["idle_refresh"] = "9m"
    daemon_config.write()
    d.reload()
    d.wait_for_log(r"reloaded \S+: 0 accounts kept, 1 restarted, 0 added, 0 removed$",
                   since=mark)
    d.wait_for_log(r"exec sync: .*finished$", since=mark, timeout=5)
    deadline = time.monotonic() + 2
    while not mark_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert mark_file.exists()
    assert "killed by signal" not in d.log_text()
    # The new sink runs the next one.
    mail_user.deliver(subject="again")
    d.wait_for_log(r"exec sync: .*started$", since=mark, timeout=5)
    assert d.stop() == 0
