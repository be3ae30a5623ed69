"""Character n-gram models (Shannon 1948) as back-off automata, and as chains on the DSL.

An order-k character model predicts the next character from the last k; as a chain it is
first-order over contexts of length k: the state is the context, and reading a character
moves it to the next context. The state space is kept sparse: only contexts seen in training
are states (the exact table would have V^k rows). Probabilities are Witten-Bell interpolated
(Witten & Bell 1991; the estimator of PPM-C): P_k(c | h) = (n(h, c) + T(h) P_{k-1}(c | h'))
/ (n(h) + T(h)), with h' the context without its oldest character and T(h) the number of
distinct characters seen after h; order 0 is add-one smoothed, so every character of the
alphabet has positive probability everywhere. A history whose last k characters were never
seen as a context backs off to its longest suffix that was, so the chain's state is that
suffix (a back-off automaton; states of every length up to k).

The same fitted tables are declared on the DSL as a chain (``build_ngram_chain``): the
character is an observed node reading the previous state, and the state a point mass at the
successor of the previous state and the new character. ``sample_text`` draws from it with
``engine="prior"`` (ancestral sampling, one ``pyro.sample`` per step), and the compiled Pyro
model's log-probability of a text is the same number the tables give.

Texts are character codes over an alphabet: ``genppl.data.text.normalise`` and ``encode``
make them, ``decode`` reads them back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyro.distributions as dist
import torch

from genppl.data.text import decode
from genppl.dsl.model import Model
from genppl.errors import ModelError
from genppl.inference import infer


@dataclass(frozen=True)
class NGram:
    """A fitted order-``order`` model as a back-off automaton over the seen contexts.

    State ``s`` is a context of ``lengths[s]`` characters (base-V number ``ids[s]``, oldest
    character most significant); state 0 is the empty context. ``probs[s]`` is P(next
    character | context), ``successor[s, c]`` the state after reading ``c``: the longest
    suffix, of at most ``order`` characters, of the context followed by ``c`` that was seen.
    """

    order: int
    alphabet: str
    lengths: torch.Tensor  # (S,) long
    ids: torch.Tensor  # (S,) long
    probs: torch.Tensor  # (S, V) float64
    successor: torch.Tensor  # (S, V) long

    @property
    def states(self) -> int:
        return len(self.lengths)

    def _lookup(self, length: int, ids: torch.Tensor) -> torch.Tensor:
        """State of each context of ``length`` characters with the given ids; -1 if unseen."""
        block = (self.lengths == length).nonzero().squeeze(-1)  # never empty (fit_ngram)
        known = self.ids[block]  # sorted within a length
        pos = torch.searchsorted(known, ids).clamp(max=len(known) - 1)
        return torch.where(known[pos] == ids, block[pos], -1)

    def states_before(self, codes: torch.Tensor) -> torch.Tensor:
        """The state from which each character of ``codes`` is predicted: the longest seen
        suffix of the text before it (empty at the start), for all positions at once."""
        v = len(self.alphabet)
        n = len(codes)
        state = torch.zeros(n, dtype=torch.long)
        window = torch.zeros(n, dtype=torch.long)  # id of the `length` characters before t
        for length in range(1, self.order + 1):
            shifted = torch.zeros(n, dtype=torch.long)
            shifted[length:] = codes[: n - length]
            window = window + shifted * v ** (length - 1)
            found = self._lookup(length, window)
            ok = (found >= 0) & (torch.arange(n) >= length)
            state = torch.where(ok, found, state)
        return state

    def log_probs(self, codes: torch.Tensor) -> torch.Tensor:
        """Natural-log probability of each character of ``codes`` given the text before it."""
        return self.probs[self.states_before(codes), codes].log()

    def bits_per_char(self, codes: torch.Tensor) -> float:
        """Per-character cross-entropy of ``codes`` under the model, in bits."""
        return float(-self.log_probs(codes).sum() / (len(codes) * math.log(2)))


def fit_ngram(codes: torch.Tensor, order: int, alphabet: str) -> NGram:
    """Count contexts of 0..``order`` characters in ``codes`` (indices into ``alphabet``)
    and smooth them (module docstring)."""
    v = len(alphabet)
    if order < 0 or v ** (order + 1) >= 2 ** 62:
        raise ModelError(f"fit_ngram: order={order} with {v} symbols is out of range; the "
                         "context ids must fit in 62 bits.")
    if len(codes) <= order:
        raise ModelError(f"fit_ngram: {len(codes)} characters cannot train order {order}.")
    codes = torch.as_tensor(codes, dtype=torch.long).cpu()
    n = len(codes)
    lengths, ids, probs = [], [], []
    below: torch.Tensor | None = None  # P_{k-1}(c | context), one row per context of k-1
    below_ids = torch.zeros(1, dtype=torch.long)
    context = torch.zeros(n, dtype=torch.long)  # id of the k characters before t
    for k in range(order + 1):
        if k:
            shifted = torch.zeros(n, dtype=torch.long)
            shifted[k:] = codes[: n - k]
            context = context + shifted * v ** (k - 1)
        h, c = context[k:], codes[k:]
        seen, row = torch.unique(h, return_inverse=True)
        counts = torch.zeros(len(seen), v, dtype=torch.float64)
        counts.index_put_((row, c), torch.ones(len(c), dtype=torch.float64), accumulate=True)
        if below is None:  # order 0: add one to every character
            p = (counts + 1) / (counts.sum(-1, keepdim=True) + v)
        else:  # Witten-Bell: back off to the context without its oldest character
            parent = torch.searchsorted(below_ids, seen % v ** (k - 1))
            distinct = (counts > 0).sum(-1, keepdim=True).to(counts.dtype)
            p = (counts + distinct * below[parent]) / (counts.sum(-1, keepdim=True) + distinct)
        lengths.append(torch.full((len(seen),), k, dtype=torch.long))
        ids.append(seen)
        probs.append(p)
        below, below_ids = p, seen
    ngram = NGram(order, alphabet, torch.cat(lengths), torch.cat(ids), torch.cat(probs),
                  torch.empty(0, 0, dtype=torch.long))
    return NGram(order, alphabet, ngram.lengths, ngram.ids, ngram.probs, _successors(ngram))


def _successors(ngram: NGram) -> torch.Tensor:
    """``successor[s, c]``: the longest seen suffix (at most ``order`` characters) of the
    context of ``s`` followed by ``c``; seen contexts are closed under taking suffixes, so
    the empty context is always a fallback."""
    v = len(ngram.alphabet)
    ext = ngram.ids[:, None] * v + torch.arange(v)  # (S, V): context + c, as a base-V id
    ext_len = (ngram.lengths + 1).clamp(max=ngram.order)[:, None].expand(-1, v)
    successor = torch.zeros(ngram.states, v, dtype=torch.long)
    for length in range(1, ngram.order + 1):
        found = ngram._lookup(length, ext % v ** length)
        successor = torch.where((found >= 0) & (ext_len >= length), found, successor)
    return successor


def build_ngram_chain(ngram: NGram) -> Model:
    """The fitted order-k model as a chain on the DSL: the character reads the previous
    state, the state is a point mass at ``successor[state_prev, char]`` (a deterministic
    node cannot read its own previous step, a latent with ``init`` can). The tables are
    known numbers, declared as deterministic nodes made in the model's dtype and device."""
    m = Model(f"char_{ngram.order}gram")
    m.deterministic("probs", _table(ngram.probs), event_dim=2)
    m.deterministic("successor", _table(ngram.successor), event_dim=2)
    with m.chain("t"):
        m.observed("char", lambda state_prev, probs: dist.Categorical(probs[state_prev]),
                   init=lambda probs: dist.Categorical(probs[0]))
        m.latent("state", lambda state_prev, char, successor: dist.Delta(
                     successor[state_prev, char]),
                 init=lambda char, successor: dist.Delta(successor[0, char]))
    return m


def _table(values: torch.Tensor) -> Any:
    """A factory of no parents giving ``values`` where the model's factories run (floating
    tables in the model's dtype, integer tables exact)."""
    def make() -> torch.Tensor:
        dtype = torch.get_default_dtype() if values.is_floating_point() else values.dtype
        return values.to(device=torch.get_default_device(), dtype=dtype)
    return make


def sample_text(ngram: NGram, length: int, *, seed: int = 0,
                device: str = "cpu", dtype: torch.dtype = torch.float64) -> str:
    """``length`` characters drawn from the model by ``engine="prior"`` on its DSL chain."""
    if not isinstance(length, int) or length < 1:
        raise ModelError(f"sample_text: length={length!r}; pass a positive int.")
    model = build_ngram_chain(ngram).to(device, dtype)
    draw = infer(model, {}, engine="prior", sizes={"t": length}, num_samples=1,
                        seed=seed, progress=False)
    return decode(draw.samples["char"][0].reshape(-1).cpu(), ngram.alphabet)
