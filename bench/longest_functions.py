"""The longest functions of kotae's packages at a git revision: lines and parameters, longest first.

Usage (from the repository root)::

    .venv/bin/python bench/longest_functions.py HEAD 8
    .venv/bin/python bench/longest_functions.py b9b8a40 8     # before the package redesign (issue 21)
"""

from __future__ import annotations

import argparse
import ast
import subprocess

FOLDERS = ["kotae", "pipeline", "indexing", "reader_training"]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision", nargs="?", default="HEAD")
    parser.add_argument("count", nargs="?", type=int, default=8)
    args = parser.parse_args()
    rows = []
    for path in git("ls-tree", "-r", "--name-only", args.revision, *FOLDERS).split():
        if not path.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(git("show", f"{args.revision}:{path}"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                params = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
                rows.append((node.end_lineno - node.lineno + 1, params, f"{path}:{node.lineno} {node.name}"))
    for lines, params, where in sorted(rows, reverse=True)[: args.count]:
        print(f"{lines:4d} lines  {params:2d} params  {where}")


if __name__ == "__main__":
    main()
