"""Hidden Markov models declared once on the DSL, and Rabiner's three problems on top.

``categorical_hmm`` and ``gaussian_hmm`` return an ordinary ``genppl.Model``: params (or fixed
tables) ``start``, ``trans`` and ``emit`` (or ``means``/``scales``), a latent state chain
``z`` and its emissions ``x``, inside a plate ``seq`` so that a batch of sequences is one data
array of shape ``(T, N)``. Sequences of different lengths share that array: a boolean input
``valid`` of the same shape marks the real steps, and both the transitions and the emissions
are masked with it (Pyro's ``Distribution.mask``), so a padded step adds nothing to the log
joint, to any expected count, or to the Viterbi score.

``HMM`` wraps such a model and answers the three problems with the engines alone, no
separate forward-backward: ``log_likelihood`` and ``posterior`` (``engine="exact"``,
sum-product), ``viterbi`` (``engine="exact"``, ``map=True``), ``fit`` (Baum-Welch is
``engine="em"``), and ``sample`` (``engine="prior"``).

Conventions: ``start[k]`` is P(first state = k) (hmmlearn's ``startprob_``; Pyro's
``DiscreteHMM`` instead applies its initial distribution *before* a first transition);
``trans[i, j]`` = P(next = j | current = i); ``emit[k, m]`` = P(symbol m | state k). Gaussian
emissions are univariate: ``x_t ~ Normal(means[z_t], scales[z_t])``. A 0 in a table is a
structural zero, exact on every engine's path (``genppl.distributions.exact_log_probs``):
what it rules out gets posterior 0, no Viterbi path takes it, evidence that needs it is
a probability-zero ``ModelError``, and ``fit`` keeps it 0 as hmmlearn does (unless
pseudo-counts add mass everywhere).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyro.distributions as dist
import torch
from torch.distributions import constraints

from genppl import inference
from genppl.dsl.model import Model
from genppl.errors import ModelError
from genppl.pyro.program import default_tensor_context
from genppl.results import FitResult, Posterior

Table = Any  # a tensor, an array or nested lists
SEQ, TIME, VALID = "seq", "t", "valid"


# ---------------------------------------------------------------------- constructors
def categorical_hmm(states: int, symbols: int, *, name: str = "categorical_hmm",
                    start: Table | None = None, trans: Table | None = None,
                    emit: Table | None = None, learnable: bool = True, seed: int = 0,
                    batched: bool = True, latent: str = "z", observed: str = "x") -> Model:
    """An HMM with ``states`` hidden states emitting one of ``symbols`` symbols per step.

    Tables not given are drawn from ``seed`` (rows uniform on the simplex, kept away from
    zero so that EM can move them), with a private generator: the same seed gives the same
    model and leaves the global RNGs alone. ``learnable=False`` declares the tables as
    deterministic nodes (known numbers, shown in the graph, outside Pyro's param store).
    ``batched=False`` declares one sequence of shape ``(T,)``: no plate and no ``valid`` mask.
    """
    k = _count(states, "states")
    m = _count(symbols, "symbols")
    gen = torch.Generator().manual_seed(seed)
    tables = {"start": _simplex_table(start, (k,), "start", gen),
              "trans": _simplex_table(trans, (k, k), "trans", gen),
              "emit": _simplex_table(emit, (k, m), "emit", gen)}
    model = Model(name)
    _declare(model, tables, learnable, constraints.simplex)

    def emission(z: torch.Tensor, emit: torch.Tensor) -> dist.Distribution:
        return dist.Categorical(emit[z])

    _body(model, emission, ("emit",), batched, latent, observed)
    return model


def gaussian_hmm(states: int, *, name: str = "gaussian_hmm", start: Table | None = None,
                 trans: Table | None = None, means: Table | None = None,
                 scales: Table | None = None, learnable: bool = True, seed: int = 0,
                 batched: bool = True, latent: str = "z", observed: str = "x") -> Model:
    """An HMM with univariate Gaussian emissions ``Normal(means[z], scales[z])``.

    Defaults drawn from ``seed``: means sorted standard normal draws (so state 0 has the
    lowest mean, which makes fitted states comparable across runs), scales 1. Rescale the data
    or pass ``means``/``scales`` when the data are far from unit scale.
    """
    k = _count(states, "states")
    gen = torch.Generator().manual_seed(seed)
    tables = {"start": _simplex_table(start, (k,), "start", gen),
              "trans": _simplex_table(trans, (k, k), "trans", gen)}
    if means is None:
        means = torch.randn(k, generator=gen, dtype=torch.float64).sort().values
    tables["means"] = _real_table(means, (k,), "means")
    tables["scales"] = _real_table(torch.ones(k, dtype=torch.float64) if scales is None
                                   else scales, (k,), "scales")
    if not bool((tables["scales"] > 0).all()):
        raise ModelError(f"scales={tables['scales'].tolist()}: every scale must be positive.")
    model = Model(name)
    _declare(model, {"start": tables["start"], "trans": tables["trans"]}, learnable,
             constraints.simplex)
    _declare(model, {"means": tables["means"]}, learnable, constraints.real)
    _declare(model, {"scales": tables["scales"]}, learnable, constraints.positive)

    def emission(z: torch.Tensor, means: torch.Tensor, scales: torch.Tensor
                 ) -> dist.Distribution:
        return dist.Normal(means[z], scales[z])

    _body(model, emission, ("means", "scales"), batched, latent, observed)
    return model


def _declare(model: Model, tables: dict[str, torch.Tensor], learnable: bool,
             constraint: constraints.Constraint) -> None:
    for key, table in tables.items():
        if learnable:
            model.param(key, table, constraint=constraint)
        else:
            # Nested lists, so that the factory's tensor takes the model's dtype and device.
            model.deterministic(key, _constant(table.tolist()), event_dim=table.dim())


def _constant(values: list[Any]) -> Any:
    """A factory of no parents making ``values`` in the model's dtype and device."""
    return lambda: torch.tensor(values)


def _body(model: Model, emission: Any, emit_params: tuple[str, ...], batched: bool,
          latent: str, observed: str) -> None:
    """The state chain and its emissions; when ``batched``, inside a plate of sequences and
    masked by ``valid``. A padded step's transition is masked too, not only its emission:
    otherwise the Viterbi score would reward paths for where they could go after the end,
    and EM would count transitions that never happened."""
    prev = latent + "_prev"
    reads = [VALID] if batched else []

    def transition(state: torch.Tensor, trans: torch.Tensor, *valid: torch.Tensor
                   ) -> dist.Distribution:
        d = dist.Categorical(trans[state])
        return d.mask(valid[0]) if valid else d

    def emitted(state: torch.Tensor, *rest: torch.Tensor) -> dist.Distribution:
        d = emission(state, *rest[:len(emit_params)])
        valid = rest[len(emit_params):]
        return d.mask(valid[0]) if valid else d

    with contextlib.ExitStack() as stack:
        if batched:
            stack.enter_context(model.plate(SEQ))
        stack.enter_context(model.chain(TIME))
        if batched:
            model.input(VALID)
        # (the node names are the caller's, so the parents are named explicitly)
        model.latent(latent, transition, parents=[prev, "trans", *reads],
                     init=lambda start: dist.Categorical(start))
        model.observed(observed, emitted, parents=[latent, *emit_params, *reads])


def _count(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ModelError(f"{name}={value!r}: pass a positive int.")
    return value


def _real_table(value: Table, shape: tuple[int, ...], name: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as e:
        raise ModelError(f"{name}= cannot become a tensor ({e}); pass numbers of shape "
                         f"{shape}.") from None
    if tuple(t.shape) != shape:
        raise ModelError(f"{name}= has shape {tuple(t.shape)}; this HMM needs {shape}.")
    if not bool(torch.isfinite(t).all()):
        raise ModelError(f"{name}= has non-finite entries; pass finite numbers.")
    return t


def _simplex_table(value: Table | None, shape: tuple[int, ...], name: str,
                   gen: torch.Generator) -> torch.Tensor:
    """A given table checked to have probability rows, or a random one (rows drawn uniformly
    on the simplex, mixed with the uniform row so that no entry is near 0)."""
    if value is None:
        draws = -torch.rand(shape, generator=gen, dtype=torch.float64).log()
        rows = draws / draws.sum(-1, keepdim=True)
        return 0.5 * rows + 0.5 / shape[-1]
    t = _real_table(value, shape, name)
    if bool((t < 0).any()) or not torch.allclose(t.sum(-1), torch.ones(shape[:-1],
                                                 dtype=t.dtype), atol=1e-6):
        raise ModelError(f"{name}= must have non-negative rows summing to 1 (row sums "
                         f"{t.sum(-1).tolist()}); normalise it, e.g. t / t.sum(-1, keepdim=True).")
    return t / t.sum(-1, keepdim=True)


# ---------------------------------------------------------------------- data helpers
def pack_sequences(sequences: Sequence[Any], *, pad: float = 0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, lengths)``: sequences of different lengths as one ``(T, N)`` array, time first
    (the chain's data layout), padded with ``pad`` after each sequence's end."""
    if isinstance(sequences, torch.Tensor) or not len(sequences):
        raise ModelError("pack_sequences(sequences): pass a non-empty list of 1-D sequences.")
    seqs = [torch.as_tensor(s) for s in sequences]
    bad = [i for i, s in enumerate(seqs) if s.dim() != 1 or len(s) == 0]
    if bad:
        raise ModelError(f"pack_sequences: sequence {bad[0]} has shape "
                         f"{tuple(seqs[bad[0]].shape)}; each sequence must be 1-D and non-empty.")
    lengths = torch.tensor([len(s) for s in seqs])
    dtype = torch.result_type(torch.stack([s[0] for s in seqs]), torch.as_tensor(pad))
    x = torch.full((int(lengths.max()), len(seqs)), pad, dtype=dtype)
    for n, s in enumerate(seqs):
        x[: len(s), n] = s
    return x, lengths


def unpack_sequences(x: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """The inverse of ``pack_sequences``: one tensor per column, cut at its length (works on
    anything laid out ``(T, N, ...)``, such as posteriors and Viterbi paths)."""
    return [x[: int(n), i] for i, n in enumerate(lengths)]


@dataclass(frozen=True)
class Viterbi:
    """The most probable state path of each sequence (``-1`` after a sequence's end) and
    its log joint probability log p(x_n, path_n)."""

    paths: torch.Tensor  # (T, N), long
    log_joint: torch.Tensor  # (N,)


@dataclass(frozen=True)
class Fit:
    """A Baum-Welch run: log p(x) before each M-step, whether the change fell under ``tol``,
    and the engine's own ``FitResult``."""

    log_likelihood: list[float]
    converged: bool
    result: FitResult


@dataclass(frozen=True)
class Batch:
    """Sequences checked and laid out for the model: padded steps hold a valid symbol."""

    data: dict[str, torch.Tensor]
    lengths: torch.Tensor  # (N,)
    valid: torch.Tensor  # (T, N) bool

    @property
    def padded_steps(self) -> int:
        return int((~self.valid).sum())


# ---------------------------------------------------------------------- Rabiner's problems
class HMM:
    """An HMM model with Rabiner's three problems as methods, each one engine call.

    ``params`` holds the current values of the learnable tables (empty: their initial
    values); ``fit`` replaces them. Arrays are laid out ``(T, N)``, time first; ``lengths``
    gives each column's length (default: all ``T``), or pass a list of 1-D sequences.
    """

    def __init__(self, model: Model, *, states: int, symbols: int | None = None,
                 latent: str = "z", observed: str = "x") -> None:
        if SEQ not in model.plates or VALID not in model.nodes:
            raise ModelError(f"HMM(model={model.name!r}): the model needs a plate {SEQ!r} of "
                             f"sequences and a mask input {VALID!r}; build it with "
                             "categorical_hmm(...) or gaussian_hmm(...) and batched=True.")
        self.model = model
        self.states = _count(states, "states")
        self.symbols = symbols
        self.latent = latent
        self.observed = observed
        self.params: dict[str, torch.Tensor] = {}

    @classmethod
    def categorical(cls, states: int, symbols: int, **options: Any) -> HMM:
        """``HMM`` of ``categorical_hmm(states, symbols, **options)``."""
        model = categorical_hmm(states, symbols, **options)
        return cls(model, states=states, symbols=symbols,
                   latent=options.get("latent", "z"), observed=options.get("observed", "x"))

    @classmethod
    def gaussian(cls, states: int, **options: Any) -> HMM:
        """``HMM`` of ``gaussian_hmm(states, **options)`` (univariate emissions)."""
        model = gaussian_hmm(states, **options)
        return cls(model, states=states, latent=options.get("latent", "z"),
                   observed=options.get("observed", "x"))

    # ------------------------------------------------------------------ the tables
    def tables(self) -> dict[str, torch.Tensor]:
        """Current ``start``, ``trans`` and emission tables, in the model's dtype."""
        out = {}
        for node in self.model.nodes.values():
            if node.kind == "param":
                value = self.params.get(node.name, node.value)
                out[node.name] = torch.as_tensor(value).to(self.model.device, self.model.dtype)
            elif node.kind == "deterministic":
                with default_tensor_context(self.model.device, self.model.dtype):
                    out[node.name] = node.fn()
        return out

    # ------------------------------------------------------------------ problem 1
    def log_likelihood(self, x: Any, lengths: Any = None) -> torch.Tensor:
        """log p(x_n) of each sequence, shape ``(N,)``, in one engine call (``evidence_per``
        the plate of sequences); each padded step's masked transition adds log K, removed."""
        batch = self.batch(x, lengths)
        post = self._infer(batch.data, evidence_per=SEQ)
        per_seq = post.info["log_evidence_per"].reshape(-1)
        padded = (~batch.valid).sum(0).to(per_seq)
        return per_seq - padded * math.log(self.states)

    def score(self, x: Any, lengths: Any = None) -> float:
        """log p(x) of the whole batch (the sum over sequences), in one engine call."""
        batch = self.batch(x, lengths)
        return float(self._infer(batch.data).log_evidence) - self._padding(batch)

    # ------------------------------------------------------------------ problem 2
    def posterior(self, x: Any, lengths: Any = None) -> torch.Tensor:
        """P(z_t = k | x_n) as ``(T, N, K)``; rows after a sequence's end are 0."""
        batch = self.batch(x, lengths)
        probs = self._infer(batch.data).marginals[self.latent]
        return probs * batch.valid.unsqueeze(-1).to(probs)

    def viterbi(self, x: Any, lengths: Any = None) -> Viterbi:
        """The most probable path of each sequence and its log joint (max-product)."""
        batch = self.batch(x, lengths)
        post = self._infer(batch.data, map=True, marginals=False, evidence_per=SEQ)
        path = post.info["map"][self.latent]
        # a masked (padded) step adds log 1 under max-product: no padding constant here
        return Viterbi(path.masked_fill(~batch.valid, -1), post.info["map_log_joint_per"])

    # ------------------------------------------------------------------ problem 3
    def fit(self, x: Any, lengths: Any = None, *, steps: int = 100, tol: float = 1e-8,
            pseudo_counts: float = 0.0, progress: bool = False) -> Fit:
        """Baum-Welch (``engine="em"``) from the current tables; ``params`` become the fitted
        ones. The trajectory is log p(x) before each M-step, so its last entry belongs to the
        second-to-last tables when the run stops at ``steps``."""
        if not self.model.names("param"):
            raise ModelError(f"HMM.fit: model {self.model.name!r} has fixed tables; build it "
                             "with learnable=True to fit them.")
        batch = self.batch(x, lengths)
        result = inference.fit(self.model, batch.data, engine="em", steps=steps, tol=tol,
                               pseudo_counts=pseudo_counts, init=self.params,
                               progress=progress)
        self.params = {k: v.detach().clone() for k, v in result.params.items()}
        padding = self._padding(batch)
        trajectory = [value - padding for value in result.info["log_likelihood"]]
        return Fit(trajectory, bool(result.info["converged"]), result)

    # ------------------------------------------------------------------ sampling
    def sample(self, num_sequences: int, length: int, seed: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, z)``, each ``(length, num_sequences)``: ancestral draws from the current
        tables (``engine="prior"``)."""
        valid = torch.ones(_count(length, "length"), _count(num_sequences, "num_sequences"),
                           dtype=torch.bool)
        draw = inference.infer(self.model, {VALID: valid}, engine="prior", num_samples=1,
                            seed=seed, progress=False, params=self.params)
        return draw.samples[self.observed][0, 0], draw.samples[self.latent][0, 0]

    # ------------------------------------------------------------------ data
    def batch(self, x: Any, lengths: Any = None) -> Batch:
        """Check ``x`` (and ``lengths``) and lay them out as the model's data."""
        if lengths is None and isinstance(x, (list, tuple)):
            x, lengths = pack_sequences(x)
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ModelError(f"x cannot become a tensor ({e}); pass a (T, N) array or a list "
                             "of 1-D sequences.") from None
        if x.dim() != 2 or 0 in x.shape:
            raise ModelError(f"x has shape {tuple(x.shape)}; pass (T, N): time first, one "
                             "column per sequence (x[:, None] for one sequence, or a list of "
                             "sequences of different lengths).")
        steps, count = x.shape
        if lengths is None:
            lengths = torch.full((count,), steps)
        lengths = torch.as_tensor(lengths)
        if lengths.shape != (count,) or lengths.is_floating_point() or lengths.is_complex():
            raise ModelError(f"lengths has shape {tuple(lengths.shape)} and dtype "
                             f"{lengths.dtype}; pass {count} integers, one per column of x.")
        lengths = lengths.to(torch.long).cpu()
        if bool((lengths < 1).any()) or bool((lengths > steps).any()):
            raise ModelError(f"lengths must lie in 1..{steps} (the rows of x), got "
                             f"{lengths.min().item()}..{lengths.max().item()}; pad x to the "
                             "longest sequence, time first.")
        valid = torch.arange(steps).unsqueeze(-1) < lengths
        x = self._checked_symbols(x.cpu(), valid)
        return Batch({self.observed: x, VALID: valid}, lengths, valid)

    def _checked_symbols(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if self.symbols is None:
            if not x.is_floating_point():
                x = x.to(torch.float64)
            if not bool(torch.isfinite(x[valid]).all()):
                raise ModelError("x has non-finite values inside the sequences; drop them or "
                                 "mark them as padding with lengths.")
            return x.masked_fill(~valid, 0.0)
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise ModelError(f"x has dtype {x.dtype}; symbols are integers 0..{self.symbols - 1}"
                             " (map labels to codes first).")
        inside = x[valid]
        if bool((inside < 0).any()) or bool((inside >= self.symbols).any()):
            raise ModelError(f"x has symbols {int(inside.min())}..{int(inside.max())} inside the "
                             f"sequences; this HMM has symbols 0..{self.symbols - 1}. Recode the "
                             "data or build the HMM with more symbols.")
        return x.to(torch.long).masked_fill(~valid, 0)  # padding: any valid symbol

    # ------------------------------------------------------------------ engine calls
    def _infer(self, data: dict[str, torch.Tensor], **options: Any) -> Posterior:
        return inference.infer(self.model, data, engine="exact", params=self.params, **options)

    def _padding(self, batch: Batch) -> float:
        """What masked steps add to the engine's log p(data): a masked transition weighs
        every next state by 1, so each padded step sums to K rather than 1."""
        return batch.padded_steps * math.log(self.states)
