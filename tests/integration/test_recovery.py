"""After an outage, the mailboxes of an account come back together: once one of them gets
through, the others stop sitting out the backoff they drew while the server was down."""
import re
import time


def test_siblings_return_when_one_gets_through(dovecot_factory, daemon_config, imapidled):
    server = dovecot_factory()
    user = server.new_user("rec")
    boxes = ["INBOX", "a", "b", "c"]
    for b in boxes[1:]:
        server.create_mailbox(user.name, b)
    cfg = daemon_config.account("work", server, user, mailboxes=boxes)
    d = imapidled(cfg)
    d.wait_for_log(r"all 4 mailboxes idle", timeout=15)

    server.stop()
    # Long enough for several failed attempts each: backoffs of up to 8-16 s are drawn.
    time.sleep(6)
    mark = d.mark()
    server.start()
    first = d.wait_for_log(r"work/\S+: back in IDLE", timeout=30, since=mark)
    t_first = time.monotonic()
    for _ in boxes[1:]:
        d.wait_for_log(r"all 4 mailboxes idle", timeout=3, since=mark)
    took = time.monotonic() - t_first
    # With each watch on its own schedule, the last one could wait many seconds more.
    assert took < 2.5, f"the last mailbox came back {took:.1f} s after the first"
    assert re.search(r"back in IDLE", first.string)


def _seconds(text):
    """ "1s500ms", "4s", "750ms", "now" -> seconds."""
    if text == "now":
        return 0.0
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|us|d|h|m|s)", text))


def test_lone_mailbox_retries_within_seconds_early_in_an_outage(dovecot_factory, daemon_config,
                                                                 imapidled):
    """A single mailbox has no sibling to call it back: for the first minute of an outage
    its retries are at most 5 s apart, so it is back soon after the server is."""
    server = dovecot_factory()
    user = server.new_user("lone")
    cfg = daemon_config.account("work", server, user)
    d = imapidled(cfg, args=("-vv",))
    d.wait_for_log(r"all 1 mailbox idle", timeout=15)

    mark = d.mark()
    server.stop()
    time.sleep(8)  # several failed attempts; uncapped, the backoff would draw 4-16 s waits
    server.start()
    t_up = time.monotonic()
    d.wait_for_log(r"work/INBOX: back in IDLE", timeout=15, since=mark)
    back = time.monotonic() - t_up

    delays = [_seconds(m) for m in re.findall(r"work/INBOX: .*; reconnecting (?:in )?(\S+)$",
                                              "\n".join(d.lines(since=mark)), re.M)]
    assert len(delays) >= 2, d.log_tail()
    assert max(delays) <= 5.0, f"retry delays during the outage: {delays}"
    assert back < 6.5, f"back in IDLE {back:.1f} s after the server"
