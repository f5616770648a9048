"""The webhook sink end to end: real Dovecot, the daemon, and an HTTP receiver on loopback.

The receiver checks signatures the Standard Webhooks way (HMAC-SHA256 over
id.timestamp.body with the whsec_ key decoded). Delivery is at-least-once, so checks that
say "exactly once" count the requests answered with 2xx per webhook-id.
"""
import os
import re
import signal
import statistics
import time

import pytest

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = {"connect_timeout": "2s", "reply_timeout": "2s", "idle_refresh": "10s"}


@pytest.fixture
def setup(dovecot, mail_user, daemon_config, http_receiver, imapidled):
    """setup(mailboxes=None, extra_sinks=(), **webhook keys) -> the running daemon."""
    def run(mailboxes=None, extra_sinks=(), start=True, **keys):
        keys.setdefault("timeout", "3s")
        daemon_config.webhook("hook", http_receiver.url(), secret=SECRET, **keys)
        daemon_config.account("a", dovecot, mail_user, mailboxes=mailboxes,
                              sinks=["webhook:hook", *extra_sinks], **FAST)
        return imapidled() if start else None
    return run


def _idle(d, user, mailbox="INBOX", count=1):
    d.wait_for_log(rf"a/{re.escape(mailbox)}: (back in IDLE|idle)$", timeout=15)
    user.wait_for_idle(count=count)


def _spool_dir(daemon_config, name="hook"):
    return os.path.join(daemon_config.state_dir, "spool", name, "new")


def _spooled(daemon_config):
    d = _spool_dir(daemon_config)
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def _wait(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached within {timeout} s")


def _event_uid(req):
    return req.json()["data"]["uid"]


def test_signed_post_with_the_message(setup, mail_user, http_receiver, daemon_config):
    d = setup(header="Authorization: Bearer xyz")
    _idle(d, mail_user)
    uid = mail_user.deliver(subject="Webhook über alles", from_="Jörg <joerg@example.com>")
    req = http_receiver.wait_for(1)[0]
    assert req.method == "POST" and req.path == "/hook"
    assert req.verify(SECRET, tolerance=60), req.headers
    doc = req.json()
    assert doc["type"] == "mail.received"
    assert doc["data"]["uid"] == uid
    assert doc["data"]["subject"] == "Webhook über alles"
    assert doc["data"]["from"] == {"name": "Jörg", "address": "joerg@example.com"}
    assert req.header("webhook-id") == doc["data"]["id"]
    assert req.header("webhook-id").startswith("msg_")
    assert req.header("content-type") == "application/json"
    assert req.header("user-agent").startswith("imapidled/")
    assert req.header("authorization") == "Bearer xyz"
    _wait(lambda: not _spooled(daemon_config), what="an empty spool")
    assert d.running


def test_retry_after_500_same_id_new_signature(setup, mail_user, http_receiver):
    http_receiver.respond(500, body="try later")
    d = setup()
    _idle(d, mail_user)
    mail_user.deliver(subject="retry me")
    first, second = http_receiver.wait_for(2, timeout=15)[:2]
    assert first.header("webhook-id") == second.header("webhook-id")
    assert int(second.header("webhook-timestamp")) > int(first.header("webhook-timestamp"))
    assert first.header("webhook-signature") != second.header("webhook-signature")
    assert first.verify(SECRET) and second.verify(SECRET)
    time.sleep(1.5)
    assert len(http_receiver.requests) == 2  # delivered: not sent again
    d.wait_for_log(r"webhook hook: delivery failed \(HTTP 500\)")


def test_retry_after_header_is_honoured(setup, mail_user, http_receiver):
    http_receiver.respond(429, retry_after=3)
    d = setup()
    _idle(d, mail_user)
    mail_user.deliver(subject="slow down")
    first, second = http_receiver.wait_for(2, timeout=15)[:2]
    assert second.time - first.time >= 2.9


def test_receiver_down_then_up_delivers_everything_in_order(
        setup, dovecot, mail_user, http_receiver, daemon_config):
    dovecot.create_mailbox(mail_user.name, "Other")
    d = setup(mailboxes=["INBOX", "Other"], max_in_flight=4)
    _idle(d, mail_user, count=2)
    http_receiver.down()
    sent = {"INBOX": [], "Other": []}
    for i in range(6):
        for mb in sent:
            sent[mb].append(mail_user.deliver(mb, subject=f"{mb} {i}"))
    _wait(lambda: len(_spooled(daemon_config)) == 12, timeout=20, what="12 spooled events")
    time.sleep(2)
    http_receiver.up()
    # The first retries wait at most 2-4 s; later ones are woken by the first success.
    _wait(lambda: not _spooled(daemon_config), timeout=60, what="an empty spool")
    ok = [r for r in http_receiver.requests]
    got = {"INBOX": [], "Other": []}
    for r in ok:
        doc = r.json()
        got[doc["data"]["mailbox"]].append(doc["data"]["uid"])
    assert got == sent
    assert d.running


def test_sigkill_before_post_then_restart_delivers_once(
        setup, mail_user, http_receiver, daemon_config, imapidled):
    d = setup()
    _idle(d, mail_user)
    http_receiver.down()
    uid = mail_user.deliver(subject="survive a SIGKILL")
    d.wait_for_log(r"webhook hook: delivery failed", timeout=15)
    assert len(_spooled(daemon_config)) == 1
    d.send_signal(signal.SIGKILL)
    d.wait()
    http_receiver.up()
    d2 = imapidled()
    d2.wait_for_log(r"webhook hook: 1 undelivered events in the spool")
    req = http_receiver.wait_for(1, timeout=15)[0]
    assert _event_uid(req) == uid and req.verify(SECRET)
    _wait(lambda: not _spooled(daemon_config), what="an empty spool")
    _idle(d2, mail_user)
    sentinel = mail_user.deliver(subject="sentinel")
    _wait(lambda: any(_event_uid(r) == sentinel for r in http_receiver.requests))
    ids = [r.header("webhook-id") for r in http_receiver.requests]
    assert len(ids) == len(set(ids)) == 2, ids


def _state_uid(daemon_config, account="a", mailbox="INBOX"):
    path = os.path.join(daemon_config.state_dir, "mailboxes", f"{account}@{mailbox}.state")
    with open(path) as f:
        return int(re.search(r"^uid (\d+)$", f.read(), re.M).group(1))


def test_spool_full_then_a_seen_message_the_state_stays_before_held_mail(
        setup, mail_user, http_receiver, daemon_config, imapidled):
    """A message read elsewhere (skipped) must not move the state past mail the webhook
    still holds unaccepted: after a crash, the held message is reported again."""
    daemon_config.sections["imapidled"]["log_level"] = "debug"  # to see the skip
    http_receiver.down()
    d = setup(spool_max="600")  # room for one event (about 420 bytes), not two
    _idle(d, mail_user)
    first = mail_user.deliver(subject="spooled")
    _wait(lambda: len(_spooled(daemon_config)) == 1, what="one spooled event")
    _wait(lambda: _state_uid(daemon_config) == first, what="the state at the spooled event")
    held = mail_user.deliver(subject="held")
    d.wait_for_log(r"webhook hook: spool full")
    _idle(d, mail_user)
    seen = mail_user.deliver(subject="read elsewhere", flags=("\\Seen",))
    d.wait_for_log(rf"a/INBOX: UID {seen} is already \\Seen, skipping")
    time.sleep(0.5)
    assert _state_uid(daemon_config) == first
    d.send_signal(signal.SIGKILL)
    d.wait()
    http_receiver.up()
    d2 = imapidled()
    _wait(lambda: {_event_uid(r) for r in http_receiver.requests} >= {first, held},
          timeout=20, what="the spooled and the held event delivered")
    assert seen not in {_event_uid(r) for r in http_receiver.requests}
    assert d2.running


def test_400_is_final_and_logged(setup, mail_user, http_receiver, daemon_config):
    http_receiver.respond(400, body="bad payload: \x1b[31mno\nthanks")
    d = setup()
    _idle(d, mail_user)
    mail_user.deliver(subject="refused")
    http_receiver.wait_for(1)
    m = d.wait_for_log(r"webhook hook: the receiver refused msg_\w+ with HTTP 400.*answer: "
                       r"\"(.*)\"")
    assert m.group(1) == "bad payload: ?[31mno?thanks"
    time.sleep(2.5)
    assert len(http_receiver.requests) == 1
    assert not _spooled(daemon_config)


def test_410_disables_the_sink_other_sinks_go_on(
        setup, mail_user, http_receiver, daemon_config, event_recorder, imapidled):
    http_receiver.set_default(410)
    setup(start=False)
    event_recorder.configure(daemon_config)
    d = event_recorder.attach(imapidled())
    _idle(d, mail_user)
    first = mail_user.deliver(subject="gone 1")
    d.wait_for_log(r"webhook hook: the receiver answered 410 Gone: this webhook is disabled")
    second = mail_user.deliver(subject="gone 2")
    event_recorder.wait_for_uid("a", "INBOX", second)
    event_recorder.wait_for_uid("a", "INBOX", first)
    time.sleep(1.5)
    assert len(http_receiver.requests) == 1  # no retry, nothing new sent
    assert len(_spooled(daemon_config)) == 2  # both kept for after a reload
    assert len(re.findall(r"410 Gone", d.log_text())) == 1


def test_redirect_is_not_followed(setup, mail_user, http_receiver, daemon_config):
    http_receiver.respond(301, headers={"Location": http_receiver.url("/elsewhere")})
    d = setup()
    _idle(d, mail_user)
    mail_user.deliver(subject="moved")
    http_receiver.wait_for(1)
    d.wait_for_log(r"refused msg_\w+ with HTTP 301 \(redirects are not followed")
    time.sleep(1.5)
    assert [r.path for r in http_receiver.requests] == ["/hook"]
    assert not _spooled(daemon_config)


def test_latency_append_to_webhook(setup, mail_user, http_receiver):
    d = setup()
    _idle(d, mail_user)
    lat = []
    for i in range(21):
        t0 = time.monotonic()
        uid = mail_user.deliver(subject=f"latency {i}")
        _wait(lambda: any(_event_uid(r) == uid for r in http_receiver.requests), timeout=10)
        req = next(r for r in http_receiver.requests if _event_uid(r) == uid)
        lat.append(req.time - t0)
        time.sleep(0.7)
    med = statistics.median(lat)
    print(f"\nAPPEND -> webhook received: median {med * 1000:.0f} ms, "
          f"min {min(lat) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms (n={len(lat)})")
    assert med < 1.5
