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
