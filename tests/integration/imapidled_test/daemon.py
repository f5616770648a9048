"""Running imapidled itself: a config writer, the daemon as a child process with its log
captured line by line, `imapidled check`, and an sd_notify socket."""
import os
import re
import signal
import socket
import subprocess
import threading
import time

from . import util

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))

# What a sanitizer prints when it trips (ASan, LSan, UBSan).
SANITIZER_RX = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|LeakSanitizer|"
                          r"runtime error:|UndefinedBehaviorSanitizer|WARNING: \w+Sanitizer")

PASSTHROUGH_ENV = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "ASAN_SYMBOLIZER_PATH",
                   "LLVM_SYMBOLIZER_PATH", "TZ")


def binary():
    return os.environ.get("IMAPIDLED_BIN") or os.path.join(REPO, "imapidled")


def _ini_value(v):
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v)


# Debian's libinih reads at most 199 characters a line; the daemon lets list keys repeat.
_LINE_MAX = 199


def _ini_lines(key, value):
    """key = value, with a long list spread over repeated keys."""
    if not isinstance(value, (list, tuple)):
        return [f"{key} = {_ini_value(value)}"]
    lines, cur = [], []
    for item in value:
        if cur and len(f"{key} = {_ini_value(cur + [item])}") > _LINE_MAX:
            lines.append(f"{key} = {_ini_value(cur)}")
            cur = []
        cur.append(item)
    lines.append(f"{key} = {_ini_value(cur)}")
    return lines


def write_secret(path, value):
    """A secret file, mode 0600 from the start, the value on its first line."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)
    return path


class DaemonConfig:
    """An imapidled INI file, built up section by section and written with write().

        cfg = DaemonConfig(tmp_path)
        cfg.account("work", dovecot, user, tls="starttls", sinks=["webhook:crm"])
        cfg.webhook("crm", receiver.url(), secret="whsec_...")
        path = cfg.write()
    """

    def __init__(self, directory, state_dir=None):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.path = os.path.join(self.dir, "imapidled.conf")
        self.state_dir = state_dir or os.path.join(self.dir, "state")
        self.sections = {"imapidled": {"state_dir": self.state_dir}}

    def section(self, name):
        return self.sections.setdefault(name, {})

    def set(self, section, key, value):
        """Set one key; value None removes it."""
        s = self.section(section)
        if value is None:
            s.pop(key, None)
        else:
            s[key] = value
        return self

    def account(self, name, dovecot, user, tls="implicit", host=None, port=None,
                password=None, password_via="file", ca_file=True, mailboxes=None, sinks=None,
                **extra):
        """An [account NAME] pointing at dovecot. user: a MailUser or a user name.
        password_via: file (0600 file, the default), value, command (`cat FILE`) or None.
        ca_file: True for the test CA, a path, or None/False for no tls_ca_file."""
        username = getattr(user, "name", user)
        secret = password if password is not None else dovecot.users[username]
        ep_host, ep_port = dovecot.endpoint(tls)
        s = {"host": host or ep_host, "port": port or ep_port, "tls": tls,
             "username": username}
        if tls == "none":
            s["allow_plaintext"] = True
        if ca_file is True:
            s["tls_ca_file"] = dovecot.pki.ca_file
        elif ca_file:
            s["tls_ca_file"] = ca_file
        if password_via == "file":
            s["password_file"] = write_secret(os.path.join(self.dir, f"{name}.password"), secret)
        elif password_via == "command":
            f = write_secret(os.path.join(self.dir, f"{name}.password"), secret)
            s["password_command"] = f"cat {f}"
        elif password_via == "value":
            s["password"] = secret
        if mailboxes is not None:
            s["mailboxes"] = mailboxes
        if sinks is not None:
            s["sinks"] = sinks
        s.update(extra)
        self.sections[f"account {name}"] = {k: v for k, v in s.items() if v is not None}
        return self

    def desktop(self, **keys):
        self.section("desktop").update(keys)
        return self

    def webhook(self, name, url, secret=None, **keys):
        """A [webhook NAME]; a secret is written to a 0600 file (secret_file)."""
        s = {"url": url}
        if secret is not None:
            s["secret_file"] = write_secret(os.path.join(self.dir, f"webhook-{name}.secret"),
                                            secret)
        s.update(keys)
        self.sections[f"webhook {name}"] = s
        return self

    def exec(self, name, command, **keys):
        s = {"command": command}
        s.update(keys)
        self.sections[f"exec {name}"] = s
        return self

    def text(self):
        out = []
        for name, keys in self.sections.items():
            out.append(f"[{name}]")
            for k, v in keys.items():
                out.extend(_ini_lines(k, v))
            out.append("")
        return "\n".join(out)

    def write(self, path=None):
        path = path or self.path
        with open(path, "w") as f:
            f.write(self.text())
        return path


def daemon_env(workdir, bus=None, notify_socket=None, extra=None):
    """A controlled environment: private HOME and XDG dirs under workdir, the bus if any,
    sanitizer options passed through; extra adds keys (a value of None removes one)."""
    workdir = str(workdir)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "HOME": os.path.join(workdir, "home"),
           "XDG_CONFIG_HOME": os.path.join(workdir, "xdg-config"),
           "XDG_STATE_HOME": os.path.join(workdir, "xdg-state"),
           "XDG_RUNTIME_DIR": os.path.join(workdir, "xdg-runtime")}
    for d in ("HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"):
        os.makedirs(env[d], mode=0o700, exist_ok=True)
    for k in PASSTHROUGH_ENV:
        if k in os.environ:
            env[k] = os.environ[k]
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    if bus is not None:
        env.update(bus.env())
    if notify_socket is not None:
        env["NOTIFY_SOCKET"] = notify_socket.address
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


class Daemon:
    """`imapidled --config FILE -v` as a child in its own process group, its stderr (and
    stdout) read line by line into a list and a log file."""

    name = "imapidled"

    def __init__(self, config_path, workdir, args=(), env=None, bin_path=None,
                 verbose=True):
        self.config_path = str(config_path)
        self.workdir = str(workdir)
        self.log_path = os.path.join(self.workdir, "imapidled.log")
        self.argv = [bin_path or binary(), "--config", self.config_path,
                     *(["-v"] if verbose else []), *args]
        self.env = env if env is not None else daemon_env(self.workdir)
        self.proc = None
        self._lines = []    # [(monotonic time, text)]
        self._cond = threading.Condition()
        self._reader = None
        self._eof = False

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=self.env, cwd=self.workdir, start_new_session=True)
        util.register(self)
        self._reader = threading.Thread(target=self._read, name=f"imapidled:{self.proc.pid}",
                                        daemon=True)
        self._reader.start()
        return self

    def _read(self):
        with open(self.log_path, "ab") as log:
            for raw in iter(self.proc.stdout.readline, b""):
                log.write(raw)
                log.flush()
                with self._cond:
                    self._lines.append((time.monotonic(),
                                        raw.decode(errors="replace").rstrip("\n")))
                    self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self):
        return self.proc.poll() if self.proc else None

    # -- the log ---------------------------------------------------------------------------

    def lines(self, since=0):
        with self._cond:
            return [text for _, text in self._lines[since:]]

    def timed_lines(self, since=0):
        with self._cond:
            return list(self._lines[since:])

    def log_text(self):
        return "\n".join(self.lines())

    def mark(self):
        """The number of lines so far: pass it as since= to look only at newer lines."""
        with self._cond:
            return len(self._lines)

    def wait_for_log(self, pattern, timeout=10.0, since=0):
        """Wait for a line matching the regex (searched, from line index since); returns the
        re.Match. Fails early, with the log, if the daemon exits first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = since
        with self._cond:
            while True:
                while i < len(self._lines):
                    m = rx.search(self._lines[i][1])
                    if m:
                        return m
                    i += 1
                if self._eof:
                    raise AssertionError(f"imapidled exited ({self.proc.poll()}) before logging "
                                         f"{pattern!r}:\n{self.log_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no line matching {pattern!r} within {timeout} s:\n"
                                       f"{self.log_tail()}")
                self._cond.wait(left)

    def log_tail(self, n=40):
        return "\n".join(self.lines()[-n:])

    def sanitizer_reports(self):
        """Lines where a sanitizer reported a problem (empty when clean)."""
        return [line for line in self.lines() if SANITIZER_RX.search(line)]

    # -- control ---------------------------------------------------------------------------

    def send_signal(self, sig):
        if self.running:
            os.kill(self.proc.pid, sig)

    def reload(self):
        self.send_signal(signal.SIGHUP)

    def wait(self, timeout=10.0):
        """Wait for the daemon to exit by itself; returns its exit status."""
        self.proc.wait(timeout)
        self._join_reader()
        return self.proc.returncode

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL after timeout; returns the exit status (negative: signal)."""
        if self.proc is None:
            return None
        code = util.stop_popen(self.proc, timeout)
        # Anything it spawned (exec sinks) and left behind in its process group.
        util.kill_group(self.proc.pid, signal.SIGKILL)
        self._join_reader()
        return code

    def _join_reader(self):
        if self._reader is not None:
            self._reader.join(5)
        if self.proc is not None and self.proc.stdout and not self.proc.stdout.closed:
            if self._reader is None or not self._reader.is_alive():
                self.proc.stdout.close()

    def close(self):
        util.unregister(self)
        self.stop()

    def failure_report(self):
        return f"--- imapidled log {self.log_path} (tail) ---\n" + self.log_tail(60)


def run_check(config_path, connect=True, env=None, bin_path=None, args=(), timeout=60,
              workdir=None):
    """`imapidled check --config F [--connect]`; returns (exit code, stdout, stderr)."""
    argv = [bin_path or binary(), "check", "--config", str(config_path),
            *(["--connect"] if connect else []), *args]
    if env is None:
        env = daemon_env(workdir or os.path.dirname(str(config_path)))
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout, r.stderr


class NotifySocket:
    """An sd_notify receiver on an abstract unix socket (no path length limit, no file)."""

    name = "notify-socket"

    def __init__(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        name = f"imapidled-test-notify-{os.getpid()}-{id(self):x}"
        self.sock.bind("\0" + name)
        self.address = "@" + name
        self.sock.settimeout(0.1)
        self._closed = False
        self.messages = []  # [(monotonic time, {KEY: value})]
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._thread.start()
        util.register(self)

    def _read(self):
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode(errors="replace")
                          .splitlines() if "=" in line)
            with self._cond:
                self.messages.append((time.monotonic(), fields))
                self._cond.notify_all()

    def wait_for(self, key, value=None, timeout=10.0):
        """Wait for a message carrying key (=value if given); returns its fields."""
        def find():
            for _, m in self.messages:
                if key in m and (value is None or m[key] == value):
                    return m
            return None
        with self._cond:
            if not self._cond.wait_for(lambda: find() is not None, timeout):
                raise TimeoutError(f"no sd_notify {key}={value} within {timeout} s: "
                                   f"{self.messages}")
            return find()

    def close(self):
        util.unregister(self)
        self._closed = True
        self._thread.join(2)
        self.sock.close()

    def failure_report(self):
        return ""
