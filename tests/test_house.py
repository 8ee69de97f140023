"""The house rules (tools/house.py) and the layering of docs/architecture.md hold."""

import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import house  # noqa: E402

# package -> packages it must never import (a lower layer never imports a higher one)
FORBIDDEN = {
    "csst_data": ("csst_train", "csst_demo", "csst_cli"),
    "csst_train": ("csst_demo", "csst_cli"),
    "csst_demo": ("csst_cli",),
}


def test_no_breach_of_the_house_rules():
    breaches = house.check(ROOT)
    assert breaches == [], "\n".join(f"{r}: {w} ({v})" for r, w, v in breaches)


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_no_package_imports_a_higher_layer():
    found = []
    for pkg, forbidden in FORBIDDEN.items():
        for dirpath, _, files in os.walk(os.path.join(ROOT, pkg)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    found += [f"{os.path.relpath(path, ROOT)} imports {m}" for m in _imports(path)
                              if m.split(".")[0] in forbidden]
    assert found == []


def test_the_checker_sees_a_breach(tmp_path):
    # The rules are live: a long function, a wide one and a test hook are each reported.
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    src = f"def long():\n{body}\n\ndef wide(a, b, c, d, e, f, g, h, i):\n    KILL = 'CSST_TEST_X'\n"
    path = tmp_path / "m.py"
    path.write_text(src)
    rules = sorted(r for r, _, _ in house.check_file(str(path)))
    assert rules == ["long function", "many parameters", "test hook"]
