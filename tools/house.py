"""The house rules of csst's code, checked: `python tools/house.py` lists every breach.

- no function longer than 60 lines (decorators excluded, docstring included),
  numba kernels (`@numba.njit` / `@njit`) apart;
- no function with more than 8 parameters (self / cls not counted, *args and
  **kwargs counted), click command functions apart (their parameters are the
  command's options) and numba kernels apart (they take their tables as arrays);
- no module over 600 lines, a module whose every function is a numba kernel apart;
- no test hook in the libraries: no name containing kill_at, kill_after,
  signal_at or CSST_TEST.

It reads the libraries and the CLI (csst_data, csst_train, csst_demo, cli).
Exit status 1 when anything breaks a rule; `--json` prints the breaches.
"""

import ast
import json
import os
import re
import sys

PACKAGES = ("csst_data", "csst_train", "csst_demo", "cli")
MAX_LINES, MAX_PARAMS, MAX_MODULE = 60, 8, 600
HOOKS = re.compile(r"kill_at|kill_after|signal_at|CSST_TEST|CSST_\w*(KILL|HOLD)")


def _decorator_names(node):
    names = []
    for d in node.decorator_list:
        d = d.func if isinstance(d, ast.Call) else d
        names.append(ast.unparse(d))
    return names


def _is_kernel(node):
    return any(n.split(".")[-1] in ("njit", "jit", "vectorize", "guvectorize") for n in _decorator_names(node))


def _is_click_command(node):
    return any(n.startswith("click.") or n.endswith((".command", ".group")) for n in _decorator_names(node))


def _params(node):
    a = node.args
    names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    names += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
    return [n for n in names if n not in ("self", "cls")]


def check_file(path):
    text = open(path, encoding="utf-8").read()
    tree = ast.parse(text, path)
    out = []
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for f in funcs:
        where = f"{path}:{f.lineno} {f.name}"
        if not _is_kernel(f):
            n = f.end_lineno - f.lineno + 1
            if n > MAX_LINES:
                out.append(("long function", where, n))
        if not _is_click_command(f) and not _is_kernel(f):
            n = len(_params(f))
            if n > MAX_PARAMS:
                out.append(("many parameters", where, n))
    lines = text.count("\n") + 1
    kernels_only = funcs and all(_is_kernel(f) for f in funcs if f.col_offset == 0)
    if lines > MAX_MODULE and not kernels_only:
        out.append(("long module", path, lines))
    for i, line in enumerate(text.splitlines(), 1):
        if HOOKS.search(line):
            out.append(("test hook", f"{path}:{i}", line.strip()[:80]))
    return out


def check(root="."):
    breaches = []
    for pkg in PACKAGES:
        for dirpath, _, files in os.walk(os.path.join(root, pkg)):
            for name in sorted(files):
                if name.endswith(".py"):
                    breaches += check_file(os.path.relpath(os.path.join(dirpath, name), root))
    return breaches


def main(argv):
    breaches = check(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if "--json" in argv:
        print(json.dumps([{"rule": r, "where": w, "value": v} for r, w, v in breaches], indent=1))
    else:
        for rule, where, value in breaches:
            print(f"{rule:16} {value!s:>5}  {where}")
        print(f"{len(breaches)} breaches")
    return 1 if breaches else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
