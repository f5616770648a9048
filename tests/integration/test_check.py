"""`imapidled check [--connect]` against the test Dovecot: what a user runs first to see
whether a config works. Exit codes are sysexits: 0 OK, 77 login rejected, 69 anything else
that failed on the server side (unreachable, TLS, missing mailbox), 78 a config error."""
import functools
import os
import re
import time

import pytest

from imapidled_test import daemon, util

EX_OK, EX_UNAVAILABLE, EX_NOPERM, EX_CONFIG = 0, 69, 77, 78

# Known bug: `check --connect` leaks its whole event loop (probe.c: the links' deferred
# releases are queued after sd_event_exit() and never run; see
# test_check_connect_frees_everything). Until it is fixed, the other tests here run with
# LeakSanitizer off, so that what they assert is still checked in the sanitizer build.
PROBE_LEAKS = False


@functools.lru_cache(maxsize=None)
def sanitized():
    """Whether the binary under test was built with SANITIZE=1."""
    with open(daemon.binary(), "rb") as f:
        return b"__asan_init" in f.read()


def no_leak_check_env():
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") + "detect_leaks=0"}


@pytest.fixture
def run_check(run_check):
    """The harness's run_check, failing clearly on a sanitizer report."""
    def run(config, connect=True, env=None, args=(), timeout=60):
        if PROBE_LEAKS and connect:
            env = {**no_leak_check_env(), **(env or {})}
        code, out, err = run_check(config, connect=connect, env=env, args=args,
                                   timeout=timeout)
        assert not daemon.SANITIZER_RX.search(err), f"imapidled check tripped a sanitizer:\n{err}"
        return code, out, err
    return run


def lines(text):
    return [line for line in text.splitlines() if line.strip()]


def test_check_without_connect_validates_only(run_check, daemon_config, dovecot, mail_user):
    daemon_config.account("work", dovecot, mail_user)
    code, out, err = run_check(daemon_config, connect=False)
    assert code == EX_OK, (out, err)
    assert lines(out) == [f"{daemon_config.path}: configuration is valid (1 account)"]
    assert err == ""
    assert mail_user.login_count() == 0, "check without --connect must not connect"


def test_check_without_connect_still_fetches_secrets(run_check, daemon_config, dovecot,
                                                     mail_user):
    daemon_config.account("work", dovecot, mail_user, password_via=None,
                          password_command="false")
    code, out, err = run_check(daemon_config, connect=False)
    assert code == EX_CONFIG, (out, err)
    assert "password_command" in err and "configuration is valid" not in out


def test_check_connect_prints_capabilities_and_mailboxes(run_check, daemon_config, dovecot,
                                                         mail_user):
    dovecot.create_mailbox(mail_user.name, "Lists/urgent")
    daemon_config.account("work", dovecot, mail_user, mailboxes=["INBOX", "Lists/urgent"])
    t0 = time.monotonic()
    code, out, err = run_check(daemon_config)
    took = time.monotonic() - t0
    assert code == EX_OK, (out, err)
    got = lines(out)
    assert got[0] == (f"work: logged in to {dovecot.host}:{dovecot.imaps_port} "
                      f"as {mail_user.name}")
    caps = [line for line in got if line.startswith("work: capabilities: ")]
    assert len(caps) == 1, out
    assert {"IMAP4rev1", "IDLE"} <= set(caps[0].split(": ", 2)[2].split()), caps[0]
    boxes = [line for line in got if re.match(r"work: \d+ mailboxes:", line)]
    assert len(boxes) == 1, out
    assert '"INBOX"' in boxes[0] and '"Lists/urgent"' in boxes[0], boxes[0]
    assert got[-1] == "work: OK"
    assert err == ""
    assert mail_user.login_count() == 1
    assert took < 5, f"check --connect took {took:.1f} s"


def test_check_connect_over_starttls(run_check, daemon_config, dovecot, mail_user):
    daemon_config.account("work", dovecot, mail_user, tls="starttls")
    code, out, err = run_check(daemon_config)
    assert code == EX_OK, (out, err)
    assert f"work: logged in to {dovecot.starttls_host}:{dovecot.starttls_port}" in out
    assert lines(out)[-1] == "work: OK"


def test_wrong_password_exits_77_with_one_clear_line(run_check, daemon_config, dovecot,
                                                     mail_user):
    wrong = "Wr0ng-pa55word-xyzzy"
    daemon_config.account("work", dovecot, mail_user, password=wrong, password_via="value")
    code, out, err = run_check(daemon_config, args=("-vv",))
    assert code == EX_NOPERM, (out, err)
    failed = [line for line in lines(out) if "FAILED" in line]
    assert len(failed) == 1, out
    assert failed[0].startswith(f"work: FAILED: login as {mail_user.name} rejected"), failed
    assert "logged in" not in out and "work: OK" not in out
    for text in (out, err):
        assert wrong not in text
        assert mail_user.password not in text


def test_wrong_password_is_tried_once(run_check, daemon_config, dovecot, mail_user):
    daemon_config.account("work", dovecot, mail_user, password="nope-nope",
                          password_via="value")
    code, _, _ = run_check(daemon_config)
    assert code == EX_NOPERM
    dovecot.wait_for_log(rf"auth failed, 1 attempts.*user=<{mail_user.name}>", timeout=5)
    mismatches = re.findall(rf"passwd-file\({mail_user.name},.*Password mismatch",
                            dovecot.log_text())
    assert len(mismatches) == 1, mismatches


def test_missing_watched_mailbox_exits_69_and_names_it(run_check, daemon_config, dovecot,
                                                        mail_user):
    daemon_config.account("work", dovecot, mail_user, mailboxes=["INBOX", "No/Such box"])
    code, out, err = run_check(daemon_config)
    assert code == EX_UNAVAILABLE, (out, err)
    named = [line for line in lines(out) if "No/Such box" in line]
    assert named == ['work: watched mailbox "No/Such box" does not exist on the server'], out
    assert "work: OK" not in out


def test_wrong_ca_fails_with_certificate_message(run_check, daemon_config, dovecot, mail_user,
                                                 pki):
    daemon_config.account("work", dovecot, mail_user, ca_file=pki.wrong_ca_file)
    code, out, err = run_check(daemon_config)
    assert code not in (EX_OK, EX_CONFIG), (out, err)
    assert code == EX_UNAVAILABLE
    assert re.search(r"^work: FAILED: .*certificate verify failed", out, re.M), (out, err)
    assert mail_user.login_count() == 0


def test_pinned_fingerprint_mismatch_fails(run_check, daemon_config, dovecot, mail_user, pki):
    other, _ = pki.issue("other-cert", "localhost", ["DNS:localhost"])
    daemon_config.account("work", dovecot, mail_user, tls_fingerprint=pki.fingerprint(other))
    code, out, err = run_check(daemon_config)
    assert code == EX_UNAVAILABLE, (out, err)
    assert re.search(r"^work: FAILED: .*fingerprint", out, re.M | re.I), out
    assert mail_user.login_count() == 0


def test_pinned_fingerprint_match_passes(run_check, daemon_config, dovecot, mail_user, pki):
    daemon_config.account("work", dovecot, mail_user, tls_fingerprint=pki.fingerprint())
    code, out, err = run_check(daemon_config)
    assert code == EX_OK, (out, err)


def test_refused_port_fails_quickly(run_check, daemon_config, dovecot, mail_user):
    port = util.free_port()
    daemon_config.account("work", dovecot, mail_user, port=port)
    t0 = time.monotonic()
    code, out, err = run_check(daemon_config, timeout=20)
    took = time.monotonic() - t0
    assert code == EX_UNAVAILABLE, (out, err)
    assert re.search(rf"^work: FAILED: .*{port}.*refused", out, re.M | re.I), out
    assert took < 3, f"took {took:.1f} s"


def test_two_accounts_report_each_and_worst_code_wins(run_check, daemon_config, dovecot,
                                                       mail_user):
    daemon_config.account("good", dovecot, mail_user)
    daemon_config.account("bad", dovecot, mail_user, password="nope-nope", password_via="value")
    daemon_config.account("gone", dovecot, mail_user, port=util.free_port())
    code, out, err = run_check(daemon_config)
    assert code == EX_NOPERM, (out, err)  # a rejected login outranks an unreachable server
    assert "good: OK" in out
    assert re.search(r"^bad: FAILED: login as \S+ rejected", out, re.M)
    assert re.search(r"^gone: FAILED: ", out, re.M)


@pytest.mark.parametrize("via", ["file", "command", "value"])
def test_secret_not_in_check_output_at_debug(run_check, daemon_config, dovecot, mail_user, via):
    daemon_config.account("work", dovecot, mail_user, password_via=via)
    code, out, err = run_check(daemon_config, args=("-vv",))
    assert code == EX_OK, (out, err)
    assert mail_user.password not in out + err


@pytest.mark.skipif(not sanitized(), reason="leaks show only in the SANITIZE=1 build")
@pytest.mark.xfail(PROBE_LEAKS, strict=True, reason="probe.c: link_release() in probe_closed() "
                   "queues a defer source, then sd_event_exit() finishes the loop before it "
                   "runs; probe_free()'s sd_event_run() on a finished loop dispatches nothing, "
                   "so the event loop, links, sessions and parsers leak")
def test_check_connect_frees_everything(daemon_config, dovecot, mail_user, tmp_path):
    daemon_config.account("work", dovecot, mail_user)
    path = daemon_config.write()
    code, out, err = daemon.run_check(path, env=daemon.daemon_env(tmp_path / "leak"))
    assert "LeakSanitizer" not in err, err
    assert code == EX_OK and out.endswith("work: OK\n"), (out, err)
