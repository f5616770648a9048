"""The harness itself: every part it starts is real, reachable, observable and cleaned up.
These tests need no imapidled binary (the daemon runner is exercised with a stand-in)."""
import configparser
import hashlib
import http.client
import imaplib
import os
import select
import signal
import socket
import ssl
import stat
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import dbus
import pytest

from imapidled_test import bus, daemon, dovecot as dovecot_mod, util, webhook


# -- Dovecot ---------------------------------------------------------------------------------

def test_dovecot_starts_quickly_on_loopback(dovecot):
    assert dovecot.running
    assert dovecot.start_seconds < 2.0, f"start-up took {dovecot.start_seconds:.3f} s"
    ports = [p for _, p in dovecot.listeners()]
    assert len(set(ports)) == 3
    for host, _ in dovecot.listeners():
        assert host.startswith("127.")
    assert "starting up for imap" in dovecot.log_text()


def test_implicit_tls_verifies_against_the_test_ca(dovecot, mail_user, pki):
    ctx = ssl.create_default_context(cafile=pki.ca_file)
    for host in ("localhost", "127.0.0.1"):  # DNS SAN and IP SAN
        c = imaplib.IMAP4_SSL(host, dovecot.imaps_port, ssl_context=ctx, timeout=10)
        try:
            assert c.login(mail_user.name, mail_user.password)[0] == "OK"
            der = c.sock.getpeercert(binary_form=True)
            digest = hashlib.sha256(der).hexdigest().upper()
            assert pki.fingerprint() == "sha256:" + ":".join(
                digest[i:i + 2] for i in range(0, 64, 2))
        finally:
            c.logout()


def test_wrong_ca_and_wrong_name_fail_verification(dovecot, pki):
    wrong = ssl.create_default_context(cafile=pki.wrong_ca_file)
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL("localhost", dovecot.imaps_port, ssl_context=wrong, timeout=10)
    right = ssl.create_default_context(cafile=pki.ca_file)
    with socket.create_connection((dovecot.host, dovecot.imaps_port), timeout=10) as s:
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            right.wrap_socket(s, server_hostname="imap.example.com")


def test_starttls_port_demands_starttls_before_login(dovecot, mail_user, pki):
    c = imaplib.IMAP4(dovecot.starttls_host, dovecot.starttls_port, timeout=10)
    try:
        assert "STARTTLS" in c.capabilities
        if dovecot.strict_starttls:
            assert "LOGINDISABLED" in c.capabilities
            with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
                c.login(mail_user.name, mail_user.password)
        c.starttls(ssl_context=pki.client_context())
        assert "LOGINDISABLED" not in c.capabilities
        assert c.login(mail_user.name, mail_user.password)[0] == "OK"
    finally:
        c.logout()


def test_plain_port_allows_plaintext_login(dovecot, mail_user):
    c = imaplib.IMAP4(dovecot.host, dovecot.plain_port, timeout=10)
    try:
        assert "LOGINDISABLED" not in c.capabilities
        assert "AUTH=PLAIN" in c.capabilities
        assert c.login(mail_user.name, mail_user.password)[0] == "OK"
    finally:
        c.logout()


def test_bad_password_is_refused(dovecot, mail_user):
    c = imaplib.IMAP4(dovecot.host, dovecot.plain_port, timeout=10)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            c.login(mail_user.name, "wrong")
    finally:
        c.shutdown()


def test_deliver_then_fetch(mail_user):
    uid = mail_user.deliver(subject="Grüße aus Köln", from_="Jörg <joerg@example.com>",
                            flags=("\\Flagged",))
    assert uid == 1
    assert mail_user.deliver(raw=b"Subject: raw\r\nFrom: a@b\r\n\r\nraw body\r\n") == 2
    c = mail_user.imap_client()
    assert c.select("INBOX", readonly=True) == ("OK", [b"2"])
    typ, data = c.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
    assert typ == "OK"
    headers = [part[1] for part in data if isinstance(part, tuple)]
    assert b"=?utf-8?" in headers[0].lower()  # RFC 2047, as a real sender would
    assert b"Subject: raw" in headers[1]
    assert "\\Flagged" in mail_user.fetch_flags("INBOX", uid)
    assert "\\Seen" not in mail_user.fetch_flags("INBOX", uid)
    st = mail_user.status()
    assert (st["MESSAGES"], st["UIDNEXT"], st["UNSEEN"]) == (2, 3, 2)


def test_deliver_to_another_mailbox(dovecot, mail_user):
    dovecot.create_mailbox(mail_user.name, "Lists/urgent")
    assert mail_user.deliver("Lists/urgent", subject="x") == 1
    assert mail_user.status("Lists/urgent")["MESSAGES"] == 1
    assert mail_user.status("INBOX")["MESSAGES"] == 0


def _idle(c):
    tag = c._new_tag()
    c.send(tag + b" IDLE\r\n")
    assert c.readline().startswith(b"+")
    return tag


def test_wait_for_idle_sees_an_idling_client(dovecot, mail_user):
    c = mail_user.imap_client(harness=False)  # connects like the daemon will
    c.select("INBOX")
    assert dovecot.idle_count(mail_user.name) == 0
    with pytest.raises(TimeoutError):
        mail_user.wait_for_idle(timeout=0.1)
    tag = _idle(c)
    pids = mail_user.wait_for_idle(timeout=5)
    assert len(pids) == 1 and util.pid_alive(pids[0])

    # How long Dovecot takes to tell an idler about new mail (a floor for later tests).
    t0 = time.monotonic()
    mail_user.deliver(subject="wake up")
    c.sock.settimeout(10)
    assert c.readline() == b"* 1 EXISTS\r\n"
    delay = time.monotonic() - t0
    print(f"Dovecot IDLE notification delay: {delay:.3f} s")
    assert delay < 5
    c.send(b"DONE\r\n")
    while not (line := c.readline()).startswith(tag):
        pass
    assert b"OK" in line


def test_harness_sessions_are_not_counted(dovecot, mail_user):
    mail_user.deliver()
    mail_user.fetch_flags("INBOX", 1)
    c = mail_user.imap_client()  # harness=True: from the harness address
    c.select("INBOX")
    _idle(c)
    with pytest.raises(TimeoutError):
        mail_user.wait_for_idle(timeout=0.2)
    assert mail_user.wait_for_idle(timeout=5, harness=True)
    assert mail_user.login_count() == 0
    mail_user.imap_client(harness=False)
    mail_user.imap_client(kind="starttls", harness=False)
    dovecot.wait_for_log(rf"Login: user=<{mail_user.name}>.*lip=127\.0\.0\.2", timeout=5)
    assert mail_user.login_count() == 2


def test_uidvalidity_changes(dovecot, mail_user):
    mail_user.deliver()
    old = dovecot.uidvalidity(mail_user.name, "INBOX")
    new = dovecot.recreate_mailbox(mail_user.name, "INBOX")
    assert new != old
    assert mail_user.status()["MESSAGES"] == 0
    dovecot.set_uidvalidity(mail_user.name, "INBOX", new + 100)
    assert dovecot.uidvalidity(mail_user.name) == new + 100

    dovecot.create_mailbox(mail_user.name, "Archiv/Entwürfe")  # modified UTF-7 on the wire
    assert mail_user.deliver("Archiv/Entwürfe") == 1
    old = dovecot.uidvalidity(mail_user.name, "Archiv/Entwürfe")
    assert dovecot.recreate_mailbox(mail_user.name, "Archiv/Entwürfe") != old


def test_restart_keeps_ports_and_mail(dovecot_factory):
    d = dovecot_factory()
    user = d.new_user()
    uid = user.deliver(subject="before restart")
    listeners = d.listeners()
    c = user.imap_client(harness=False)
    c.select("INBOX")
    _idle(c)
    user.wait_for_idle()
    old_pids = d.processes()

    t0 = time.monotonic()
    d.stop()  # SIGKILL to the process group: the client sees the connection drop
    assert time.monotonic() - t0 < 2
    assert util.wait_gone(old_pids, 2) == []
    c.sock.settimeout(5)
    assert c.readline() == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((d.host, d.imaps_port), timeout=2)

    d.start()
    assert d.listeners() == listeners
    assert user.status()["MESSAGES"] == 1
    assert user.fetch_flags("INBOX", uid) is not None

    c = user.imap_client(harness=False)
    c.select("INBOX")
    _idle(c)
    user.wait_for_idle()
    d.stop(graceful=True)  # SIGTERM: the idler is told
    c.sock.settimeout(5)
    assert c.readline().startswith(b"* BYE")
    d.start()
    assert d.listeners() == listeners


def test_disable_idle_hides_the_capability(dovecot_factory):
    d = dovecot_factory(disable_idle=True)
    user = d.new_user()
    c = user.imap_client(login=False)
    assert "IDLE" not in c.capabilities
    c.login(user.name, user.password)
    typ, data = c.capability()
    caps = b" ".join(data).split()
    assert b"IDLE" not in caps and b"UIDPLUS" in caps
    # Dovecot quirk: the command still works when it is not advertised.
    c.select("INBOX")
    tag = _idle(c)
    c.send(b"DONE\r\n")
    assert c.readline().startswith(tag + b" OK")


# -- D-Bus -----------------------------------------------------------------------------------

def test_session_bus_is_private(session_bus):
    assert session_bus.address.startswith("unix:path=" + session_bus.dir)
    assert session_bus.env() == {"DBUS_SESSION_BUS_ADDRESS": session_bus.address}
    assert not session_bus.name_has_owner(bus.NOTIFY_NAME)


def test_notification_daemon_records_notify(notification_daemon, session_bus):
    n = notification_daemon
    first = n.notify("Alice Example", "Lunch?", app_name="imapidled", icon="mail-unread",
                     actions=["default", "Open", "mark-read", "Mark as read"],
                     hints={"category": "email.arrived", "urgency": dbus.Byte(1),
                            "desktop-entry": "imapidled"},
                     expire_timeout=5000)
    again = n.notify("3 new messages", replaces_id=first)
    other = n.notify("Bob")
    assert (first, again, other) == (1, 1, 2)

    got = n.wait_for_notifications(3, timeout=5)
    a = got[0]
    assert (a.id, a.app_name, a.replaces_id, a.icon, a.summary, a.body) == (
        1, "imapidled", 0, "mail-unread", "Alice Example", "Lunch?")
    assert a.action_map == {"default": "Open", "mark-read": "Mark as read"}
    assert a.hints == {"category": "email.arrived", "urgency": 1, "desktop-entry": "imapidled"}
    assert a.expire_timeout == 5000
    assert (got[1].id, got[1].replaces_id, got[2].id) == (1, 1, 2)
    mark = n.mark()
    n.notify("later")
    assert [x.summary for x in n.wait_for_notifications(1, since=mark)] == ["later"]


@pytest.mark.notification_caps("body")
def test_notification_capabilities(notification_daemon, session_bus):
    iface = dbus.Interface(session_bus.connection().get_object(bus.NOTIFY_NAME, bus.NOTIFY_PATH),
                           bus.NOTIFY_IFACE)
    assert bus.to_py(iface.GetCapabilities()) == ["body"]
    notification_daemon.set_capabilities("actions body persistence")
    assert bus.to_py(iface.GetCapabilities()) == ["actions", "body", "persistence"]


def test_notification_signals_reach_listeners(notification_daemon, session_bus):
    mon = subprocess.Popen(["dbus-monitor", "--address", session_bus.address,
                            f"type='signal',interface='{bus.NOTIFY_IFACE}'"],
                           stdout=subprocess.PIPE, start_new_session=True)
    try:
        _read_until(mon, "member=NameLost")  # it is a monitor now
        notification_daemon.emit_action_invoked(7, "mark-read")
        notification_daemon.emit_activation_token(7, "token-123")
        notification_daemon.emit_closed(7, 2)
        text = _read_until(mon, "uint32 2")
    finally:
        util.stop_popen(mon)
    assert "member=ActionInvoked" in text and 'string "mark-read"' in text
    assert "member=ActivationToken" in text and 'string "token-123"' in text
    assert "member=NotificationClosed" in text


def _read_until(proc, needle, timeout=5):
    """Read proc's stdout (raw fd, no buffering behind select's back) up to needle."""
    out, deadline = b"", time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            chunk = os.read(fd, 65536)
            out += chunk
            if needle.encode() in out or not chunk:
                return out.decode()
    raise TimeoutError(f"{needle!r} not seen in {out!r}")


def test_notification_daemon_stop_and_restart(notification_daemon, session_bus):
    n = notification_daemon
    n.notify("one")
    n.stop()
    assert not session_bus.name_has_owner(bus.NOTIFY_NAME)
    with pytest.raises(dbus.exceptions.DBusException, match="ServiceUnknown"):
        dbus.Interface(session_bus.connection().get_object(
            bus.NOTIFY_NAME, bus.NOTIFY_PATH, introspect=False),
            bus.NOTIFY_IFACE).GetCapabilities()
    n.start()
    assert n.notify("two") == 1  # a new server counts from 1 again
    assert [x.summary for x in n.notifications()] == ["two"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_session_bus_restarts_at_the_same_path(notification_daemon, session_bus, sig):
    old_address, old_pid = session_bus.address, session_bus.pid
    assert session_bus.path_address == "unix:path=" + session_bus.socket_path
    session_bus.stop(sig)
    assert not util.pid_alive(old_pid)
    # SIGKILL leaves the socket behind, refusing connections, as a crashed bus does.
    assert os.path.exists(session_bus.socket_path) == (sig == signal.SIGKILL)
    session_bus.start()
    assert session_bus.address != old_address  # another guid
    assert session_bus.address.startswith(session_bus.path_address + ",guid=")
    assert not session_bus.name_has_owner(bus.NOTIFY_NAME)
    notification_daemon.restart()
    assert notification_daemon.notify("on the new bus") == 1
    conn = dbus.bus.BusConnection(session_bus.path_address)
    try:
        assert conn.name_has_owner(bus.NOTIFY_NAME)
    finally:
        conn.close()


# -- HTTP ------------------------------------------------------------------------------------

def _post(url, body=b'{"a": 1}', headers=None):
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_http_receiver_records_and_answers(http_receiver):
    r = http_receiver
    r.respond(500, body=b"try later", retry_after=7)
    r.respond(200)
    t0 = time.monotonic()
    s1, h1, b1 = _post(r.url("/mail"), headers={"webhook-id": "msg_1"})
    s2, _, _ = _post(r.url("/mail"), body=b'{"b": 2}')
    s3, _, _ = _post(r.url("/mail"))  # queue empty: the default
    assert (s1, h1["Retry-After"], b1, s2, s3) == (500, "7", b"try later", 200, 200)
    reqs = r.wait_for(3, timeout=5)
    assert [q.method for q in reqs] == ["POST"] * 3
    assert reqs[0].path == "/mail" and reqs[0].header("Webhook-ID") == "msg_1"
    assert reqs[0].headers["content-type"] == "application/json"
    assert reqs[1].json() == {"b": 2}
    assert t0 <= reqs[0].time <= reqs[1].time <= reqs[2].time <= time.monotonic()
    with pytest.raises(TimeoutError):
        r.wait_for(4, timeout=0.05)


def test_http_receiver_down_and_up_on_the_same_port(http_receiver):
    r = http_receiver
    port = r.port
    assert _post(r.url())[0] == 200
    r.down()
    with pytest.raises(urllib.error.URLError, match="refused"):
        _post(r.url())
    r.up()
    assert r.port == port
    assert _post(r.url())[0] == 200
    assert len(r.requests) == 2


def test_http_receiver_drop_and_delay(http_receiver):
    r = http_receiver
    r.respond(drop=True)
    with pytest.raises((ConnectionError, urllib.error.URLError, http.client.RemoteDisconnected)):
        _post(r.url())
    r.respond(200, delay=0.3)
    t0 = time.monotonic()
    assert _post(r.url())[0] == 200
    assert time.monotonic() - t0 >= 0.3


# The published Standard Webhooks / Svix test vector (svix-webhooks library tests).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_HEADERS = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
                  "webhook-timestamp": "1614265330",
                  "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}
VECTOR_BODY = b'{"test": 2432232314}'


def test_signature_verifier_matches_the_published_vector():
    assert webhook.sign(VECTOR_SECRET, VECTOR_HEADERS["webhook-id"], 1614265330,
                        VECTOR_BODY) == VECTOR_HEADERS["webhook-signature"]
    assert webhook.verify_signature(VECTOR_SECRET, VECTOR_HEADERS, VECTOR_BODY)
    # Names are case-insensitive; several signatures may be listed.
    upper = {k.upper(): v for k, v in VECTOR_HEADERS.items()}
    upper["WEBHOOK-SIGNATURE"] = "v1,bm9wZQ== " + VECTOR_HEADERS["webhook-signature"]
    assert webhook.verify_signature(VECTOR_SECRET, upper, VECTOR_BODY)


def test_signature_verifier_rejects_tampering():
    assert not webhook.verify_signature(VECTOR_SECRET, VECTOR_HEADERS, b'{"test": 2432232315}')
    assert not webhook.verify_signature("whsec_" + "A" * 32, VECTOR_HEADERS, VECTOR_BODY)
    moved = dict(VECTOR_HEADERS, **{"webhook-timestamp": "1614265331"})
    assert not webhook.verify_signature(VECTOR_SECRET, moved, VECTOR_BODY)
    other_id = dict(VECTOR_HEADERS, **{"webhook-id": "msg_other"})
    assert not webhook.verify_signature(VECTOR_SECRET, other_id, VECTOR_BODY)
    assert "missing" in webhook.signature_problem(VECTOR_SECRET, {}, VECTOR_BODY)
    assert "away from now" in webhook.signature_problem(VECTOR_SECRET, VECTOR_HEADERS,
                                                        VECTOR_BODY, tolerance=300)


def test_signature_with_a_plain_string_secret():
    ts = str(int(time.time()))
    h = {"webhook-id": "msg_x", "webhook-timestamp": ts,
         "webhook-signature": webhook.sign("not-base64 at all", "msg_x", ts, b"{}")}
    assert webhook.verify_signature("not-base64 at all", h, b"{}", tolerance=60)
    assert not webhook.verify_signature("whsec_bm90LWJhc2U2NA==", h, b"{}")


# -- the daemon runner (with a stand-in until imapidled runs) --------------------------------

FAKE_DAEMON = textwrap.dedent("""\
    #!{python}
    import os, signal, sys, time
    args = sys.argv[1:]
    if args and args[0] == "check":
        print("check ok", " ".join(args[1:]))
        sys.exit(3 if os.environ.get("FAKE_CHECK_FAIL") else 0)
    def term(*_):
        os.write(2, b"imapidled: stopping\\n"); os._exit(0)
    def hup(*_):
        os.write(2, b"imapidled: reloading configuration\\n")
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGHUP, hup)
    sys.stderr.write("imapidled: config " + args[args.index("--config") + 1] + "\\n")
    sys.stderr.write("imapidled: bus " + os.environ.get("DBUS_SESSION_BUS_ADDRESS", "-") + "\\n")
    sys.stderr.write("imapidled: home " + os.environ["HOME"] + "\\n")
    if os.environ.get("NOTIFY_SOCKET"):
        import socket
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        addr = os.environ["NOTIFY_SOCKET"]
        s.sendto(b"READY=1\\nSTATUS=watching 1 mailbox", "\\0" + addr[1:] if addr[0] == "@" else addr)
    if os.environ.get("FAKE_ASAN"):
        sys.stderr.write("==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\\n")
    sys.stderr.flush()
    while True:
        time.sleep(1)
    """)


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    path = tmp_path / "fake-imapidled"
    path.write_text(FAKE_DAEMON.format(python=sys.executable))
    path.chmod(0o755)
    monkeypatch.setenv("IMAPIDLED_BIN", str(path))
    return str(path)


def test_config_writer(daemon_config, dovecot, mail_user, http_receiver, pki):
    cfg = daemon_config
    cfg.account("work", dovecot, mail_user, tls="starttls", mailboxes=["INBOX", "Lists/urgent"],
                sinks=["desktop", "webhook:crm"], skip_seen=True, idle_refresh="10m")
    cfg.account("pinned", dovecot, mail_user, tls="implicit", ca_file=None,
                tls_fingerprint=pki.fingerprint())
    cfg.account("plain", dovecot, mail_user, tls="none", password_via="value")
    cfg.desktop(actions=["open", "mark-read"], urgency="normal")
    cfg.webhook("crm", http_receiver.url(), secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                timeout="10s")
    cfg.exec("sync", "true")
    path = cfg.write()
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(path)
    assert ini["imapidled"]["state_dir"] == cfg.state_dir
    w = ini["account work"]
    assert (w["host"], int(w["port"]), w["tls"]) == (dovecot.starttls_host,
                                                     dovecot.starttls_port, "starttls")
    assert w["tls_ca_file"] == pki.ca_file and w["username"] == mail_user.name
    assert w["mailboxes"] == "INBOX, Lists/urgent" and w["skip_seen"] == "yes"
    pw = w["password_file"]
    assert stat.S_IMODE(os.stat(pw).st_mode) == 0o600
    assert open(pw).read() == mail_user.password + "\n"
    assert "tls_ca_file" not in ini["account pinned"]
    assert ini["account pinned"]["tls_fingerprint"].startswith("sha256:")
    assert ini["account plain"]["allow_plaintext"] == "yes"
    assert ini["account plain"]["password"] == mail_user.password
    secret_file = ini["webhook crm"]["secret_file"]
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600


def test_daemon_runner(fake_bin, imapidled, daemon_config, session_bus, notify_socket):
    d = imapidled(notify_socket=notify_socket)
    assert d.wait_for_log(r"config (\S+)").group(1) == daemon_config.path
    assert d.wait_for_log(r"bus (\S+)").group(1) == session_bus.address
    assert "xdg" not in d.wait_for_log(r"home (\S+)").group(1)
    assert d.env["XDG_STATE_HOME"].startswith(str(d.workdir))
    assert notify_socket.wait_for("READY", "1")["STATUS"] == "watching 1 mailbox"
    mark = d.mark()
    d.reload()
    d.wait_for_log("reloading", since=mark)
    with pytest.raises(TimeoutError):
        d.wait_for_log("never printed", timeout=0.1)
    assert d.stop() == 0
    assert d.lines()[-1] == "imapidled: stopping"
    assert not util.pid_alive(d.pid)
    assert d.sanitizer_reports() == []


def test_daemon_runner_spots_sanitizer_reports(fake_bin, tmp_path, daemon_config):
    cfg = daemon_config.write()
    d = daemon.Daemon(cfg, tmp_path, env=daemon.daemon_env(tmp_path, extra={"FAKE_ASAN": "1"}))
    d.start()
    try:
        d.wait_for_log("AddressSanitizer")
    finally:
        d.close()
    assert d.sanitizer_reports() == [
        "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1"]


def test_run_check(fake_bin, run_check, daemon_config):
    code, out, err = run_check(daemon_config)
    assert (code, out.strip()) == (0, f"check ok --config {daemon_config.path} --connect")
    code, out, _ = run_check(daemon_config, connect=False, env={"FAKE_CHECK_FAIL": "1"})
    assert (code, out.strip()) == (3, f"check ok --config {daemon_config.path}")


# -- clean-up --------------------------------------------------------------------------------

def test_every_part_is_gone_after_close(pki, tmp_path, fake_bin):
    d = dovecot_mod.Dovecot(pki).start()
    b = n = r = fake = None
    try:
        user = d.new_user()
        c = user.imap_client(harness=False)
        c.select("INBOX")
        _idle(c)
        user.wait_for_idle()
        b = bus.SessionBus().start()
        n = bus.NotificationDaemon(b).start()
        r = webhook.HttpReceiver().start()
        cfg = daemon.DaemonConfig(tmp_path / "cfg").write()
        fake = daemon.Daemon(cfg, tmp_path, env=daemon.daemon_env(tmp_path)).start()
        fake.wait_for_log("config")
        pids = d.processes() + [b.pid, n.pid, fake.pid]
        assert len(pids) >= 8 and all(util.pid_alive(p) for p in pids)
        port, dirs = r.port, [d.dir, b.dir]
    finally:
        for part in (fake, r, n, b, d):
            if part is not None:
                part.close()
    assert util.wait_gone(pids, 5) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    assert not any(os.path.exists(x) for x in dirs)
    assert not [t for t in __import__("threading").enumerate()
                if t.name.startswith(("http-receiver", "imapidled:"))]


_fixture_pids = {}


def test_fixtures_record_their_pids(dovecot_factory, notification_daemon, session_bus,
                                    http_receiver, imapidled, fake_bin):
    d = dovecot_factory()
    _fixture_pids["pids"] = d.processes() + [session_bus.pid, notification_daemon.pid,
                                             imapidled().pid]
    _fixture_pids["port"] = http_receiver.port


def test_fixture_processes_are_gone_after_teardown():
    if not _fixture_pids:
        pytest.skip("runs after test_fixtures_record_their_pids")
    assert util.wait_gone(_fixture_pids["pids"], 5) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", _fixture_pids["port"]), timeout=2)
