"""The command line, without any server."""
import os
import subprocess

BIN = os.environ.get("IMAPIDLED_BIN", os.path.join(os.path.dirname(__file__), "../../imapidled"))

EX_USAGE = 64


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=30)


def test_version():
    r = run("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("imapidled ")


def test_help():
    r = run("--help")
    assert r.returncode == 0
    assert "imapidled check" in r.stdout


def test_unknown_option_is_usage_error():
    r = run("--no-such-option")
    assert r.returncode == EX_USAGE
