"""The system side of a desktop, faked: a private *system* bus with a mock logind on it (to
announce a suspend and a resume), and a TCP proxy that can cut its connections silently, the
way a suspend or a roaming laptop loses them (no FIN, no RST: the packets just stop)."""
import os
import select
import socket
import subprocess
import sys
import threading

import dbus

from . import bus, util

LOGIND_NAME = "org.freedesktop.login1"
LOGIND_PATH = "/org/freedesktop/login1"
LOGIND_IFACE = "org.freedesktop.login1.Manager"

_SYSTEM_BUS_CONFIG = bus._BUS_CONFIG.replace("<type>session</type>", "<type>system</type>")


class SystemBus(bus.SessionBus):
    """A dbus-daemon of type system on a private socket; `env()` points
    DBUS_SYSTEM_BUS_ADDRESS at it. Stopped by PID."""

    name = "dbus-daemon (system)"

    def __init__(self):
        super().__init__()
        with open(self.config_path, "w") as f:
            f.write(_SYSTEM_BUS_CONFIG.format(socket=self.socket_path))

    def env(self):
        return {"DBUS_SYSTEM_BUS_ADDRESS": self.address}


class Logind:
    """python-dbusmock's logind template on a SystemBus."""

    name = "logind-mock"

    def __init__(self, system_bus):
        self.bus = system_bus
        self.proc = None

    def start(self, timeout=10.0):
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.bus.address)
        log = open(os.path.join(self.bus.dir, "logind-mock.stderr"), "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dbusmock", "--system", "--template", "logind"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True)
        finally:
            log.close()
        util.register(self)
        self.bus.wait_for_name(LOGIND_NAME, timeout=timeout,
                               alive=lambda: self.proc.poll() is None)
        return self

    def emit_prepare_for_sleep(self, going):
        obj = self.bus.connection().get_object(LOGIND_NAME, LOGIND_PATH)
        dbus.Interface(obj, bus.MOCK_IFACE).EmitSignal(LOGIND_IFACE, "PrepareForSleep", "b",
                                                       [dbus.Boolean(going)])

    def match_rules(self):
        """The match rules clients have registered on the bus (to know the daemon listens)."""
        obj = self.bus.connection().get_object("org.freedesktop.DBus", "/org/freedesktop/DBus")
        stats = dbus.Interface(obj, "org.freedesktop.DBus.Debug.Stats")
        try:
            rules = stats.GetAllMatchRules()
        except dbus.DBusException:
            return None
        return [str(r) for v in rules.values() for r in v]

    def close(self):
        util.unregister(self)
        if self.proc is not None:
            util.stop_popen(self.proc)
            self.proc = None

    def failure_report(self):
        return ""


class TcpProxy:
    """listen_host:port (127.0.0.1 by default) forwarding to (host, port). cut() makes every connection open now go
    silent in both directions while staying open; later connections forward normally."""

    name = "tcp-proxy"

    def __init__(self, target_host, target_port, listen_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((listen_host, 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.host = listen_host
        self.connections = 0
        self._pairs = []           # [(client, upstream, state)] state: {"cut": bool}
        self._lock = threading.Lock()
        self._closing = False
        self._threads = []

    def start(self):
        t = threading.Thread(target=self._accept, daemon=True, name=f"proxy:{self.port}")
        t.start()
        self._threads.append(t)
        util.register(self)
        return self

    def _accept(self):
        while not self._closing:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            state = {"cut": False}
            with self._lock:
                self._pairs.append((c, u, state))
                self.connections += 1
            t = threading.Thread(target=self._pump, args=(c, u, state), daemon=True)
            t.start()
            self._threads.append(t)

    def _pump(self, c, u, state):
        peer = {c: u, u: c}
        try:
            while not self._closing and not state["cut"]:
                ready, _, _ = select.select([c, u], [], [], 0.1)
                if state["cut"]:
                    break
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return self._close(c, u)
                    peer[s].sendall(data)
        except OSError:
            self._close(c, u)
        # Cut: the sockets stay open and nothing moves until close().

    @staticmethod
    def _close(*socks):
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    def cut(self):
        """Silence every connection open now; returns how many."""
        with self._lock:
            for _, _, state in self._pairs:
                state["cut"] = True
            return len(self._pairs)

    def endpoint(self, tls="implicit"):
        return self.host, self.port

    def close(self):
        util.unregister(self)
        self._closing = True
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        with self._lock:
            for c, u, _ in self._pairs:
                self._close(c, u)
        for t in self._threads:
            t.join(2)

    def failure_report(self):
        return f"--- tcp proxy 127.0.0.1:{self.port} -> {self.target}: {self.connections} " \
               f"connections ---"
