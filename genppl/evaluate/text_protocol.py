"""The text protocol: held-out bits per character on the BBC split, for any character model.

A character model implements ``CharacterModel``: its ``alphabet`` and ``log_probs(codes)``,
the natural-log probability of each character of a code sequence given the characters before
it (``genppl.ngram.NGram`` is the first implementer). ``text(model)`` scores it on the
held-out articles of ``text_split.english()`` and returns a ``Row``; ``compressor(name)``
scores a standard-library compressor on the same text, the floor any model must beat.
"""

from __future__ import annotations

import bz2
import lzma
import math
import zlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

from genppl.data.text import decode
from genppl.errors import ModelError
from genppl.evaluate.rows import Row
from genppl.evaluate.text_split import Split, english

__all__ = ["COMPRESSORS", "UNIT", "CharacterModel", "compressor", "text"]

UNIT = "bits/char"

#: The standard library's compressors at their highest presets (bytes in, bytes out).
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "lzma": lambda data: lzma.compress(data, preset=9 | lzma.PRESET_EXTREME),
    "bz2": lambda data: bz2.compress(data, compresslevel=9),
    "zlib": lambda data: zlib.compress(data, level=9),
}


@runtime_checkable
class CharacterModel(Protocol):
    """What ``text`` needs of a model: the alphabet its codes index, and the natural-log
    probability of each character of ``codes`` given the text before it (shape ``(n,)``)."""

    alphabet: str

    def log_probs(self, codes: torch.Tensor) -> torch.Tensor: ...


def text(model: CharacterModel, *, split: Split | None = None, name: str = "model",
         entry: str = "", estimator: str = "exact", bound: str = "exact",
         command: str = "genppl.evaluate.text(model)",
         settings: dict[str, Any] | None = None) -> Row:
    """``model``'s cross-entropy on the held-out text of ``split`` (default: the full BBC
    split), in bits per character: ``-Σ log p(c_t | c_<t) / (n ln 2)``."""
    if not isinstance(model, CharacterModel):
        raise ModelError(f"genppl.evaluate.text: model={type(model).__name__} has no "
                         "`alphabet` and `log_probs(codes)`; implement CharacterModel.")
    split = english() if split is None else split
    if model.alphabet != split.alphabet:
        raise ModelError(f"genppl.evaluate.text: the model's alphabet {model.alphabet!r} is "
                         f"not the protocol's {split.alphabet!r}; fit the model on "
                         "genppl.evaluate.text_split.english().train.")
    log_probs = model.log_probs(split.test)
    if log_probs.shape != split.test.shape:
        raise ModelError(f"genppl.evaluate.text: log_probs gave shape {tuple(log_probs.shape)}"
                         f" for {len(split.test)} characters; return one value per character.")
    total = log_probs.sum()
    if not torch.isfinite(total):
        raise ModelError(f"genppl.evaluate.text: model {name!r} gives probability 0 (or NaN) "
                         "to some held-out character; smooth it so every character of the "
                         "alphabet is possible.")
    bits = float(-total / (len(split.test) * math.log(2)))
    return Row(name, entry, estimator, bound, bits, None, UNIT, command,
               dict(settings or {}, characters=len(split.test)))


def compressed_bits_per_char(name: str, held_out: str) -> float:
    """Bits per character of ``COMPRESSORS[name]``'s output for the UTF-8 bytes of
    ``held_out``: 8 · len(compressed) / len(held_out)."""
    if name not in COMPRESSORS:
        raise ValueError(f"compressor: name={name!r}; pass one of {sorted(COMPRESSORS)}.")
    return 8 * len(COMPRESSORS[name](held_out.encode("utf-8"))) / len(held_out)


def compressor(name: str, *, split: Split | None = None, command: str,
               settings: dict[str, Any] | None = None) -> Row:
    """The row of a standard-library compressor on the held-out text (the normalised,
    alphabet-restricted string the models are scored on)."""
    split = english() if split is None else split
    held_out = decode(split.test, split.alphabet)
    return Row(name, "", "compressor", "exact", compressed_bits_per_char(name, held_out), None,
               UNIT, command, dict(settings or {}, characters=len(held_out)))
