"""The typed API: ``_rnnrs.pyi`` matches the compiled module, and typical user code passes ``mypy --strict``.

* ``test_stub_covers_binding_exports``: the names the binding's source exports (``#[pymodule_export]``
  in ``rust/rnnrs-py/src/lib.rs``) and the stub's public names are the same (no build, no mypy needed).
* ``test_stubtest``: ``python -m mypy.stubtest rnnrs._rnnrs`` (signatures, defaults, ``@final``,
  properties) — skipped without mypy (``pip install -e .[test]`` installs it). If the compiled module
  is older than the binding's source (a name exported in ``lib.rs`` is missing at runtime), only those
  names are allowed to be missing and the test is an expected failure saying "rebuild".
* ``test_typing_examples_mypy_strict``: ``mypy --strict tests/typing_examples.py``.
* ``test_typing_examples_run``: the same examples run, so they stay true.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

import rnnrs
from rnnrs import _rnnrs

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = pathlib.Path(rnnrs.__file__).resolve().parent
STUB = PACKAGE / "_rnnrs.pyi"
BINDING_LIB = ROOT / "rust" / "rnnrs-py" / "src" / "lib.rs"
EXAMPLES = ROOT / "tests" / "typing_examples.py"
HAVE_MYPY = importlib.util.find_spec("mypy") is not None
needs_mypy = pytest.mark.skipif(not HAVE_MYPY, reason="mypy is not installed (pip install -e '.[test]')")
# Type-check and stubtest time on 2 cores is ~10 s each; a hung mypy must not hang the suite.
MYPY_TIMEOUT_S = 300


def stub_names() -> set[str]:
    """Public top-level names of the stub (classes, functions, variables), plus ``__version__``."""
    tree = ast.parse(STUB.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_") or n == "__version__"}


def binding_exports() -> set[str] | None:
    """Names the binding's source exports: ``#[pymodule_export] use crate::x::{a, b}`` and
    ``m.add("name", ...)``; None when the Rust source is not next to the tests."""
    if not BINDING_LIB.exists():
        return None
    src = BINDING_LIB.read_text(encoding="utf-8")
    names: set[str] = set()
    for m in re.finditer(r"#\[pymodule_export\]\s*use\s+[\w:]+::(\{[^}]*\}|\w+)\s*;", src):
        names |= {n.strip() for n in m.group(1).strip("{}").split(",") if n.strip()}
    names |= set(re.findall(r'm\.add\(\s*"(\w+)"', src))
    return names


def stale_names() -> set[str]:
    """Names exported by the binding's source but missing from the compiled module (an old build)."""
    exports = binding_exports() or set()
    return {n for n in exports if not hasattr(_rnnrs, n)}


def run(args: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "MYPY_CACHE_DIR")}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=MYPY_TIMEOUT_S)


def test_stub_and_marker_are_packaged():
    """Both files sit next to the compiled module (maturin's python-source packs all of python/rnnrs)."""
    assert STUB.is_file(), f"missing {STUB}"
    assert (PACKAGE / "py.typed").is_file(), f"missing {PACKAGE / 'py.typed'}"
    pyproject = ROOT / "pyproject.toml"
    if pyproject.exists():
        text = pyproject.read_text(encoding="utf-8")
        assert re.search(r'^python-source\s*=\s*"python"', text, re.M), "wheel would not include python/rnnrs"
        assert re.search(r'^module-name\s*=\s*"rnnrs\._rnnrs"', text, re.M)


def test_stub_covers_binding_exports():
    exports = binding_exports()
    if exports is None:
        pytest.skip(f"binding source {BINDING_LIB} not found (tests run outside the repository)")
    stub = stub_names()
    assert exports - stub == set(), f"exported by {BINDING_LIB.name} but missing from the stub"
    assert stub - exports == set(), f"in the stub but not exported by {BINDING_LIB.name}"


@needs_mypy
def test_stubtest(tmp_path):
    stale = stale_names()
    allow = tmp_path / "allowlist.txt"
    lines = [f"rnnrs._rnnrs.{n}" for n in sorted(stale)] + (["rnnrs._rnnrs.__all__"] if stale else [])
    allow.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = run(["mypy.stubtest", "rnnrs._rnnrs", "--allowlist", str(allow), "--ignore-unused-allowlist"], tmp_path)
    assert r.returncode == 0, f"stub and compiled module differ:\n{r.stdout}\n{r.stderr}"
    if stale:
        pytest.xfail(f"the compiled module is older than {BINDING_LIB.name}: {sorted(stale)} missing at "
                     "runtime; rebuild (maturin develop) to check them")


def _self_typed_layers() -> bool:
    """Whether layers.py annotates ``train``/``eval``/``from_torch`` as returning ``Self``."""
    from rnnrs.layers import _Recurrent
    return _Recurrent.train.__annotations__.get("return") == "Self"


@needs_mypy
def test_typing_examples_mypy_strict(tmp_path):
    r = run(["mypy", "--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"), str(EXAMPLES)],
            tmp_path)
    if r.returncode != 0 and not _self_typed_layers():
        pytest.xfail("layers.py's train()/eval()/from_torch()/from_keras() do not return Self yet "
                     f"(see the typing patch for python/rnnrs/layers.py):\n{r.stdout}")
    assert r.returncode == 0, f"mypy --strict {EXAMPLES.name}:\n{r.stdout}\n{r.stderr}"


def test_typing_examples_run(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("typing_examples", EXAMPLES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stale = stale_names()
    try:
        module.main()
    except AttributeError as e:
        if stale and any(n in str(e) for n in stale):
            pytest.xfail(f"the compiled module is older than {BINDING_LIB.name} ({e}); rebuild with maturin develop")
        raise
