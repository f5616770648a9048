"""The daemon end to end (issue 2, "Foundation"): config -> TLS to a real Dovecot, verified
against the test CA -> login -> EXAMINE -> IDLE -> "ready", readiness on the sd_notify socket,
a clean SIGTERM, and a delivered mail as a decoded `new mail` log line. The password never
reaches the log, whatever the verbosity."""
import base64
import re
import signal
import time

import pytest

from imapidled_test import dovecot as dovecot_mod

# Dovecot holds an IDLE notification ~0.5 s after a delivery; everything else is the daemon.
NEW_MAIL_TIMEOUT = 5.0


def start_watching(imapidled, daemon_config, dovecot, mail_user, notify_socket=None,
                   args=(), verbose=True, **account):
    daemon_config.account("work", dovecot, mail_user, **account)
    return imapidled(args=args, verbose=verbose, notify_socket=notify_socket)


def wait_until_idle(d, mail_user):
    d.wait_for_log(r"work/INBOX: idle$", timeout=15)
    d.wait_for_log(r"all 1 mailbox idle$", timeout=5)
    # The server's view: a session of this user sits in IDLE (not just the daemon's say-so).
    mail_user.wait_for_idle(timeout=10)


def stop_and_time(d):
    t0 = time.monotonic()
    code = d.stop(timeout=10)
    return code, time.monotonic() - t0


# -- the smoke test ----------------------------------------------------------------------

def test_smoke_config_tls_login_ready_idle_stop(imapidled, daemon_config, dovecot, mail_user,
                                                notify_socket):
    """One pass through all of it: config -> implicit TLS (test CA) -> login -> ready."""
    d = start_watching(imapidled, daemon_config, dovecot, mail_user, notify_socket,
                       tls="implicit")

    ready = notify_socket.wait_for("READY", "1", timeout=15)
    assert ready["READY"] == "1"
    d.wait_for_log(r"imapidled \S+ starting with " + re.escape(daemon_config.path))
    d.wait_for_log(r"ready: watching 1 mailbox in 1 account$")
    wait_until_idle(d, mail_user)
    notify_socket.wait_for("STATUS", "1/1 mailboxes idle", timeout=5)
    assert mail_user.login_count() == 1, dovecot.log_tail(20)
    # The daemon's session came in over TLS (Dovecot logs the login with its TLS state).
    login = [line for line in dovecot.log_text().splitlines()
             if f"Login: user=<{mail_user.name}>" in line and "127.0.0.3" not in line]
    assert login and "TLS" in login[-1], login

    code, took = stop_and_time(d)
    assert code == 0, d.log_tail()
    assert took < 3.0, f"SIGTERM took {took:.2f} s"
    notify_socket.wait_for("STOPPING", "1", timeout=2)
    assert re.search(r"received \S+, shutting down", d.log_text()), d.log_tail()
    assert not d.sanitizer_reports()


def test_sigint_also_exits_zero(imapidled, daemon_config, dovecot, mail_user):
    d = start_watching(imapidled, daemon_config, dovecot, mail_user)
    wait_until_idle(d, mail_user)
    d.send_signal(signal.SIGINT)
    assert d.wait(timeout=3) == 0, d.log_tail()


def test_starttls_account_reaches_idle(imapidled, daemon_config, dovecot, mail_user,
                                       notify_socket):
    d = start_watching(imapidled, daemon_config, dovecot, mail_user, notify_socket,
                       args=("-vv",), tls="starttls")
    notify_socket.wait_for("READY", "1", timeout=15)
    wait_until_idle(d, mail_user)
    log = d.log_text()
    # The upgrade came before any credential went out.
    starttls = log.find(" STARTTLS")
    tls_up = log.find("TLS established")
    auth = max(log.find("AUTHENTICATE"), log.find(" LOGIN "))
    assert 0 <= starttls < tls_up < auth, log
    if dovecot.strict_starttls:  # 127.0.0.2: Dovecot said LOGINDISABLED before STARTTLS
        assert f":{dovecot.starttls_port}" in log
    code, _ = stop_and_time(d)
    assert code == 0


def test_wrong_ca_never_logs_in(imapidled, daemon_config, dovecot, mail_user, pki):
    """Verification is really on: a server the configured CA did not sign gets no password."""
    d = start_watching(imapidled, daemon_config, dovecot, mail_user,
                       ca_file=pki.wrong_ca_file)
    d.wait_for_log(r"work/INBOX: .*certificate verify failed.*; reconnecting in", timeout=15)
    assert mail_user.login_count() == 0
    assert "work/INBOX: idle" not in d.log_text()
    assert d.stop() == 0


# -- secrets -----------------------------------------------------------------------------

@pytest.mark.parametrize("auth,password_via,redacted", [
    ("auto", "file", r"C: \S+ AUTHENTICATE PLAIN \*\*\*$"),
    ("plain", "command", r"C: \S+ AUTHENTICATE PLAIN \*\*\*$"),
    ("login", "value", r"C: \S+ LOGIN \S+ \*\*\*$"),
], ids=["auto-file", "plain-command", "login-value"])
def test_password_never_logged_even_at_debug(imapidled, daemon_config, dovecot, mail_user,
                                             auth, password_via, redacted):
    d = start_watching(imapidled, daemon_config, dovecot, mail_user, args=("-vv",),
                       auth=auth, password_via=password_via)
    wait_until_idle(d, mail_user)
    d.wait_for_log(redacted, timeout=1)
    mail_user.deliver(subject="after login")
    d.wait_for_log(r"work/INBOX: new mail, UID 1,", timeout=NEW_MAIL_TIMEOUT)
    assert d.stop() == 0
    log = d.log_text()
    assert " C: " in log, "no wire trace at -vv"
    sasl = base64.b64encode(f"\0{mail_user.name}\0{mail_user.password}".encode()).decode()
    for secret in (mail_user.password, sasl, sasl.rstrip("=")):
        assert secret not in log, f"secret {secret!r} in the log:\n{log}"


# -- verbosity ---------------------------------------------------------------------------

def test_quiet_prints_no_info_lines(imapidled, daemon_config, dovecot, mail_user,
                                    notify_socket):
    d = start_watching(imapidled, daemon_config, dovecot, mail_user, notify_socket,
                       args=("-q",), verbose=False)
    notify_socket.wait_for("READY", "1", timeout=15)
    notify_socket.wait_for("STATUS", "1/1 mailboxes idle", timeout=15)
    mail_user.wait_for_idle(timeout=10)
    mail_user.deliver(subject="quietly")
    # No log line to wait for: the server shows the session back in IDLE after the fetch.
    time.sleep(1.0)
    mail_user.wait_for_idle(timeout=5)
    assert d.stop() == 0
    noisy = [line for line in d.lines() if re.search(r"\b(info|notice|debug)\b", line)]
    assert noisy == [], "\n".join(noisy)


def test_default_verbosity_logs_ready_but_no_wire(imapidled, daemon_config, dovecot, mail_user):
    d = start_watching(imapidled, daemon_config, dovecot, mail_user, verbose=False)
    wait_until_idle(d, mail_user)
    assert d.stop() == 0
    log = d.log_text()
    assert "ready: watching 1 mailbox in 1 account" in log
    assert " debug " not in log and " C: " not in log, log


# -- new mail ----------------------------------------------------------------------------

def encoded_message(subject_words, from_words, body="Hej.\r\n"):
    return ("From: " + from_words + "\r\n"
            "To: someone@example.com\r\n"
            "Subject: " + subject_words + "\r\n"
            "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
            "Message-ID: <enc-1@imapidled.test>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n" + body).encode("ascii")


def test_new_mail_logged_with_decoded_subject(imapidled, daemon_config, dovecot, mail_user):
    d = start_watching(imapidled, daemon_config, dovecot, mail_user)
    wait_until_idle(d, mail_user)

    subject = "Grüße aus Köln ✓"
    b64 = base64.b64encode(subject.encode()).decode()
    raw = encoded_message(f"=?UTF-8?B?{b64}?=", "=?ISO-8859-1?Q?J=F6rg_M=FCller?= <jm@example.com>")
    t0 = time.monotonic()
    uid = mail_user.deliver(raw=raw)
    m = d.wait_for_log(r"work/INBOX: new mail, UID (\d+), from (.*?): (.*)$",
                       timeout=NEW_MAIL_TIMEOUT)
    took = time.monotonic() - t0
    assert int(m.group(1)) == uid
    assert m.group(2) == "Jörg Müller"
    assert m.group(3) == subject
    assert took < NEW_MAIL_TIMEOUT

    # A second one, plain ASCII, split over two encoded words and a plain sender address.
    mark = d.mark()
    uid2 = mail_user.deliver(
        raw=encoded_message("=?UTF-8?Q?Caf=C3=A9?= =?UTF-8?Q?_ouvert?=", "bob@example.com"))
    m = d.wait_for_log(r"work/INBOX: new mail, UID (\d+), from (.*?): (.*)$",
                       timeout=NEW_MAIL_TIMEOUT, since=mark)
    assert (int(m.group(1)), m.group(2), m.group(3)) == (uid2, "bob@example.com", "Café ouvert")
    mail_user.wait_for_idle(timeout=5)  # and back in IDLE
    assert d.stop() == 0
    assert len(re.findall(r"new mail, UID", d.log_text())) == 2


def test_mail_from_before_start_is_not_reported(imapidled, daemon_config, dovecot, mail_user):
    """A fresh state starts watching after the newest message: old mail is not new mail."""
    old = mail_user.deliver(subject="old")
    d = start_watching(imapidled, daemon_config, dovecot, mail_user)
    d.wait_for_log(rf"work/INBOX: watching from UID {old + 1} on", timeout=15)
    wait_until_idle(d, mail_user)
    new = mail_user.deliver(subject="new")
    d.wait_for_log(rf"new mail, UID {new}, from Alice Example: new$", timeout=NEW_MAIL_TIMEOUT)
    assert d.stop() == 0
    assert "UID 1, " not in d.log_text()


@pytest.mark.skipif(not dovecot_mod.util.can_bind("127.0.0.2"), reason="needs 127.0.0.2")
def test_two_accounts_implicit_and_starttls(imapidled, daemon_config, dovecot, notify_socket):
    a, b = dovecot.new_user(), dovecot.new_user()
    daemon_config.account("one", dovecot, a, tls="implicit")
    daemon_config.account("two", dovecot, b, tls="starttls", mailboxes=["INBOX"])
    d = imapidled(notify_socket=notify_socket)
    d.wait_for_log(r"ready: watching 2 mailboxes in 2 accounts$", timeout=15)
    d.wait_for_log(r"all 2 mailboxes idle$", timeout=15)
    notify_socket.wait_for("STATUS", "2/2 mailboxes idle", timeout=5)
    a.wait_for_idle()
    b.wait_for_idle()
    b.deliver(subject="to two")
    d.wait_for_log(r"two/INBOX: new mail, UID 1, from Alice Example: to two$",
                   timeout=NEW_MAIL_TIMEOUT)
    assert "one/INBOX: new mail" not in d.log_text()
    assert d.stop() == 0
