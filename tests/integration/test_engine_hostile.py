"""imapidled against a hostile or broken IMAP server (imapidled_test/fakeserver.py).

One row per class of misbehaviour. Every row asserts that the daemon survives it (still
running; the imapidled fixture fails the test on any sanitizer report), logs an error that
names the problem, never sends the password where it must not, and then either reconnects
(a later connection gets a well-behaved server and reaches IDLE) or, for the STARTTLS
downgrade cases, gives up for good and says so.
"""
import os
import re
import time

import pytest

from imapidled_test import fakeserver
from imapidled_test.fakeserver import Session

PASSWORD = "Fake-s3cret-PW"
USER = "victim@example.com"
MiB = 1024 * 1024


# -- misbehaving sessions --------------------------------------------------------------------

class Garbage(Session):
    def greet(self):
        self.send(b"* OK fake\r\n")
        self.read_command()  # CAPABILITY
        self.send(b"\x00\x01\xff\xfe\x80 garbage ((((\x1b[31m\r\n")


class EndlessLine(Session):
    """A line that never ends: 8 MiB without CRLF, sent until the client hangs up."""
    total = 8 * MiB

    def greet(self):
        self.send(b"* OK fake\r\n")
        self.read_command()  # CAPABILITY
        chunk = b"* CAPABILITY " + b"X" * (MiB - 13)
        self.sent_bytes = 0
        while self.sent_bytes < self.total:
            self.send(chunk)
            self.sent_bytes += len(chunk)
            chunk = b"Y" * MiB
        self.readline()  # wait for the client to hang up


class HugeLiteral(Session):
    """New mail during IDLE, then a FETCH announcing a 2 GiB literal and nothing after it."""
    uidnext = 2

    def on_idle(self):
        self.send(b"* 2 EXISTS\r\n")

    def cmd_UID_FETCH(self, tag, args):
        self.send(b"* 2 FETCH (UID 2 BODY[] {2147483648}\r\n")
        self.literal_sent_at = time.monotonic()
        self.readline()  # nothing more: the client must drop us by itself


class NoStarttls(Session):
    starttls = False


class StarttlsNo(Session):
    def cmd_STARTTLS(self, tag, args):
        self.send(f"{tag} NO [UNAVAILABLE] not today\r\n")


class PreauthOnStarttls(Session):
    greeting = b"* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS IDLE] already logged in\r\n"


class InjectAfterStarttls(Session):
    """The STARTTLS OK carries plaintext behind it (CVE-2011-0411's mirror image)."""
    def cmd_STARTTLS(self, tag, args):
        self.send(f"{tag} OK Begin TLS negotiation now\r\n"
                  "* OK [ALERT] INJECTED-ALERT\r\n"
                  "* CAPABILITY IMAP4rev1 AUTH=PLAIN LOGINDISABLED INJECTED\r\n"
                  "* BYE INJECTED-BYE\r\n")
        self.plaintext = bytes(self.received)
        self.upgrade()


class UnknownTag(Session):
    def cmd_CAPABILITY(self, tag, args):
        self.send(f"* CAPABILITY {self.capabilities()}\r\nzz99 OK done\r\n")


class UidZero(Session):
    def on_idle(self):
        self.send(b"* 2 EXISTS\r\n")

    def cmd_UID_FETCH(self, tag, args):
        self.send(fakeserver.fetch_response(2, 0, subject="uid zero") +
                  f"{tag} OK Fetch completed\r\n".encode())


# (id, session, tls, error regex, final?)
ROWS = [
    ("garbage", Garbage, "none", r"protocol error", False),
    ("endless-line", EndlessLine, "none", r"line of more than \d+ bytes", False),
    ("2GiB-literal", HugeLiteral, "none", r"literal of 2147483648 bytes exceeds limit", False),
    ("unknown-tag", UnknownTag, "none", r'response for unknown tag "zz99"', False),
    ("uid-zero", UidZero, "none", r"malformed FETCH response", False),
    ("starttls-not-offered", NoStarttls, "starttls", r"does not offer STARTTLS", True),
    ("starttls-refused", StarttlsNo, "starttls", r"refused STARTTLS", True),
    ("preauth-on-starttls", PreauthOnStarttls, "starttls",
     r"PREAUTH on an unencrypted connection", True),
]


def _config(daemon_config, srv, tls, **extra):
    user = srv.add_user(USER, PASSWORD)
    daemon_config.account("fake", srv, user, tls=tls, password_via="value",
                          connect_timeout="2s", reply_timeout="10s", **extra)
    return daemon_config


def _rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.parametrize("session,tls,error,final",
                         [pytest.param(*r[1:], id=r[0]) for r in ROWS])
def test_hostile_server(fake_imap, daemon_config, imapidled, session, tls, error, final):
    srv = fake_imap(session, then=Session)
    d = imapidled(_config(daemon_config, srv, tls))
    first = srv.wait_for_connections(1)
    if session is EndlessLine:
        rss_before = _rss_kib(d.pid)  # as soon as it connected, before the flood
    m = d.wait_for_log(r"fake/INBOX: .*" + error, timeout=10)
    line = m.string
    assert d.running, d.log_tail()

    if session is HugeLiteral:
        srv.wait_closed(first, timeout=5)
        # Dropped on the announcement, not after the 10 s reply timeout.
        assert "no answer" not in line
    if session is EndlessLine:
        hwm = _rss_kib(d.pid, "VmHWM")
        grew = hwm - rss_before
        print(f"\nendless line: VmRSS {rss_before} KiB before, VmHWM {hwm} KiB after "
              f"({grew} KiB growth) while the server pushed {first.sent_bytes // MiB} MiB")
        assert hwm < 100 * 1024 or grew < 32 * 1024, (rss_before, hwm)
        # The first connection was dropped long before its 8 MiB were out.
        srv.wait_closed(first, timeout=5)

    if final:
        assert re.search(r"not retrying", line), line
        # Nothing secret went out, not even a login attempt.
        assert not srv.leaked(PASSWORD, USER), srv.leaked(PASSWORD, USER)
        verbs = srv.verbs(0)
        assert not {"LOGIN", "AUTHENTICATE"} & set(verbs), verbs
        assert len(srv.sessions) == 1, "a final failure must not reconnect"
    else:
        assert "reconnecting in" in line, line
        srv.wait_for_connections(2, timeout=10)
        d.wait_for_log(r"fake/INBOX: back in IDLE", timeout=10)
        assert len(srv.sessions) == 2, f"{len(srv.sessions)} connections"
    if final:
        # A retry-now would come within 1 s (the first backoff step): none may come.
        with pytest.raises(TimeoutError):
            srv.wait_for_connections(2, timeout=1.2)
    assert d.running
    assert not srv.errors, srv.errors


def test_injection_after_starttls_is_discarded(fake_imap, daemon_config, imapidled):
    """Plaintext behind the STARTTLS OK must never be read as if it came over TLS: no
    injected ALERT or BYE is acted on, no credential goes out before TLS, and the session
    carries on over TLS (or fails with a protocol error, never silently trusting it)."""
    srv = fake_imap(InjectAfterStarttls, then=Session)
    d = imapidled(_config(daemon_config, srv, "starttls"))
    first = srv.wait_for_connections(1)
    m = d.wait_for_log(r"fake/INBOX: (idle|back in IDLE|.*protocol error)", timeout=10)
    assert "INJECTED" not in d.log_text(), d.log_tail()
    assert first.tls, "the session did not upgrade"
    assert PASSWORD.encode() not in first.plaintext
    assert not {"LOGIN", "AUTHENTICATE"} & {v for _, v, _ in first.commands[:2]}
    assert m.group(1) == "idle", f"expected to carry on over TLS: {m.string}"
    # Only after TLS were credentials sent (and the post-TLS CAPABILITY was fresh).
    verbs = srv.verbs(0)
    assert verbs[:3] == ["CAPABILITY", "STARTTLS", "CAPABILITY"], verbs
    assert d.running
    assert not srv.errors, srv.errors
