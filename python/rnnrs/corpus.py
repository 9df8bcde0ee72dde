"""A training corpus of one or several files: ``--corpus a.txt b.txt lyrics/``.

Folders stand for the regular files below them (recursively, sorted by path, hidden files and
folders skipped). The documents are joined with :data:`DOCUMENT_SEPARATOR` for the tokenizer, and
the validation split is taken from the end of **each** file, so every document is represented in
both parts (a single file gives exactly the split of :func:`rnnrs.dataset.split_train_val`).
"""

from __future__ import annotations

import os
from typing import Any, Callable, List, Sequence, Tuple, Union

import numpy as np

from .dataset import split_train_val

__all__ = ["DOCUMENT_SEPARATOR", "corpus_files", "join_documents", "split_documents"]

#: What stands between two documents of a corpus (a blank line, as between verses).
DOCUMENT_SEPARATOR = "\n\n"

PathLike = Union[str, "os.PathLike[str]"]


def corpus_files(corpus: Union[PathLike, Sequence[PathLike]]) -> List[str]:
    """The absolute paths of the files ``corpus`` names: a path or a list of paths, each a file or
    a folder (its files, recursively, sorted; hidden ones skipped). ``ValueError`` for an empty
    list or a folder without files; a missing path is left for the reader to report."""
    items = [corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus)
    if not items:
        raise ValueError("corpus: expected a file, a folder or a list of them, got an empty list")
    files: List[str] = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"corpus: expected paths, got {type(item).__name__} {item!r}")
        path = os.path.abspath(os.fspath(item))
        if not os.path.isdir(path):
            files.append(path)
            continue
        found = []
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.join(root, n) for n in names if not n.startswith(".")]
        if not found:
            raise ValueError(f"corpus {path}: expected a folder with text files, got an empty folder")
        files += sorted(found)
    return files


def join_documents(texts: Sequence[str]) -> str:
    """The documents as one text, separated by :data:`DOCUMENT_SEPARATOR`."""
    return DOCUMENT_SEPARATOR.join(texts)


def split_documents(texts: Sequence[str], encode: Callable[[str], np.ndarray], val_fraction: float,
                    names: Sequence[str]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, train_ids, val_ids)``: every document encoded, its last ``val_fraction`` held out,
    the parts joined with the separator's ids. ``ids`` is the whole corpus in order (the
    fingerprint a resume compares). ``ValueError`` naming the file whose part would be too small."""
    sep = encode(DOCUMENT_SEPARATOR)
    encoded = [encode(t) for t in texts]
    trains, vals = [], []
    for name, ids in zip(names, encoded):
        try:
            tr, va = split_train_val(ids, val_fraction, min_tokens=2)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        trains.append(tr)
        vals.append(va)
    return _join(encoded, sep), _join(trains, sep), _join([v for v in vals if v.size], sep)


def _join(parts: List[np.ndarray], sep: np.ndarray) -> np.ndarray:
    if not parts:
        return np.empty(0, dtype=np.int64)
    out: List[Any] = []
    for i, p in enumerate(parts):
        if i:
            out.append(sep)
        out.append(p)
    return np.concatenate(out).astype(np.int64, copy=False)
