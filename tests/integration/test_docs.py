"""The documentation agrees with the parser.

Every key that src/config.c accepts is documented in man/imapidled.conf.5 and shown in
config.example, each under its own section, and neither of them names a key the parser does
not know.

Where the list of keys comes from: the key tables of src/config.c, read with a regular
expression (`static const struct key_def X_keys[] = { { "name", ... }, ... };` and the
`section_types` table that maps a section to its key table). A hand-written list in this test
would be a third copy that goes stale silently; the tables are the parser itself. Two checks
keep the regular expression honest:
  - every key it finds is given to the real binary (`imapidled check`) in its section, and the
    parser must not answer "unknown key" (so the expression cannot invent keys);
  - the comparison goes both ways: a key documented in the man page or config.example but not
    found in the tables fails too (so a table written in a shape the expression misses does
    not go unnoticed once its keys are documented, which this test requires anyway).

config.example itself is parsed by the unit tests (tests/unit/test-config.c, test_example);
`imapidled check` cannot be run on it here, since that would run its password_command.
"""
import glob
import os
import re
import shutil
import subprocess

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG_C = os.path.join(REPO, "src", "config.c")
MANPAGE = os.path.join(REPO, "man", "imapidled.conf.5")
EXAMPLE = os.path.join(REPO, "config.example")
BIN = os.environ.get("IMAPIDLED_BIN") or os.path.join(REPO, "imapidled")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def parser_keys():
    """{section type: {key, ...}} from the key tables of src/config.c."""
    src = read(CONFIG_C)
    tables = {}
    for m in re.finditer(r"static const struct key_def (\w+)\[\] = \{(.*?)\n\};", src, re.S):
        tables[m.group(1)] = set(re.findall(r'\{\s*"([a-z_]+)"', m.group(2)))
    types = re.search(r"static const struct section_type section_types\[\] = \{(.*?)\n\};",
                      src, re.S)
    assert types, "src/config.c: no section_types table found"
    sections = {}
    for name, table in re.findall(r'\{\s*"(\w+)",\s*(?:true|false),\s*(\w+),', types.group(1)):
        assert table in tables, f"src/config.c: section {name}: key table {table} not found"
        sections[name] = tables[table]
    return sections


def section_named(section):
    src = read(CONFIG_C)
    return re.search(r'\{\s*"%s",\s*true,' % re.escape(section), src) is not None


def manpage_keys():
    """{section type: {key, ...}}: the keys with an entry (.TP/.TQ and `.B "key = "...`)
    under each `.SH THE [TYPE] SECTION` heading of the man page."""
    keys = {}
    section = None
    prev = ""
    for line in read(MANPAGE).splitlines():
        m = re.match(r"\.SH THE \[(\w+)(?: NAME| ACCOUNT/MAILBOX)?\] SECTIONS?$", line)
        if m:
            section = m.group(1)
            keys.setdefault(section, set())
        elif line.startswith(".SH "):
            section = None
        elif section and prev in (".TP", ".TQ"):
            m = re.match(r'\.B[IR]? "([a-z_]+) = ', line)
            if m:
                keys[section].add(m.group(1))
        prev = line
    return keys


def example_keys():
    """{section type: {key, ...}} from config.example; a commented-out key (";key = ...",
    no space after the ";") counts as shown."""
    keys = {}
    section = None
    for line in read(EXAMPLE).splitlines():
        m = re.match(r"\[(\w+)[^\]]*\]", line)
        if m:
            section = m.group(1)
            keys.setdefault(section, set())
            continue
        m = re.match(r";?([a-z_]+)\s*=", line)
        if m and section:
            keys[section].add(m.group(1))
    return keys


def compare(found, where):
    expected = parser_keys()
    problems = []
    for section, keys in sorted(expected.items()):
        missing = sorted(keys - found.get(section, set()))
        if missing:
            problems.append(f"[{section}]: not in {where}: {', '.join(missing)}")
    for section, keys in sorted(found.items()):
        unknown = sorted(keys - expected.get(section, set()))
        if unknown:
            problems.append(f"[{section}]: in {where} but not accepted by src/config.c: "
                            f"{', '.join(unknown)}")
    assert not problems, "\n".join(problems)


def test_parser_tables_are_found():
    sections = parser_keys()
    assert set(sections) == {"imapidled", "account", "desktop", "webhook", "exec", "mailbox"}, (
        f"expected the six section types in src/config.c, found {sorted(sections)}")
    for section, keys in sections.items():
        assert keys, f"[{section}]: no keys found in its table"


def test_every_key_is_in_the_manpage():
    compare(manpage_keys(), "man/imapidled.conf.5")


def test_every_key_is_in_config_example():
    compare(example_keys(), "config.example")


@pytest.mark.skipif(not os.access(BIN, os.X_OK), reason=f"{BIN} is not built")
@pytest.mark.parametrize("section,key", sorted(
    (s, k) for s, keys in parser_keys().items() for k in keys))
def test_binary_knows_the_key(tmp_path, section, key):
    """The key found in the tables is one the parser accepts in that section. No config here
    can parse completely (no account, or an empty value), so no secret is ever fetched."""
    header = f"[{section} x]" if section_named(section) else f"[{section}]"
    if section == "mailbox":
        header = "[mailbox x/INBOX]"  # named ACCOUNT/MAILBOX
    path = tmp_path / "config"
    path.write_text(f"{header}\n{key} =\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "XDG_STATE_HOME": str(tmp_path / "state")}
    r = subprocess.run([BIN, "check", "--config", str(path)], capture_output=True, text=True,
                       env=env, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode != 0, f"expected this partial config to be refused: {r.stdout}"
    assert "unknown key" not in r.stderr and "unknown section" not in r.stderr, (
        f"[{section}] {key}: expected the parser to know it, got: {r.stderr.strip()}")


def test_not_implemented_remarks_are_current():
    """A remark in the man page about something not implemented yet names, in the roff
    comment before it, the file whose arrival makes it wrong: drop the remark then."""
    stale = []
    for n, line in enumerate(read(MANPAGE).splitlines(), 1):
        m = re.match(r'\.\\" NOT IMPLEMENTED YET:.*drop when (\S+) lands', line)
        if m and glob.glob(os.path.join(REPO, m.group(1))):
            stale.append(f"man/imapidled.conf.5:{n}: {m.group(1)} exists now; drop the "
                         "\"not implemented yet\" remark that follows this comment")
    assert not stale, "\n".join(stale)


@pytest.mark.skipif(not shutil.which("groff"), reason="groff is not installed")
@pytest.mark.parametrize("page", ["imapidled.conf.5", "imapidled.1"])
def test_manpage_renders_without_warnings(page):
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", os.path.join(REPO, "man", page)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr, f"expected no groff warnings, got:\n{r.stderr}"
