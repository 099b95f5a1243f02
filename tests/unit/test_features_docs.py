"""The examples in docs/features.md run, and the layering rule of ``features/`` holds."""

from __future__ import annotations

import ast
import doctest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_features_md_examples_run():
    result = doctest.testfile(str(ROOT / "docs" / "features.md"), module_relative=False,
                              optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_features_package_is_pure():
    banned = {"stream", "confluent_kafka", "rocksdict", "time", "datetime"}
    for path in (ROOT / "features").glob("*.py"):
        if path.name == "first_slice.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            else:
                continue
            assert not banned.intersection(names), f"{path.name} imports {names}"
