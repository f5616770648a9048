"""A private D-Bus session bus and a mock notification server (python-dbusmock) on it.

The bus has no service directories: nothing is ever activated, so a stopped notification
server stays missing (the caller gets org.freedesktop.DBus.Error.ServiceUnknown).
"""
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import time

import dbus

from . import util

DBUS_DAEMON = os.environ.get("IMAPIDLED_TEST_DBUS_DAEMON", "/usr/bin/dbus-daemon")

NOTIFY_NAME = "org.freedesktop.Notifications"
NOTIFY_PATH = "/org/freedesktop/Notifications"
NOTIFY_IFACE = "org.freedesktop.Notifications"
MOCK_IFACE = "org.freedesktop.DBus.Mock"

DEFAULT_CAPABILITIES = "actions body body-markup icon-static persistence"

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def to_py(v):
    """dbus-python values as plain Python ones (str, int, bool, float, list, dict, tuple)."""
    if isinstance(v, dbus.Boolean):
        return bool(v)
    if isinstance(v, (dbus.String, dbus.ObjectPath, dbus.Signature)):
        return str(v)
    if isinstance(v, (dbus.Byte, dbus.Int16, dbus.Int32, dbus.Int64, dbus.UInt16,
                      dbus.UInt32, dbus.UInt64)):
        return int(v)
    if isinstance(v, dbus.Double):
        return float(v)
    if isinstance(v, dbus.Dictionary):
        return {to_py(k): to_py(x) for k, x in v.items()}
    if isinstance(v, dbus.Struct):
        return tuple(to_py(x) for x in v)
    if isinstance(v, dbus.Array):
        return [to_py(x) for x in v]
    if isinstance(v, (bytes, dbus.ByteArray)):
        return bytes(v)
    return v


class SessionBus:
    """dbus-daemon --session --nofork on a private socket; `address` goes into the
    daemon's DBUS_SESSION_BUS_ADDRESS. Stopped by PID; stop() then start() is a bus restarted
    at the same socket path."""

    name = "dbus-daemon"

    def __init__(self):
        self.dir = util.make_tmpdir("imapidled-bus-", mode=0o700)
        self.socket_path = os.path.join(self.dir, "bus")
        self.config_path = os.path.join(self.dir, "session.conf")
        with open(self.config_path, "w") as f:
            f.write(_BUS_CONFIG.format(socket=self.socket_path))
        self.proc = None
        self.address = None
        self._conn = None

    def start(self, timeout=10.0):
        # stderr to a file: as root it complains it cannot raise its fd limit (harmless).
        err = open(os.path.join(self.dir, "dbus-daemon.stderr"), "ab")
        try:
            self.proc = subprocess.Popen(
                [DBUS_DAEMON, f"--config-file={self.config_path}", "--nofork", "--nopidfile",
                 "--print-address=1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True)
        finally:
            err.close()
        util.register(self)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line:
            self.close()
            raise RuntimeError("dbus-daemon printed no address")
        self.address = line
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def path_address(self):
        """The socket alone, as a systemd user session sets DBUS_SESSION_BUS_ADDRESS. The
        printed `address` also names this daemon's guid, which a client checks: given it,
        a client refuses a bus restarted at the same path."""
        return f"unix:path={self.socket_path}"

    def env(self):
        return {"DBUS_SESSION_BUS_ADDRESS": self.address}

    def connection(self):
        """A blocking connection from the test process (no main loop needed)."""
        if self._conn is None:
            self._conn = dbus.bus.BusConnection(self.address)
        return self._conn

    def name_has_owner(self, name):
        return bool(self.connection().name_has_owner(name))

    def wait_for_name(self, name, present=True, timeout=10.0, alive=None):
        deadline = time.monotonic() + timeout
        while self.name_has_owner(name) != present:
            if alive is not None and not alive():
                raise RuntimeError(f"owner of {name} died before it appeared on the bus")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} {'never appeared' if present else 'stayed'} on the "
                                   f"bus after {timeout} s")
            time.sleep(0.01)

    def stop(self, sig=signal.SIGTERM):
        """Stop the dbus-daemon by PID, keeping its directory for a start() at the same path.
        SIGTERM removes the socket; SIGKILL is a crash: the socket stays, refusing, and
        nobody on the bus is told that anyone left. Every connection to it is gone, the
        servers' too (a NotificationDaemon needs restart() on the new bus)."""
        util.unregister(self)
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001
                pass
            self._conn = None
        if self.proc is not None:
            util.stop_popen(self.proc, sig=sig)
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None
        self.address = None

    def close(self):
        self.stop()
        util.remove_tree(self.dir)

    def failure_report(self):
        return ""


@dataclasses.dataclass
class Notification:
    """One Notify call as the server received it. id is what the server answered."""
    id: int
    app_name: str
    replaces_id: int
    icon: str
    summary: str
    body: str
    actions: list
    hints: dict
    expire_timeout: int
    timestamp: float

    @property
    def action_map(self):
        """{key: label} from the flat [key, label, key, label, ...] list."""
        return dict(zip(self.actions[::2], self.actions[1::2]))


class NotificationDaemon:
    """python-dbusmock's notification_daemon template, started on a SessionBus.

    Its Notify returns replaces_id when that is non-zero, else 1, 2, 3, ... from start-up; the
    ids in notifications() are reconstructed the same way from every call since start()."""

    name = "notification-daemon"

    def __init__(self, bus, capabilities=DEFAULT_CAPABILITIES):
        self.bus = bus
        self.capabilities = capabilities
        self.proc = None
        self.log_path = os.path.join(bus.dir, "dbusmock.log")

    def start(self, capabilities=None, timeout=10.0):
        if capabilities is not None:
            self.capabilities = capabilities
        params = {"capabilities": self.capabilities} if self.capabilities is not None else {}
        env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=self.bus.address)
        log = open(os.path.join(self.bus.dir, "dbusmock.stderr"), "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dbusmock", "--template", "notification_daemon",
                 "-p", json.dumps(params), "-l", self.log_path],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True)
        finally:
            log.close()
        util.register(self)
        self.bus.wait_for_name(NOTIFY_NAME, timeout=timeout,
                               alive=lambda: self.proc.poll() is None)
        # The template declares CloseNotification(i); the spec says (u), which is what a
        # real client sends. Reason 3: closed by a call to CloseNotification.
        self._mock().AddMethod(NOTIFY_IFACE, "CloseNotification", "u", "",
                               'self.EmitSignal("", "NotificationClosed", "uu", [args[0], 3])')
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _obj(self):
        return self.bus.connection().get_object(NOTIFY_NAME, NOTIFY_PATH)

    def _mock(self):
        return dbus.Interface(self._obj(), MOCK_IFACE)

    def stop(self):
        """Kill the server and wait until its name has left the bus."""
        if self.proc is not None:
            util.stop_popen(self.proc)
            self.proc = None
            self.bus.wait_for_name(NOTIFY_NAME, present=False)

    def restart(self, capabilities=None):
        self.stop()
        return self.start(capabilities)

    def close(self):
        util.unregister(self)
        if self.proc is not None:
            util.stop_popen(self.proc)
            self.proc = None

    def failure_report(self):
        return ""

    # -- what it received ----------------------------------------------------------------

    def calls(self, method=None):
        """[(timestamp, method, args)] of every call since start(), args as plain Python."""
        out = []
        for ts, name, args in self._mock().GetCalls():
            if method is None or str(name) == method:
                out.append((float(ts), str(name), [to_py(a) for a in args]))
        return out

    def notifications(self, since=0):
        """The Notify calls since start() as Notification objects (from index since)."""
        out, next_id = [], 1
        for ts, _, a in self.calls("Notify"):
            if a[1]:
                nid = a[1]
            else:
                nid, next_id = next_id, next_id + 1
            out.append(Notification(nid, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], ts))
        return out[since:]

    def closed_ids(self):
        """The ids of every CloseNotification call since start(), in order."""
        return [a[0] for _, _, a in self.calls("CloseNotification")]

    def wait_for_closed(self, notification_id, timeout=10.0):
        """Wait until a CloseNotification call closed notification_id."""
        deadline = time.monotonic() + timeout
        while notification_id not in self.closed_ids():
            if time.monotonic() > deadline:
                raise TimeoutError(f"notification {notification_id} not closed within "
                                   f"{timeout} s; closed: {self.closed_ids()}")
            time.sleep(0.02)

    def wait_for_call(self, method, timeout=10.0):
        """Wait until method was called since start() (GetCapabilities: a client is there and
        its popups are about to be sent); returns the first call's (timestamp, args)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.calls(method)
            if got:
                return got[0][0], got[0][2]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} call within {timeout} s")
            time.sleep(0.02)

    def mark(self):
        """How many notifications there are now: pass it as since= to see only newer ones."""
        return len(self.notifications())

    def wait_for_notifications(self, count=1, timeout=10.0, since=0):
        """Wait until at least count Notify calls arrived (after since); returns them."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.notifications(since)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(got)} of {count} notifications after {timeout} s: "
                                   f"{got}")
            time.sleep(0.02)

    # -- what it sends -------------------------------------------------------------------

    def emit(self, name, signature, args):
        self._mock().EmitSignal(NOTIFY_IFACE, name, signature, args)

    def emit_action_invoked(self, notification_id, action_key):
        self.emit("ActionInvoked", "us", [dbus.UInt32(notification_id), action_key])

    def emit_activation_token(self, notification_id, token):
        self.emit("ActivationToken", "us", [dbus.UInt32(notification_id), token])

    def emit_closed(self, notification_id, reason=2):
        """NotificationClosed; reason 1 expired, 2 dismissed, 3 CloseNotification, 4 other."""
        self.emit("NotificationClosed", "uu", [dbus.UInt32(notification_id),
                                               dbus.UInt32(reason)])

    def set_capabilities(self, capabilities):
        """Change what GetCapabilities answers from now on (a space-separated string)."""
        self.capabilities = capabilities
        self._mock().AddMethod(NOTIFY_IFACE, "GetCapabilities", "", "as",
                               f"ret = {capabilities.split()!r}")

    def notify(self, summary, body="", app_name="harness", replaces_id=0, icon="",
               actions=(), hints=None, expire_timeout=-1):
        """Send a Notify from the test process (to check the mock itself); returns the id."""
        iface = dbus.Interface(self._obj(), NOTIFY_IFACE)
        return int(iface.Notify(app_name, dbus.UInt32(replaces_id), icon, summary, body,
                                dbus.Array(list(actions), signature="s"),
                                dbus.Dictionary(hints or {}, signature="sv"),
                                dbus.Int32(expire_timeout)))
