"""tests/integration/test_docs.py: the repository documents itself.

The contract lives in doc/PRODUCT.md; every parameter its section 2 names
must exist in the binary's typed table with the default written there
(`frugal config -d`), and nothing in the repository may point outside it.
"""
import os
import re
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
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
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


if __name__ == "__main__":
    unittest.main()
