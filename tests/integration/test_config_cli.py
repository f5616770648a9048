"""Bad input through the real binary: every config problem gives exactly one clear line that
names where (file:line, [section] key) and exit EX_CONFIG (78), both from `imapidled check`
and from the daemon itself; usage errors give EX_USAGE (64). Nothing crashes (a sanitizer
report fails the test), nothing prints a secret."""
import os
import re
import shutil
import subprocess

import pytest

from imapidled_test import daemon, util

EX_OK, EX_USAGE, EX_CONFIG = 0, 64, 78
SECRET = "S3cret-do-not-print-7f3a"

ACCOUNT = "[account work]\nhost = localhost\nusername = me\n"  # lines 1-3


def run(argv, env, timeout=15):
    r = subprocess.run([daemon.binary(), *argv], capture_output=True, text=True, env=env,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    for text in (r.stdout, r.stderr):
        assert not daemon.SANITIZER_RX.search(text), text
    return r


def one_line(r):
    """The single line a failure must print: nothing on stdout, one line on stderr."""
    assert r.stdout == "", r.stdout
    got = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(got) == 1, f"expected one line, got {len(got)}:\n{r.stderr}"
    return got[0]


@pytest.fixture
def env(tmp_path):
    return daemon.daemon_env(tmp_path / "run")


@pytest.fixture(params=["check", "daemon"])
def mode(request):
    """`imapidled check --config F` and `imapidled --config F` must fail the same way."""
    return request.param


def argv_for(mode, path):
    return ["check", "--config", str(path)] if mode == "check" else ["--config", str(path)]


def write(tmp_path, text, name="bad.conf"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# (id, config text after ACCOUNT or None for a whole file, expected line regex, {path} filled in)
CASES = [
    ("unknown-key-did-you-mean", ACCOUNT + "password = x\nhots = imap.example.com\n",
     r'{path}:5: \[account work\] hots: unknown key \(did you mean "host"\?\)$'),
    ("unknown-section", "[acount work]\nhost = x\n",
     r'{path}:1: \[acount work\]: unknown section \(did you mean "account"\?\)$'),
    ("bad-port", ACCOUNT + "password = x\nport = 99999\n",
     r'{path}:5: \[account work\] port: expected 1-65535, got "99999"$'),
    ("bad-duration", ACCOUNT + "password = x\nidle_refresh = forever\n",
     r'{path}:5: \[account work\] idle_refresh: expected a duration'),
    ("bad-log-level", ACCOUNT + "password = x\n[imapidled]\nlog_level = loud\n",
     r'{path}:6: \[imapidled\] log_level: expected '),
    ("tls-none-without-allow-plaintext", ACCOUNT + "password = x\ntls = none\n",
     r'{path}:5: \[account work\] tls: "none" sends the password unencrypted; '
     r'add allow_plaintext = yes'),
    ("missing-host", "[account work]\nusername = me\npassword = x\n",
     r'{path}:1: \[account work\] host: required key is missing$'),
    ("missing-secret", ACCOUNT,
     r'{path}:1: \[account work\] password: required key is missing'),
    ("two-secrets", ACCOUNT + "password = x\npassword_file = /x\n",
     r'{path}:5: \[account work\] password_file: conflicts with "password" at line 4'),
    ("no-account", "[imapidled]\nlog_level = info\n",
     r'{path}: no \[account NAME\] section$'),
    ("not-ini", "this is not a config\n",
     r'{path}:1: expected "key = value" or a \[section\] header$'),
    ("missing-password-file", ACCOUNT + "password_file = {dir}/no-such.pass\n",
     r'{path}:4: \[account work\] password_file: cannot open "{dir}/no-such.pass": '
     r'No such file or directory$'),
    ("failing-password-command", ACCOUNT + "password_command = false\n",
     r'{path}:4: \[account work\] password_command: "false" exited with status 1$'),
    ("empty-password-command", ACCOUNT + "password_command = true\n",
     r'{path}:4: \[account work\] password_command: the output of "true" is empty$'),
    ("missing-password-command", ACCOUNT + "password_command = /nonexistent/pass show x\n",
     r'{path}:4: \[account work\] password_command: "/nonexistent/pass": cannot run: '
     r'No such file or directory$'),
    ("credential-outside-systemd", ACCOUNT + "password_credential = work.pass\n",
     r'{path}:4: \[account work\] password_credential: \$CREDENTIALS_DIRECTORY is not set'),
    ("bad-quote-in-command", ACCOUNT + "password_command = 'unterminated\n",
     r'{path}:4: \[account work\] password_command: unterminated quote'),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_gives_one_line_and_exit_78(tmp_path, env, mode, text, expected):
    d = str(tmp_path)
    path = write(tmp_path, text.format(dir=d))
    r = run(argv_for(mode, path), env)
    assert r.returncode == EX_CONFIG, (r.returncode, r.stdout, r.stderr)
    line = one_line(r)
    rx = expected.format(path=re.escape(path), dir=re.escape(d))
    assert re.search(rx, line), f"{line!r} does not match {rx!r}"


def test_secret_errors_look_like_other_config_errors(tmp_path, env):
    path = write(tmp_path, ACCOUNT + "password_command = false\n")
    line = one_line(run(["check", "--config", path], env))
    assert line.startswith(f"imapidled: {path}:4: "), line


def test_missing_config_file(tmp_path, env, mode):
    path = str(tmp_path / "nope.conf")
    r = run(argv_for(mode, path), env)
    assert r.returncode == EX_CONFIG
    assert one_line(r) == f"imapidled: {path}: cannot open: No such file or directory"


def test_config_is_a_directory(tmp_path, env, mode):
    r = run(argv_for(mode, tmp_path), env)
    assert r.returncode == EX_CONFIG
    assert one_line(r) == f"imapidled: {tmp_path}: cannot open: Is a directory"


def _as_nobody():
    """argv prefix that drops root to nobody (setpriv), or None where that cannot work."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if not setpriv:
        return None
    prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    r = subprocess.run([*prefix, daemon.binary(), "--version"], capture_output=True,
                       timeout=15)
    return prefix if r.returncode == 0 else None


def test_unreadable_config_file(mode):
    """chmod 000. As root the file would be readable anyway, so the binary runs as nobody."""
    prefix = _as_nobody()
    if prefix is None:
        pytest.skip("running as root and cannot drop to nobody to make a file unreadable")
    d = util.make_tmpdir("imapidled-unreadable-")
    try:
        path = os.path.join(d, "config")
        with open(path, "w") as f:
            f.write(ACCOUNT + "password = x\n")
        os.chmod(path, 0)
        env = daemon.daemon_env(os.path.join(d, "run"))
        os.chmod(os.path.join(d, "run"), 0o755)
        for k in ("HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"):
            os.chmod(env[k], 0o777)
        r = subprocess.run([*prefix, daemon.binary(), *argv_for(mode, path)],
                           capture_output=True, text=True, env=env, timeout=15)
        assert r.returncode == EX_CONFIG, (r.stdout, r.stderr)
        assert one_line(r) == f"imapidled: {path}: cannot open: Permission denied"
    finally:
        util.remove_tree(d)


@pytest.mark.skipif(os.path.exists("/etc/imapidled/config"),
                    reason="/etc/imapidled/config exists on this machine")
@pytest.mark.parametrize("xdg", [True, False], ids=["XDG_CONFIG_HOME", "HOME-only"])
def test_no_config_anywhere(tmp_path, mode, xdg):
    home = tmp_path / "home"
    xdg_dir = tmp_path / "xdg"
    home.mkdir()
    xdg_dir.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    if xdg:
        env["XDG_CONFIG_HOME"] = str(xdg_dir)
    r = run(["check"] if mode == "check" else [], env)
    assert r.returncode == EX_CONFIG
    looked = (xdg_dir if xdg else home / ".config") / "imapidled" / "config"
    assert one_line(r) == (f"imapidled: no configuration file (looked for {looked}, "
                           "/etc/imapidled/config)")


def test_default_config_location_is_used(tmp_path):
    """The positive twin of the above: $XDG_CONFIG_HOME/imapidled/config is found."""
    env = daemon.daemon_env(tmp_path / "run")
    cfg_dir = os.path.join(env["XDG_CONFIG_HOME"], "imapidled")
    os.makedirs(cfg_dir)
    path = os.path.join(cfg_dir, "config")
    with open(path, "w") as f:
        f.write(ACCOUNT + "password = x\n")
    r = run(["check"], env)
    assert r.returncode == EX_OK, r.stderr
    assert r.stdout == f"{path}: configuration is valid (1 account)\n"


# -- secrets -----------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    ACCOUNT + f"password_command = sh -c 'echo {SECRET}; exit 3'\n",
    ACCOUNT + f"password_command = echo {SECRET}\nport = 99999\n",
    ACCOUNT + f"pasword = {SECRET}\n",
    ACCOUNT + f"password = {SECRET}\ntls = none\n",
], ids=["command-fails-after-printing", "bad-value-elsewhere", "misspelt-key", "tls-none"])
def test_secret_never_printed(tmp_path, env, mode, text):
    path = write(tmp_path, text)
    r = run([*argv_for(mode, path), "-vv"], env)
    assert r.returncode == EX_CONFIG, r.stderr
    assert SECRET not in r.stdout + r.stderr, r.stdout + r.stderr


def test_valid_check_does_not_print_the_commands_secret(tmp_path, env):
    path = write(tmp_path, ACCOUNT + f"password_command = echo {SECRET}\n")
    r = run(["check", "--config", path, "-vv"], env)
    assert r.returncode == EX_OK, r.stderr
    assert SECRET not in r.stdout + r.stderr, r.stdout + r.stderr


# -- usage -------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["--no-such-option"],
    ["surprise"],
    ["check", "extra"],
    ["check", "check"],
    ["--connect"],
    ["--config"],
], ids=["unknown-option", "stray-argument", "check-extra", "check-twice",
        "connect-without-check", "config-without-file"])
def test_usage_errors_exit_64_with_one_line(env, argv):
    r = run(argv, env)
    assert r.returncode == EX_USAGE, (r.stdout, r.stderr)
    line = one_line(r)
    assert "imapidled" in line, line
