"""The unit files: systemd-analyze accepts each of them (user units as user units), the
system unit is hardened (and measured), the user units hold nothing that would break the
programs they start for the user, and the daemon run the way each unit runs it finds its
config, its state directory and its credentials."""
import os
import re
import shlex
import shutil
import subprocess

import pytest

from imapidled_test import daemon

REPO = daemon.REPO
UNITS = os.path.join(REPO, "units")
ANALYZE = shutil.which("systemd-analyze")
SYSTEM_UNIT = "imapidled-system.service"
USER_UNITS = ("imapidled.service", "imapidled@.service")

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="no systemd-analyze")


def unit_text(name, bindir=None):
    text = open(os.path.join(UNITS, name)).read()
    return text.replace("@BINDIR@", bindir) if bindir else text


def directives(name):
    """{key: [values]} of the [Service] section (comments and other sections left out)."""
    out, section = {}, None
    for line in unit_text(name).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]" and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def copy_units(tmp_path, names):
    """Copies with @BINDIR@ at the binary under test; a template as an instance."""
    bindir = os.path.dirname(os.path.realpath(daemon.binary()))
    d = tmp_path / "units"
    d.mkdir(exist_ok=True)
    paths = []
    for name in names:
        text = unit_text(name, bindir).replace(
            f"ExecStart={bindir}/imapidled", f"ExecStart={os.path.realpath(daemon.binary())}")
        target = d / (name.replace("@.", "@work.") if "@." in name else name)
        target.write_text(text)
        paths.append(str(target))
    return paths


def analyze(args, tmp_path, user=False):
    env = dict(os.environ)
    argv = [ANALYZE, *args]
    if user:
        rt = tmp_path / "runtime"
        rt.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(rt)
        argv.insert(1, "--user")
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)


@needs_analyze
def test_system_unit_verifies(tmp_path):
    r = analyze(["verify", "--man=no", *copy_units(tmp_path, [SYSTEM_UNIT])], tmp_path)
    assert r.returncode == 0 and not r.stderr.strip(), r.stdout + r.stderr


@needs_analyze
def test_user_units_verify_as_user_units(tmp_path):
    r = analyze(["verify", "--man=no", *copy_units(tmp_path, USER_UNITS)], tmp_path,
                user=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stdout + r.stderr


@needs_analyze
def test_system_unit_exposure_is_low(tmp_path):
    (path,) = copy_units(tmp_path, [SYSTEM_UNIT])
    r = analyze(["security", "--offline=yes", "--no-pager", path], tmp_path)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    print(f"systemd-analyze security: system unit exposure {m.group(1)}")
    assert float(m.group(1)) <= 2.0, r.stdout


def test_system_unit_sandbox():
    d = directives(SYSTEM_UNIT)
    assert d["Type"] == ["notify"]
    assert d["DynamicUser"] == ["yes"]
    assert d["StateDirectory"] == ["imapidled"]
    assert d["ConfigurationDirectory"] == ["imapidled"]
    assert d["ExecStart"][0].endswith("--config ${CONFIGURATION_DIRECTORY}/config")
    assert "XDG_STATE_HOME=%S" in d["Environment"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["PrivateTmp"] == ["yes"]
    assert d["NoNewPrivileges"] == ["yes"]
    assert "@system-service" in d["SystemCallFilter"]
    assert d["SystemCallErrorNumber"] == ["EPERM"]
    families = d["RestrictAddressFamilies"][0].split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"]
    # How to hand it a secret is written next to it.
    text = unit_text(SYSTEM_UNIT)
    assert "LoadCredential=" in text and "LoadCredentialEncrypted=" in text


@pytest.mark.parametrize("name", USER_UNITS)
def test_user_units_do_not_break_what_they_start(name):
    """The exec sink's commands and the desktop's on_click inherit the sandbox: a JIT, a
    browser engine's namespace sandbox, an X11 socket in /tmp and ~/Mail must keep working."""
    d = directives(name)
    assert d["Type"] == ["notify"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    for key in ("MemoryDenyWriteExecute", "RestrictNamespaces", "PrivateTmp", "ProtectHome",
                "ProtectSystem", "RestrictAddressFamilies", "SystemCallFilter"):
        assert key not in d, f"{name}: {key}= would break programs the user's service starts"
    assert d["NoNewPrivileges"] == ["yes"]


def exec_argv(name, env):
    """The unit's ExecStart, with ${VAR} expanded the way systemd does, as an argv."""
    (line,) = directives(name)["ExecStart"]
    line = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line)
    argv = shlex.split(line)
    argv[0] = daemon.binary()
    return argv


def run_like_unit(argv, env, workdir, verbose=True):
    d = daemon.Daemon("unused", workdir, env=env)
    d.argv = argv + (["-v"] if verbose else [])
    return d.start()


def test_system_unit_finds_config_state_and_credentials(tmp_path, dovecot, mail_user):
    """As the system unit runs it: --config ${CONFIGURATION_DIRECTORY}/config, the state in
    %S/imapidled via XDG_STATE_HOME, the password as a credential."""
    etc, var_lib, creds = tmp_path / "etc-imapidled", tmp_path / "var-lib", tmp_path / "creds"
    for p in (etc, var_lib, creds):
        p.mkdir()
    daemon.write_secret(str(creds / "work"), mail_user.password)
    cfg = daemon.DaemonConfig(etc)
    del cfg.sections["imapidled"]["state_dir"]  # the default, as a packaged config has it
    cfg.account("work", dovecot, mail_user, password_via=None, password_credential="work")
    cfg.write(str(etc / "config"))
    workdir = tmp_path / "run"
    workdir.mkdir()
    env = daemon.daemon_env(workdir, extra={"CONFIGURATION_DIRECTORY": str(etc),
                                            "STATE_DIRECTORY": str(var_lib / "imapidled"),
                                            "XDG_STATE_HOME": str(var_lib),
                                            "CREDENTIALS_DIRECTORY": str(creds),
                                            "HOME": "/"})
    d = run_like_unit(exec_argv(SYSTEM_UNIT, env), env, workdir)
    try:
        d.wait_for_log(r"starting with " + re.escape(str(etc / "config")), timeout=10)
        d.wait_for_log(r"all 1 mailbox idle$", timeout=15)
        assert d.stop() == 0
    finally:
        d.close()
    written = [os.path.join(r, f) for r, _, fs in os.walk(var_lib) for f in fs]
    assert written and all(p.startswith(str(var_lib / "imapidled") + "/") for p in written), \
        written
    assert not d.sanitizer_reports()


def test_user_unit_finds_its_config(tmp_path, dovecot, mail_user):
    workdir = tmp_path / "run"
    workdir.mkdir()
    env = daemon.daemon_env(workdir)
    conf_dir = os.path.join(env["XDG_CONFIG_HOME"], "imapidled")
    cfg = daemon.DaemonConfig(conf_dir)
    del cfg.sections["imapidled"]["state_dir"]
    cfg.account("work", dovecot, mail_user)
    cfg.write(os.path.join(conf_dir, "config"))
    d = run_like_unit(exec_argv("imapidled.service", env), env, workdir)
    try:
        d.wait_for_log(r"all 1 mailbox idle$", timeout=15)
        assert d.stop() == 0
    finally:
        d.close()
    state = os.path.join(env["XDG_STATE_HOME"], "imapidled")
    assert os.path.isdir(state) and os.listdir(state), state
