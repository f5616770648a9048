"""Routing: a [mailbox ACCOUNT/MAILBOX] section sends one mailbox's events to other sinks
than its account's. Real Dovecot, real daemon, two exec sinks recording what they get."""
import pytest

from imapidled_test import events


@pytest.fixture
def recorders():
    main, urgent = events.EventRecorder(sink="main"), events.EventRecorder(sink="urgent")
    try:
        yield main, urgent
    finally:
        main.close()
        urgent.close()


def test_mailbox_section_overrides_account_sinks(dovecot, mail_user, daemon_config, imapidled,
                                                 recorders):
    main, urgent = recorders
    dovecot.create_mailbox(mail_user.name, "Lists/urgent")
    cfg = daemon_config.account("work", dovecot, mail_user,
                                mailboxes=["INBOX", "Lists/urgent"])
    main.configure(cfg)  # the account's sinks: exec:main
    cfg.exec(urgent.sink, urgent.command())
    cfg.set("mailbox work/Lists/urgent", "sinks", [f"exec:{urgent.sink}"])
    d = imapidled(cfg)
    d.wait_for_log(r"all 2 mailboxes idle", timeout=15)

    uid_inbox = mail_user.deliver(subject="for the inbox")
    uid_urgent = mail_user.deliver(mailbox="Lists/urgent", subject="pager")
    main.wait_for_uid("work", "INBOX", uid_inbox)
    urgent.wait_for_uid("work", "Lists/urgent", uid_urgent)

    # Each went only where it was routed.
    assert main.received_uids("work", "Lists/urgent") == []
    assert urgent.received_uids("work", "INBOX") == []
    assert main.received_uids("work", "INBOX") == [uid_inbox]
    assert urgent.received_uids("work", "Lists/urgent") == [uid_urgent]
