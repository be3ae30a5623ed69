"""The Russian texts of Debian's ``fortunes-ru`` (about 21,000 sayings, 1.3 million letters).

The package installs its files under ``/usr/share/games/fortunes/ru/`` in strfile's format:
one plain-text file per collection, the sayings separated by lines holding only ``%``, each
with a ``.dat`` index beside it (``strfile``'s random-access table, not needed to read the
text) and a ``.u8`` symbolic link to the same file (the UTF-8 name that ``fortune`` looks for
in UTF-8 locales). The files are UTF-8 already; a few collections have Windows line ends.
A saying's attribution is the convention's indented ``-- Author`` line, kept apart from the
text so that a letter count is a count of the sayings, not of their authors' names.

Nothing here downloads: the data come with the Debian package (``apt-get install
fortunes-ru``), which the CI installs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from genppl.errors import ModelError

#: Where Debian's ``fortunes-ru`` installs its collections.
ROOT = Path("/usr/share/games/fortunes/ru")
#: An attribution line: indented, then ``--`` (an unindented ``--`` opens a line of dialogue).
_ATTRIBUTION = re.compile(r"^\s+--\s?(.*)$")


@dataclass(frozen=True)
class Fortune:
    """One saying: its text (attribution lines removed), its attributions (``""`` when
    unsigned) and the collection file it came from."""

    text: str
    attribution: str
    file: str


def data_dir(root: Path | None = None) -> Path:
    """The folder of the collections, checked to be there (a clear error says how to get it)."""
    folder = ROOT if root is None else Path(root)
    if not folder.is_dir():
        raise ModelError(f"{folder} is missing: the Russian fortunes come with Debian's package "
                         "fortunes-ru; install it with `sudo apt-get install fortunes-ru` (no "
                         "download at run time), or pass root= a folder of strfile files.")
    return folder


def collection_files(root: Path | None = None) -> list[Path]:
    """The collection files in name order (``.dat`` indexes and ``.u8`` links left out, so
    each collection is read once)."""
    folder = data_dir(root)
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8"))
    if not files:
        raise ModelError(f"{folder} holds no fortune collections; reinstall fortunes-ru.")
    return files


def parse(text: str, file: str = "") -> list[Fortune]:
    """The sayings of one strfile collection: split at lines holding only ``%`` (trailing
    blanks allowed), attribution lines set apart, empty sayings dropped.

    >>> [f.text for f in parse("One.\\n\\t-- A\\n%\\nTwo,\\n-- three.\\n%\\n")]
    ['One.', 'Two,\\n-- three.']
    >>> parse("One.\\n\\t-- A\\n%\\n")[0].attribution
    'A'
    """
    fortunes: list[Fortune] = []
    lines: list[str] = []
    for line in [*text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), "%"]:
        if line.rstrip() != "%":
            lines.append(line)
            continue
        body = [ln for ln in lines if not _ATTRIBUTION.match(ln)]
        signed = [m.group(1).strip() for ln in lines if (m := _ATTRIBUTION.match(ln))]
        saying = "\n".join(body).strip("\n")
        if saying.strip():
            fortunes.append(Fortune(saying, "; ".join(signed), file))
        lines = []
    return fortunes


def load(root: Path | None = None) -> tuple[Fortune, ...]:
    """Every saying of every collection, in a fixed order: collection files by name, then
    the sayings in file order."""
    fortunes: list[Fortune] = []
    for path in collection_files(root):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ModelError(f"{path} is not UTF-8 ({e}); fortunes-ru ships UTF-8 files, so "
                             "reinstall it.") from None
        fortunes += parse(text, path.name)
    return tuple(fortunes)
