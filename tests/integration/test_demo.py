"""`make demo` cannot rot: scripts/demo.py runs as a subprocess, as `make demo` runs it, and its
summary must say that every sink delivered every sample mail.

Three runs: without a desktop session (the demo starts its own bus and a stand-in notification
server), inside a "desktop session" (a session bus with a notification server already on it,
as a user's desktop has: the demo must send its popups there), and interrupted with Ctrl-C
(everything it started must be gone afterwards).
"""
import os
import re
import signal
import subprocess
import time

import pytest

from imapidled_test import bus, util

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEMO = os.path.join(REPO, "scripts", "demo.py")
SAMPLES = 3
TIMEOUT = 60


def demo_env(tmpdir, **extra):
    env = dict(os.environ, IMAPIDLED_TEST_TMPDIR=tmpdir, TMPDIR=tmpdir, PYTHONUNBUFFERED="1")
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env.pop("IMAPIDLED_TEST_KEEP", None)
    env.update(extra)
    return env


@pytest.fixture
def tmpdir_():
    """A world-traversable temp dir for everything the demo makes (Dovecot's unprivileged
    processes must reach their files); it must be empty again when the demo is done."""
    d = util.make_tmpdir("imapidled-test-demo-")
    yield d
    util.remove_tree(d)


def run_demo(env):
    r = subprocess.run(["/usr/bin/python3", DEMO], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"demo exited with {r.returncode}:\n{out}"
    return r.stdout


def summary(out):
    assert "\nSummary\n" in out, out
    return out.split("\nSummary\n", 1)[1]


def assert_common(out, tmpdir):
    s = summary(out)
    assert re.search(rf"mails delivered: {SAMPLES}, in INBOX: {SAMPLES}, reported by imapidled: "
                     rf"{SAMPLES} ", s), out
    assert re.search(rf"^  exec sink: +{SAMPLES} runs of the command", s, re.M), out
    assert re.search(rf"^  webhook sink: +{SAMPLES} POSTs to http://127\.0\.0\.1:\d+/hook, "
                     rf"{SAMPLES} of {SAMPLES} signatures verified", s, re.M), out
    assert "SIGTERM: clean exit (status 0)" in s, out
    assert "daemon warnings" not in s, out
    assert os.listdir(tmpdir) == [], f"left behind: {os.listdir(tmpdir)}"


def test_demo_without_a_desktop_session(tmpdir_):
    out = run_demo(demo_env(tmpdir_))
    assert_common(out, tmpdir_)
    assert "DBUS_SESSION_BUS_ADDRESS is not set" in out, out
    assert re.search(rf"^  desktop sink: +{SAMPLES} Notify calls recorded by the stand-in "
                     r"notification server", summary(out), re.M), out
    for subject in ("Lunch on Friday?", "Grüße aus Köln ✓", "[build] main is green again"):
        assert f"body {subject!r}" in out, out


def test_demo_uses_the_sessions_notification_server(tmpdir_):
    session = bus.SessionBus().start()
    server = bus.NotificationDaemon(session)
    try:
        server.start()
        out = run_demo(demo_env(tmpdir_, DBUS_SESSION_BUS_ADDRESS=session.address))
        assert_common(out, tmpdir_)
        assert "found: mock-notify 1.0 (test vendor) on your session bus" in out, out
        assert re.search(rf"^  desktop sink: +{SAMPLES} popups sent to your desktop's "
                         r"mock-notify 1\.0 \(test vendor\), which accepted each \(ids 1, 2, 3\)",
                         summary(out), re.M), out
        got = server.notifications()
        assert [(n.app_name, n.summary, n.body) for n in got] == [
            ("imapidled", "Alice Example", "Lunch on Friday?"),
            ("imapidled", "Jörg Müller", "Grüße aus Köln ✓"),
            ("imapidled", "CI", "[build] main is green again")], out
    finally:
        server.close()
        session.close()


def _processes_mentioning(text):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append((int(pid), cmd))
    return found


def test_demo_ctrl_c_stops_everything(tmpdir_):
    proc = subprocess.Popen(["/usr/bin/python3", DEMO], env=demo_env(tmpdir_),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO)
    out = []
    try:
        deadline = time.monotonic() + TIMEOUT
        for line in proc.stdout:
            out.append(line)
            if re.match(r"\[\d+\] Delivering", line):
                break
            assert time.monotonic() < deadline, "".join(out)
        text = "".join(out)
        daemon_pid = int(re.search(r"^    pid (\d+); connected", text, re.M).group(1))
        proc.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C does to the demo
        rest, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(out) + rest
    assert proc.returncode == 130, text
    assert "everything it started has been stopped" in text, text
    assert not os.path.exists(f"/proc/{daemon_pid}") or \
        "imapidled" not in open(f"/proc/{daemon_pid}/cmdline").read(), text
    # Dovecot's master, dbus-daemon and dbusmock name files under tmpdir_ on their command line.
    assert _processes_mentioning(tmpdir_) == [], text
    assert os.listdir(tmpdir_) == [], f"left behind: {os.listdir(tmpdir_)}"
