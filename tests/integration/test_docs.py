"""tests/integration/test_docs.py: the repository documents itself.

The contract lives in doc/PRODUCT.md; every parameter its section 2 names
must exist in the binary's typed table with the default written there
(`frugal config -d`), and nothing in the repository may point outside it.
"""
import os
import re
import shutil
import subprocess
import unittest

from harness import ROOT, run_frugal


def contract_parameters():
    """{name: default or None} from doc/PRODUCT.md section 2's table."""
    with open(os.path.join(ROOT, "doc", "PRODUCT.md")) as f:
        text = f.read()
    sec = text[text.index("## 2. Configuration"):text.index("## 3. Guarantees")]
    params = {}
    for row in sec.splitlines():
        if not row.startswith("| ") or row.startswith("| area") or row.startswith("| ---"):
            continue
        area, body = row.split("|")[1:3]
        if "restriction words" in area:
            continue
        for m in re.finditer(r"`([a-z0-9_]+)(?: =(?: ([^`]*))?)?`", body):
            name = m.group(1)
            if "=" in m.group(0):
                params[name] = (m.group(2) or "").strip()
            elif name.startswith(("limit_", "smtpd_", "postscreen_")) or name.endswith(("_maps", "_file")):
                params.setdefault(name, None)
    return params


class Contract(unittest.TestCase):
    def test_every_contract_parameter_with_its_default(self):
        params = contract_parameters()
        self.assertGreaterEqual(len(params), 100)   # the parser still reads the table
        r = run_frugal("config", "-d")
        self.assertEqual(r.returncode, 0, r.stderr)
        table = {}
        for line in r.stdout.splitlines():
            name, _, value = line.partition(" = ")
            table[name] = value
        missing = sorted(p for p in params if p not in table)
        self.assertEqual(missing, [], "contract parameters missing from the table")
        wrong = sorted("%s: contract %r, table %r" % (p, d, table[p])
                       for p, d in params.items() if d is not None and table[p] != d)
        self.assertEqual(wrong, [], "defaults that differ from the contract")

    def test_nothing_points_outside_the_repository(self):
        try:
            files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
        except FileNotFoundError:   # a fresh machine (fresh-check) has no git; the tree came as a copy
            files = []
        if not files:
            self.skipTest("not a git checkout")
        bad = []
        for f in files:
            p = os.path.join(ROOT, f)
            if not os.path.isfile(p) or f.startswith("tests/fuzz/corpus/"):
                continue
            with open(p, "rb") as fh:
                if b"../" + b"shared" in fh.read():   # (spelled apart: this file would match itself)
                    bad.append(f)
        self.assertEqual(bad, [])


def man_page(name):
    with open(os.path.join(ROOT, "doc", name)) as f:
        return f.read()


class ManualPages(unittest.TestCase):
    """doc/frugal.8 names every command of main.c's table, doc/frugal.conf.5
    every parameter of the typed table (it is generated from conf/params.c by
    contrib/mkman.py: regenerate when this fails), and both render cleanly."""

    def test_every_parameter_in_frugal_conf_5(self):
        r = run_frugal("config", "-d")
        self.assertEqual(r.returncode, 0, r.stderr)
        names = [l.partition(" = ")[0] for l in r.stdout.splitlines() if l]
        self.assertGreaterEqual(len(names), 100)
        documented = set(re.findall(r"^\.B (\S+) =", man_page("frugal.conf.5"), re.M))
        self.assertEqual(sorted(n for n in names if n not in documented), [],
                         "parameters missing from doc/frugal.conf.5 (run contrib/mkman.py)")

    def test_the_checked_in_page_is_what_the_generator_writes(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "frugal.conf.5")
            subprocess.run(["python3", os.path.join(ROOT, "contrib", "mkman.py"), out], check=True)
            with open(out) as f:
                self.assertEqual(f.read(), man_page("frugal.conf.5"), "run contrib/mkman.py")

    def test_every_command_in_frugal_8(self):
        with open(os.path.join(ROOT, "main.c")) as f:
            cmds = re.findall(r'^\s*\{ "([a-z]+)",', f.read(), re.M)
        self.assertGreaterEqual(len(cmds), 10)
        page = man_page("frugal.8")
        documented = set(re.findall(r"^\.B ([a-z]+)\b", page.split(".SH COMMANDS")[1], re.M))
        self.assertEqual(sorted(c for c in cmds if c not in documented), [],
                         "commands missing from doc/frugal.8")
        for link in ("sendmail", "mailq", "newaliases"):
            self.assertIn(link, page)

    def test_pages_render_without_warnings(self):
        if not shutil.which("groff"):
            self.skipTest("groff is not installed (Debian package groff-base)")
        for name in ("frugal.8", "frugal.conf.5"):
            r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", os.path.join(ROOT, "doc", name)],
                               capture_output=True, text=True)
            self.assertEqual((r.returncode, r.stderr), (0, ""), name)
        if shutil.which("man"):
            r = subprocess.run(["man", "-l", os.path.join(ROOT, "doc", "frugal.8")],
                               capture_output=True, text=True, env=dict(os.environ, MANPAGER="cat", PAGER="cat"))
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("wizard", r.stdout)

    def test_generator_catches_a_missing_parameter(self):
        # negative control: a page without one parameter is caught by the same check
        page = man_page("frugal.conf.5").replace(".B queue_directory =", ".B xqueue_directory =")
        self.assertNotIn("queue_directory", set(re.findall(r"^\.B (\S+) =", page, re.M)))


if __name__ == "__main__":
    unittest.main()
