"""The README's (and the docs') Python blocks run as written: copy-paste examples must work."""

from __future__ import annotations

import os
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def blocks():
    for doc in DOCS:
        if not doc.exists():
            continue
        for i, m in enumerate(BLOCK.finditer(doc.read_text(encoding="utf-8"))):
            code = m.group(1)
            if "# not run" in code.splitlines()[0]:
                continue
            yield pytest.param(code, id=f"{doc.name}-{i}")


@pytest.mark.parametrize("code", list(blocks()))
def test_block_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<doc block>", "exec"), {"__name__": "__doc__"})


def test_readme_has_python_blocks():
    assert (ROOT / "README.md").exists()
    assert len([b for b in blocks()]) >= 2
