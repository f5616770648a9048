"""Fixtures for the integration tests: real Dovecot, D-Bus and HTTP parts on loopback.

Session-wide:   pki, dovecot
Per test:       mail_user, dovecot_factory, session_bus, notification_daemon, http_receiver,
                notify_socket, daemon_config, imapidled, run_check

Every process a fixture starts is stopped by PID (or process group) when the fixture ends,
whatever the test's outcome; an interrupted run is cleaned up at exit. When a test fails, the
logs of everything still running are attached to its report.
"""
import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from imapidled_test import bus, certs, daemon, dovecot as dovecot_mod, util, webhook  # noqa: E402


def pytest_configure(config):
    # A CI timeout sends SIGTERM: make it unwind like Ctrl-C, so that fixtures still stop
    # every process they started.
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    config.addinivalue_line(
        "markers", "notification_caps(caps): capabilities of the notification_daemon fixture, "
        "a space-separated string (default: " + bus.DEFAULT_CAPABILITIES + ")")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for part in util.live_parts():
            text = part.failure_report()
            if text:
                rep.sections.append((part.name, text))


# -- Dovecot ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def pki():
    """TestPKI: .ca_file, .wrong_ca_file, .server_cert, .server_key, .fingerprint(),
    .client_context(), .issue(stem, cn, sans)."""
    d = util.make_tmpdir("imapidled-pki-")
    try:
        yield certs.TestPKI(d)
    finally:
        util.remove_tree(d)


@pytest.fixture(scope="session")
def dovecot(pki):
    """The shared Dovecot. Give each test its own user (mail_user); a test that needs other
    settings, or stops the server, should use dovecot_factory instead."""
    d = dovecot_mod.Dovecot(pki)
    try:
        d.start()
        yield d
    finally:
        d.close()


@pytest.fixture
def mail_user(dovecot):
    """A fresh user (empty INBOX, own login history) on the shared Dovecot: a MailUser with
    .name, .password, .deliver(), .imap_client(), .fetch_flags(), .status(), .wait_for_idle(),
    .login_count()."""
    if not dovecot.running:  # an earlier test stopped it and failed before starting it again
        dovecot.start()
    try:
        yield dovecot.new_user()
    finally:
        dovecot.close_clients()


@pytest.fixture
def dovecot_factory(pki):
    """make(**kw) -> a started private Dovecot (kw: disable_idle, imap_capability,
    extra_conf, mail_user, auth_penalty, oauth2), stopped at the end of the test."""
    made = []

    def make(**kw):
        d = dovecot_mod.Dovecot(pki, **kw)
        made.append(d)
        return d.start()

    try:
        yield make
    finally:
        for d in made:
            d.close()


# -- D-Bus -----------------------------------------------------------------------------------

@pytest.fixture
def session_bus():
    """A private dbus-daemon: .address, .env(), .connection(), .pid. When a test uses it, the
    imapidled fixture puts it in the daemon's environment."""
    b = bus.SessionBus()
    try:
        yield b.start()
    finally:
        b.close()


@pytest.fixture
def notification_daemon(request, session_bus):
    """A mock org.freedesktop.Notifications: .notifications(), .wait_for_notifications(),
    .emit_action_invoked(), .set_capabilities(), .stop(), .restart()."""
    marker = request.node.get_closest_marker("notification_caps")
    caps = marker.args[0] if marker else bus.DEFAULT_CAPABILITIES
    n = bus.NotificationDaemon(session_bus, caps)
    try:
        yield n.start()
    finally:
        n.close()


# -- HTTP ------------------------------------------------------------------------------------

@pytest.fixture
def http_receiver():
    """A webhook receiver: .url(), .respond(), .set_default(), .requests, .wait_for(),
    .down(), .up()."""
    r = webhook.HttpReceiver()
    try:
        yield r.start()
    finally:
        r.close()


# -- the daemon ------------------------------------------------------------------------------

@pytest.fixture
def notify_socket():
    s = daemon.NotifySocket()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def daemon_config(tmp_path):
    """A DaemonConfig writing to <tmp>/imapidled/imapidled.conf, state under it."""
    return daemon.DaemonConfig(tmp_path / "imapidled")


@pytest.fixture
def imapidled(request, tmp_path):
    """start(config=None, args=(), env=None, bus=None, notify_socket=None, verbose=True)
    -> a running Daemon. config: a DaemonConfig (written first), a path, or None for the
    daemon_config fixture's. The session bus is used when the test requested session_bus.
    At teardown every daemon is stopped and the test fails if a sanitizer reported."""
    started = []
    workdir = tmp_path / "imapidled"
    workdir.mkdir(exist_ok=True)

    def start(config=None, args=(), env=None, bus=None, notify_socket=None, verbose=True):
        if config is None:
            config = request.getfixturevalue("daemon_config")
        path = config.write() if isinstance(config, daemon.DaemonConfig) else str(config)
        if bus is None and "session_bus" in request.fixturenames:
            bus = request.getfixturevalue("session_bus")
        full_env = daemon.daemon_env(workdir, bus=bus, notify_socket=notify_socket, extra=env)
        d = daemon.Daemon(path, workdir, args=args, env=full_env, verbose=verbose)
        started.append(d)
        return d.start()

    try:
        yield start
    finally:
        problems = []
        for d in started:
            d.close()
            reports = d.sanitizer_reports()
            if reports:
                problems.append(f"imapidled (pid {d.pid}) tripped a sanitizer:\n" +
                                "\n".join(reports[:20]) + f"\n(full log: {d.log_path})")
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def run_check(tmp_path, request):
    """run(config, connect=True, env=None, args=()) -> (exit code, stdout, stderr) of
    `imapidled check --config F [--connect]`; config: a DaemonConfig or a path."""
    workdir = tmp_path / "imapidled"
    workdir.mkdir(exist_ok=True)

    def run(config, connect=True, env=None, args=(), timeout=60):
        path = config.write() if isinstance(config, daemon.DaemonConfig) else str(config)
        bus_ = (request.getfixturevalue("session_bus")
                if "session_bus" in request.fixturenames else None)
        full_env = daemon.daemon_env(workdir, bus=bus_, extra=env)
        return daemon.run_check(path, connect=connect, env=full_env, args=args,
                                timeout=timeout)

    return run


# -- events ----------------------------------------------------------------------------------

@pytest.fixture
def event_recorder():
    """An events.EventRecorder (in a short private temp dir): .configure(cfg) routes every
    account to it, .attach(daemon), .events(), .wait_for(n), .wait_for_uid(), .assert_once(),
    .sync()."""
    from imapidled_test import events
    rec = events.EventRecorder()
    try:
        yield rec
    finally:
        rec.close()


@pytest.fixture
def fake_imap(pki):
    """make(session, then=None, tls=False) -> a started fakeserver.FakeImapServer on
    127.0.0.1 (session: a fakeserver.Session subclass for the first connection, then: for
    later ones, default the same); every server is closed at the end of the test."""
    from imapidled_test import fakeserver
    made = []

    def make(session, then=None, tls=False):
        s = fakeserver.FakeImapServer(session, then=then, tls=tls, pki=pki)
        made.append(s)
        return s.start()

    try:
        yield make
    finally:
        for s in made:
            s.close()
