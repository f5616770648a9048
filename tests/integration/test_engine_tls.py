"""imapidled against the real Dovecot: transport security and authentication.

Each test checks what the daemon does (reaches IDLE, or refuses with the reason in its log
and stays up) and, where it matters, what Dovecot saw (logins, attempts).
"""
import re
import time

import pytest

FAST = {"connect_timeout": "2s", "reply_timeout": "2s", "idle_refresh": "10s"}


def _start(daemon_config, imapidled, dovecot, user, **kw):
    daemon_config.account("a", dovecot, user, **{**FAST, **kw})
    return imapidled()


def _wait_idle(d, user, name="a"):
    d.wait_for_log(rf"{name}/INBOX: idle", timeout=10)
    user.wait_for_idle()


def test_implicit_tls(dovecot, mail_user, daemon_config, imapidled):
    d = _start(daemon_config, imapidled, dovecot, mail_user, tls="implicit")
    _wait_idle(d, mail_user)
    assert mail_user.login_count() == 1
    assert re.search(rf"Login: user=<{mail_user.name}>, method=\S+, rip=127\.0\.0\.1, .*TLS",
                     dovecot.log_text())


def test_starttls(dovecot, mail_user, daemon_config, imapidled):
    d = _start(daemon_config, imapidled, dovecot, mail_user, tls="starttls")
    _wait_idle(d, mail_user)
    assert mail_user.login_count() == 1
    # Logged in over the STARTTLS listener (127.0.0.2 when it exists), after the upgrade.
    assert re.search(rf"Login: user=<{mail_user.name}>, .*lip={re.escape(dovecot.starttls_host)}"
                     r", .*TLS", dovecot.log_text())


def test_plaintext_refused_without_allow_plaintext(dovecot, mail_user, daemon_config,
                                                    imapidled):
    daemon_config.account("a", dovecot, mail_user, tls="none", allow_plaintext=False, **FAST)
    d = imapidled()
    assert d.wait(10) == 78, d.log_tail()  # EX_CONFIG
    assert re.search(r"allow_plaintext", d.log_text()), d.log_tail()
    assert mail_user.login_count() == 0


def test_plaintext_with_allow_plaintext(dovecot, mail_user, daemon_config, imapidled,
                                        event_recorder):
    daemon_config.account("a", dovecot, mail_user, tls="none", **FAST)
    event_recorder.configure(daemon_config)
    d = event_recorder.attach(imapidled())
    _wait_idle(d, mail_user)
    uid = mail_user.deliver(subject="over plaintext")
    assert event_recorder.wait_for_uid("a", "INBOX", uid)["subject"] == "over plaintext"


def _second_failure_handled(d, what):
    """Wait until the daemon itself has dealt with its second failed attempt (the repeat is
    logged at debug), not just until the server saw it: stopping the daemon in between races
    a shutdown leak (see the report: a link released right before SIGTERM is never freed)."""
    rx = re.compile(rf"a/INBOX: {what}.*; reconnecting in")
    deadline = time.monotonic() + 10
    while sum(1 for x in d.lines() if rx.search(x)) < 2:
        assert time.monotonic() < deadline, d.log_tail()
        time.sleep(0.01)


def test_wrong_ca_is_refused_and_retried(dovecot, mail_user, daemon_config, imapidled, pki):
    daemon_config.set("imapidled", "log_level", "debug")
    d = _start(daemon_config, imapidled, dovecot, mail_user, ca_file=pki.wrong_ca_file)
    m = d.wait_for_log(r"a/INBOX: certificate verify failed: (.*); reconnecting in", timeout=10)
    assert "unable to get local issuer certificate" in m.group(1), m.string
    # It keeps trying (a repeat of the same error is logged at debug only): Dovecot sees a
    # second handshake end in the daemon's "unknown ca" alert.
    dovecot.wait_for_log(r"tlsv1 alert unknown ca.*rip=127\.0\.0\.1", count=2, timeout=10)
    _second_failure_handled(d, "certificate verify failed")
    assert d.running
    assert mail_user.login_count() == 0


def test_wrong_host_name_is_refused(dovecot_factory, daemon_config, imapidled, pki):
    cert, key = pki.issue("other-name", "imap.example.com", ["DNS:imap.example.com"])
    dv = dovecot_factory(extra_conf=f"ssl_cert = <{cert}\nssl_key = <{key}\n")
    user = dv.new_user()
    daemon_config.set("imapidled", "log_level", "debug")
    d = _start(daemon_config, imapidled, dv, user, host="localhost")
    d.wait_for_log(r"a/INBOX: host name mismatch: certificate is for imap\.example\.com, "
                   r"not localhost; reconnecting in", timeout=10)
    dv.wait_for_log(r"alert bad certificate.*rip=127\.0\.0\.1", count=2, timeout=10)
    _second_failure_handled(d, "host name mismatch")
    assert d.running
    assert user.login_count() == 0


def test_fingerprint_pin_without_ca(dovecot, mail_user, daemon_config, imapidled, pki):
    # No tls_ca_file: the system store does not know the test CA, the pin alone decides.
    d = _start(daemon_config, imapidled, dovecot, mail_user, ca_file=None,
               tls_fingerprint=pki.fingerprint())
    _wait_idle(d, mail_user)
    assert mail_user.login_count() == 1


def test_fingerprint_mismatch_is_refused(dovecot, mail_user, daemon_config, imapidled, pki):
    wrong = pki.fingerprint(pki.ca_file)  # a real certificate, just not the server's
    d = _start(daemon_config, imapidled, dovecot, mail_user, tls_fingerprint=wrong)
    m = d.wait_for_log(r"a/INBOX: certificate fingerprint mismatch: expected (\S+), got (\S+)",
                       timeout=10)
    assert m.group(1).rstrip(",") == wrong
    assert m.group(2).rstrip(";") == pki.fingerprint()
    assert d.running
    assert mail_user.login_count() == 0


def _failed_auths(dovecot, user):
    return len(re.findall(rf"imap-login: Info: Disconnected.*auth failed.*user=<{user}>",
                          dovecot.log_text())) + \
        len(re.findall(rf"imap-login: Info: Aborted login \(auth failed.*user=<{user}>",
                       dovecot.log_text()))


def test_wrong_password_backs_off(dovecot, mail_user, daemon_config, imapidled):
    d = _start(daemon_config, imapidled, dovecot, mail_user, password="not-the-password")
    # "15m", "15m9s": durations show their two largest units, and seconds may be 0.
    m = d.wait_for_log(r"a/INBOX: login as \S+ rejected: (.*); reconnecting in (\d+)m(\d+s)?$",
                       timeout=10)
    assert 14 <= int(m.group(2)) <= 17, m.string  # 15 min plus up to 10 % jitter
    assert "not-the-password" not in d.log_text()
    dovecot.wait_for_log(rf"auth failed.*user=<{mail_user.name}>", timeout=5)
    attempts = _failed_auths(dovecot, mail_user.name)
    assert attempts == 1, dovecot.log_tail()
    # No hammering: nothing more reaches the server for a while.
    time.sleep(2)
    assert _failed_auths(dovecot, mail_user.name) == attempts
    assert len([x for x in d.lines() if "rejected" in x]) == 1, d.log_tail()
    assert d.running
    assert mail_user.login_count() == 0
