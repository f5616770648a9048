"""XOAUTH2 and OAUTHBEARER against a real Dovecot whose oauth2 passdb asks an introspection
endpoint (RFC 7662, `introspection_mode = post`) about each token: the http_receiver fixture,
answering `{"active": true, "username": ...}` for the tokens a test declares good and
`{"active": false}` for any other.

The token comes from oauth_token_command, a small script that counts its runs in a file, prints
the token in another file (and a diagnostic on stderr that echoes it), and fails while a flag
file exists."""
import base64
import json
import os
import re
import time
import urllib.parse

import pytest

from imapidled_test import webhook

ACCOUNT = "work"


class Introspection:
    """Token-aware answers from an HttpReceiver: POST /introspect with `token=T` is answered
    from self.good (token -> user name). The receiver's own queue is bypassed for that path;
    every request is still recorded in receiver.requests."""

    def __init__(self, receiver):
        self.receiver = receiver
        self.good = {}
        record = receiver._record

        def answer(req):
            resp = record(req)
            if req.path != "/introspect":
                return resp
            user = self.good.get(self.token_of(req))
            body = {"active": True, "username": user, "token_type": "Bearer"} if user \
                else {"active": False}
            return webhook.Response(200, json.dumps(body),
                                    {"Content-Type": "application/json"})

        receiver._record = answer

    @staticmethod
    def token_of(req):
        return urllib.parse.parse_qs(req.body.decode()).get("token", [None])[0]

    def url(self):
        return self.receiver.url("/introspect")

    def tokens_seen(self):
        return [self.token_of(r) for r in self.receiver.requests if r.path == "/introspect"]


class TokenHelper:
    """oauth_token_command: prints the token file's content, counts its runs, fails (status
    2, a message on stderr) while the fail flag exists."""

    def __init__(self, directory):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.path = os.path.join(self.dir, "token-helper")
        self.counter = os.path.join(self.dir, "runs")
        self.token_file = os.path.join(self.dir, "token")
        self.fail_flag = os.path.join(self.dir, "fail")
        with open(self.path, "w") as f:
            f.write(f"""#!/bin/sh
echo run >> '{self.counter}'
if [ -e '{self.fail_flag}' ]; then
    echo 'token-helper: cannot reach the token endpoint' >&2
    exit 2
fi
echo "token-helper: debug: handing out $(cat '{self.token_file}')" >&2
cat '{self.token_file}'
""")
        os.chmod(self.path, 0o755)

    def set_token(self, token):
        with open(self.token_file + ".tmp", "w") as f:
            f.write(token + "\n")
        os.rename(self.token_file + ".tmp", self.token_file)

    def set_failing(self, failing):
        if failing:
            open(self.fail_flag, "w").close()
        elif os.path.exists(self.fail_flag):
            os.unlink(self.fail_flag)

    def runs(self):
        try:
            with open(self.counter) as f:
                return len(f.readlines())
        except FileNotFoundError:
            return 0

    def wait_runs(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while self.runs() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"token helper ran {self.runs()} times, not {n}, "
                                   f"within {timeout} s")
            time.sleep(0.02)


@pytest.fixture
def introspection(http_receiver):
    return Introspection(http_receiver)


@pytest.fixture
def oauth_dovecot(dovecot_factory, introspection):
    return dovecot_factory(oauth2={
        "introspection_mode": "post",
        "introspection_url": introspection.url(),
        "username_attribute": "username",
        "active_attribute": "active",
        "active_value": "true",
        # Ask the endpoint every time, even when a token looks complete.
        "force_introspection": "yes",
    })


@pytest.fixture
def helper(tmp_path):
    return TokenHelper(tmp_path / "oauth")


def oauth_account(daemon_config, dovecot, user, helper, auth, **extra):
    return daemon_config.account(ACCOUNT, dovecot, user, password_via=None, auth=auth,
                                 oauth_token_command=helper.path, **extra)


def fresh_token(tag):
    return f"ya29.{tag}-{os.urandom(12).hex()}"


@pytest.mark.parametrize("auth, method", [("xoauth2", "XOAUTH2"),
                                          ("oauthbearer", "OAUTHBEARER")])
def test_oauth_reaches_idle_and_reports_mail(auth, method, oauth_dovecot, introspection,
                                             helper, daemon_config, imapidled):
    user = oauth_dovecot.new_user()
    token = fresh_token(auth)
    introspection.good[token] = user.name
    helper.set_token(token)
    oauth_account(daemon_config, oauth_dovecot, user, helper, auth)
    d = imapidled()

    d.wait_for_log(rf"{ACCOUNT}/INBOX: (idle|watching)", timeout=20)
    user.wait_for_idle(timeout=10)
    oauth_dovecot.wait_for_log(rf"Login: user=<{re.escape(user.name)}>, method={method},")
    assert introspection.tokens_seen() == [token], "Dovecot should have been shown the token"
    assert helper.runs() == 1

    uid = user.deliver(subject="Tokens work")
    d.wait_for_log(rf"{ACCOUNT}/INBOX: new mail, UID {uid}, .*Tokens work", timeout=10)
    # The helper's stderr is logged, with the token scrubbed out.
    d.wait_for_log(r"INBOX: oauth_token_command: stderr: token-helper: debug: handing out \*\*\*")
    assert token not in d.log_text()


def test_token_command_runs_on_each_connect(oauth_dovecot, introspection, helper,
                                            daemon_config, imapidled):
    user = oauth_dovecot.new_user()
    first, second = fresh_token("first"), fresh_token("second")
    introspection.good[first] = introspection.good[second] = user.name
    helper.set_token(first)
    oauth_account(daemon_config, oauth_dovecot, user, helper, "xoauth2")
    d = imapidled()
    user.wait_for_idle(timeout=20)
    assert helper.runs() == 1

    # The token may have expired meanwhile: the next connect asks the helper again.
    helper.set_token(second)
    mark = d.mark()
    oauth_dovecot.restart()
    d.wait_for_log(rf"{ACCOUNT}/INBOX: back in IDLE", timeout=20, since=mark)
    user.wait_for_idle(timeout=10)
    assert helper.runs() == 2
    assert introspection.tokens_seen() == [first, second]

    uid = user.deliver(subject="After the restart")
    d.wait_for_log(rf"new mail, UID {uid}, .*After the restart", timeout=10)
    text = d.log_text()
    assert first not in text and second not in text


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
def test_rejected_token_backs_off_for_long(auth, oauth_dovecot, introspection, helper,
                                           daemon_config, imapidled):
    user = oauth_dovecot.new_user()
    token = fresh_token("revoked")  # not in introspection.good
    helper.set_token(token)
    oauth_account(daemon_config, oauth_dovecot, user, helper, auth)
    d = imapidled()

    m = d.wait_for_log(rf"{ACCOUNT}/INBOX: login as {re.escape(user.name)} rejected.*"
                       r"reconnecting in (\S+)", timeout=20)
    delay = m.group(1)
    assert re.fullmatch(r"1[56]m.*", delay), f"expected the 15 min auth backoff, got {delay}"
    seen = len(introspection.tokens_seen())
    assert seen == 1
    time.sleep(3)
    assert len(introspection.tokens_seen()) == seen, "the rejected token was tried again"
    assert helper.runs() == 1
    rejected = [line for line in d.lines() if "INBOX: login as" in line]
    assert len(rejected) == 1, rejected
    assert token not in d.log_text()


def test_token_never_logged_at_debug(oauth_dovecot, introspection, helper, daemon_config,
                                     imapidled):
    user = oauth_dovecot.new_user()
    token = fresh_token("debug")
    introspection.good[token] = user.name
    helper.set_token(token)
    oauth_account(daemon_config, oauth_dovecot, user, helper, "xoauth2")
    d = imapidled(args=["-v"])  # with the fixture's own -v: -vv, the wire traced
    user.wait_for_idle(timeout=20)
    uid = user.deliver(subject="Quiet please")
    d.wait_for_log(rf"new mail, UID {uid}", timeout=10)
    text = d.log_text()
    assert "AUTHENTICATE" in text, "expected the wire trace at -vv"
    assert token not in text
    # Nor the SASL payload that carries it, base64-encoded.
    payload = f"user={user.name}\x01auth=Bearer {token}\x01\x01".encode()
    assert base64.b64encode(payload).decode() not in text


def test_failing_token_command_retries_with_backoff(oauth_dovecot, introspection, helper,
                                                    daemon_config, imapidled):
    user = oauth_dovecot.new_user()
    token = fresh_token("later")
    introspection.good[token] = user.name
    helper.set_token(token)
    helper.set_failing(True)
    oauth_account(daemon_config, oauth_dovecot, user, helper, "xoauth2")
    d = imapidled()

    d.wait_for_log(rf"{ACCOUNT}/INBOX: oauth_token_command failed: \"[^\"]*token-helper\" "
                   r"exited with status 2; reconnecting in \d", timeout=20)
    d.wait_for_log(r"INBOX: oauth_token_command: stderr: token-helper: cannot reach")
    t0 = time.monotonic()
    helper.wait_runs(2, timeout=5)
    # Backoff (at least 1 s apart, growing), not a hot loop.
    time.sleep(max(0.0, 4 - (time.monotonic() - t0)))
    runs = helper.runs()
    assert 2 <= runs <= 5, f"{runs} runs in about 5 s"
    failed = [line for line in d.lines() if "oauth_token_command failed" in line]
    assert len(failed) == 1, f"the same failure should be logged once: {failed}"
    assert introspection.tokens_seen() == [], "no connection should be made without a token"
    assert oauth_dovecot.login_count(user.name) == 0

    helper.set_failing(False)
    d.wait_for_log(rf"{ACCOUNT}/INBOX: back in IDLE", timeout=40)
    user.wait_for_idle(timeout=10)
    assert introspection.tokens_seen() == [token]
