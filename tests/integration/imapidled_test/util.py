"""Process, port and temp-dir helpers shared by every test part.

Every part the harness starts registers itself here, so that a failing test can show the
logs of whatever was running and so that an interrupted run (Ctrl-C, a crash in a fixture)
still kills every process it started (atexit).
"""
import atexit
import errno
import os
import shutil
import signal
import socket
import tempfile
import time

# Parts that are running now: objects with .name, .close() and .failure_report() -> str.
_live = []


def register(part):
    _live.append(part)


def unregister(part):
    try:
        _live.remove(part)
    except ValueError:
        pass


def live_parts():
    return list(_live)


@atexit.register
def _close_everything():
    for part in reversed(list(_live)):
        try:
            part.close()
        except Exception:  # noqa: BLE001 - last-ditch cleanup, keep going
            pass


def make_tmpdir(prefix, mode=0o755):
    """A private temp dir outside pytest's tmp_path.

    pytest's base dir is 0700 when run as root, which Dovecot's unprivileged mail and login
    processes cannot traverse; this one is world-traversable (the secrets inside are test
    fixtures) and honours IMAPIDLED_TEST_TMPDIR."""
    base = os.environ.get("IMAPIDLED_TEST_TMPDIR") or None
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    os.chmod(path, mode)
    return path


def remove_tree(path):
    if os.environ.get("IMAPIDLED_TEST_KEEP"):
        return
    shutil.rmtree(path, ignore_errors=True)


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def can_bind(host):
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def wait_port(host, port, timeout=10.0, alive=None):
    """Poll until host:port accepts a TCP connection. alive() -> bool aborts early."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} did not accept connections "
                                   f"within {timeout} s ({e})") from None
        if alive is not None and not alive():
            raise RuntimeError(f"process died before {host}:{port} accepted connections")
        time.sleep(0.005)


def _stat_fields(pid):
    """(state, ppid, pgrp) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data.rsplit(b")", 1)[1].split()
    return rest[0].decode(), int(rest[1]), int(rest[2])


def pid_alive(pid):
    """True while pid is a running (not zombie) process. Orphaned zombies are not reaped
    in every container (PID 1 may not be an init), so a zombie counts as gone."""
    st = _stat_fields(pid)
    return st is not None and st[0] != "Z"


def _all_pids():
    for d in os.listdir("/proc"):
        if d.isdigit():
            yield int(d)


def group_members(pgid):
    """Live (non-zombie) processes whose process group is pgid."""
    out = []
    for pid in _all_pids():
        st = _stat_fields(pid)
        if st is not None and st[2] == pgid and st[0] != "Z":
            out.append(pid)
    return out


def children_of(ppid):
    out = []
    for pid in _all_pids():
        st = _stat_fields(pid)
        if st is not None and st[1] == ppid and st[0] != "Z":
            out.append(pid)
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def kill_pid(pid, sig):
    try:
        os.kill(pid, sig)
        return True
    except OSError as e:
        if e.errno != errno.ESRCH:
            raise
        return False


def kill_group(pgid, sig=signal.SIGKILL):
    try:
        os.killpg(pgid, sig)
    except OSError as e:
        if e.errno not in (errno.ESRCH, errno.EPERM):
            raise


def wait_gone(pids, timeout=5.0):
    """Wait until none of pids is alive; return the ones still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if pid_alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.005)


def stop_popen(proc, timeout=5.0, sig=signal.SIGTERM):
    """Stop a child by PID: sig, then SIGKILL after timeout. Returns its exit status."""
    if proc.poll() is None:
        kill_pid(proc.pid, sig)
        try:
            proc.wait(timeout)
        except Exception:  # subprocess.TimeoutExpired
            kill_pid(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def tail(path, lines=60):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return f"({path}: {e.strerror})"
    text = data.decode(errors="replace").splitlines()
    return "\n".join(text[-lines:])
