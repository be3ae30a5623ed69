"""What engines return: ``Posterior`` (draws and/or exact marginals) and ``FitResult``.

Draws are stored as ``(chain, draw, *shape)`` tensors in the data's compact layout (plates as
leading axes, chain steps stacked into a time axis), so every engine's output reads the same
and converts to ArviZ without reshaping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from genppl.errors import ModelError, suggest


@dataclass
class Posterior:
    """The answer of ``genppl.infer``.

    ``samples`` maps a node to draws of shape ``(chains, draws, *shape)``; ``marginals`` maps a
    finite node to exact state probabilities of shape ``(*shape, K)``. Either may be empty,
    depending on the engine. ``log_evidence`` is log p(data) where the engine computes it
    exactly; ``elbo`` is the variational lower bound where one was optimised.
    ``cardinalities`` gives the number of states of each finite node (from the model's
    graph), so that state frequencies have one shape whatever states were drawn.
    """

    model: str
    engine: str
    samples: dict[str, torch.Tensor] = field(default_factory=dict)
    marginals: dict[str, torch.Tensor] = field(default_factory=dict)
    log_evidence: float | None = None
    elbo: float | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    cardinalities: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str) -> torch.Tensor:
        """Draws of ``name`` with chains merged: shape ``(chains * draws, *shape)``."""
        if name not in self.samples:
            raise ModelError(f"posterior from {self.engine!r} has no draws of {name!r}."
                             + suggest(name, self.samples))
        s = self.samples[name]
        return s.reshape(-1, *s.shape[2:])

    def mean(self, name: str) -> torch.Tensor:
        """Posterior mean: from draws, or exactly from marginals (expected state index)."""
        if name in self.samples:
            return _as_float(self[name]).mean(0)
        probs = self._marginal(name)
        return (probs * _states(probs)).sum(-1)

    def std(self, name: str) -> torch.Tensor:
        """Posterior standard deviation, from draws or exactly from marginals."""
        if name in self.samples:
            return _std(_as_float(self[name]))
        probs = self._marginal(name)
        mean = (probs * _states(probs)).sum(-1, keepdim=True)
        return (probs * (_states(probs) - mean) ** 2).sum(-1).sqrt()

    def probs(self, name: str, states: int | None = None) -> torch.Tensor:
        """State probabilities ``(*shape, K)`` of a finite node: its exact marginal when the
        engine gives one, else the frequencies of its draws' states (values ``0..K-1``;
        ``K`` is ``states``, else the node's cardinality, else one more than the largest
        draw -- only for a posterior built by hand, without cardinalities)."""
        if name in self.marginals:
            return self.marginals[name]
        if name not in self.samples:
            self._marginal(name)  # the error naming what there is
        draws = self[name]
        if draws.is_floating_point() and not bool((draws == draws.round()).all()):
            raise ModelError(f"draws of {name!r} are not state indices; probs() needs a "
                             "finite node.")
        k = states or self.cardinalities.get(name) or int(draws.max()) + 1
        if int(draws.max()) >= k or int(draws.min()) < 0:
            raise ModelError(f"draws of {name!r} hold states outside 0..{k - 1}; pass "
                             "states= with the node's number of states.")
        return torch.nn.functional.one_hot(draws.long(), k).double().mean(0)

    def _marginal(self, name: str) -> torch.Tensor:
        if name not in self.marginals:
            raise ModelError(f"posterior from {self.engine!r} has no draws or marginal of "
                             f"{name!r}." + suggest(name, [*self.samples, *self.marginals]))
        return self.marginals[name]

    def summary(self, max_rows: int = 8) -> str:
        """A text table: mean, sd, 5%/95% quantiles and ArviZ's diagnostics (``diagnostics``:
        MCSE of the mean, bulk and tail ESS, rank-normalised split R-hat) per scalar.

        At most ``max_rows`` entries of each node are shown (a per-crab assignment would
        otherwise fill a screen); a last row says how many were left out.
        """
        rows: list[tuple[str, ...]] = []
        for name, draws in self.samples.items():
            flat = _as_float(draws.reshape(draws.shape[0], draws.shape[1], -1))
            count = flat.shape[-1]
            for j in range(min(count, max_rows)):
                label = name if count == 1 else f"{name}[{_index(draws.shape[2:], j)}]"
                rows.append(_draw_row(label, flat[..., j]))
            rows.extend(_omitted(name, count, max_rows))
        for name, probs in self.marginals.items():
            if name in self.samples:
                continue
            flat = probs.reshape(-1, probs.shape[-1])
            count = flat.shape[0]
            for j in range(min(count, max_rows)):
                label = name if count == 1 else f"{name}[{_index(probs.shape[:-1], j)}]"
                p = ", ".join(f"{v:.4f}" for v in flat[j].tolist()[:6])
                rows.append((label, "", "", "", "", "", "", "", "", f"P = ({p})"))
            rows.extend(_omitted(name, count, max_rows))
        header = ("node", "mean", "sd", "5%", "95%", "mcse_mean", "ess_bulk", "ess_tail",
                  "r_hat", "")
        lines = [f"{self.model} | engine={self.engine} | {self.seconds:.2f}s" + (
            f" | log p(data)={self.log_evidence:.4f}" if self.log_evidence is not None else "") + (
            f" | elbo={self.elbo:.4f}" if self.elbo is not None else "")]
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        for r in (header, *rows):
            cells = (c.rjust(w) if i else c.ljust(w)
                     for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)

    def to_arviz(self) -> Any:
        """An ArviZ ``InferenceData`` with every draw (chains kept apart)."""
        az = _arviz()
        posterior = {k: v.detach().cpu().numpy() for k, v in self.samples.items()}
        if not posterior:
            raise ModelError(f"the {self.engine!r} engine returned exact marginals and no draws; "
                             "use .marginals, or an engine that samples, for ArviZ.")
        return az.from_dict(posterior=posterior, attrs={"engine": self.engine,
                                                        "model": self.model})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready digest: means and sds of draws, marginals, evidence, timing."""
        out: dict[str, Any] = {"model": self.model, "engine": self.engine,
                               "seconds": self.seconds, "log_evidence": self.log_evidence,
                               "elbo": self.elbo, "mean": {}, "sd": {}, "marginals": {}}
        for name in self.samples:
            out["mean"][name] = self.mean(name).tolist()
            out["sd"][name] = self.std(name).tolist()
        for name, probs in self.marginals.items():
            out["marginals"][name] = probs.tolist()
        return out


@dataclass
class FitResult:
    """The answer of ``genppl.fit``: fitted params, the loss trajectory, and a posterior where
    the engine gives one (e.g. the guide's)."""

    model: str
    engine: str
    params: dict[str, torch.Tensor]
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    posterior: Posterior | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{self.model} | engine={self.engine} | {self.seconds:.2f}s | "
                 f"{len(self.losses)} steps" + (f" | final loss={self.losses[-1]:.4f}"
                                               if self.losses else "")]
        for name, value in self.params.items():
            flat = value.detach().reshape(-1)
            shown = ", ".join(f"{v:.4g}" for v in flat[:8].tolist())
            more = ", ..." if flat.numel() > 8 else ""
            lines.append(f"  {name} {tuple(value.shape)}: [{shown}{more}]")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        small = {k: v.detach().cpu().tolist() for k, v in self.params.items()
                 if v.numel() <= 10_000}
        return {"model": self.model, "engine": self.engine, "seconds": self.seconds,
                "final_loss": self.losses[-1] if self.losses else None,
                "steps": len(self.losses), "params": small,
                "posterior": self.posterior.to_dict() if self.posterior else None}


def _omitted(name: str, count: int, shown: int) -> list[tuple[str, ...]]:
    if count <= shown:
        return []
    return [(f"{name}[...]", "", "", "", "", "", "", "", "", f"({count - shown} more not shown)")]


def _std(draws: torch.Tensor) -> torch.Tensor:
    """Sample standard deviation over draws; zero (not NaN) for a single draw."""
    return draws.std(0, correction=1 if draws.shape[0] > 1 else 0)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _states(probs: torch.Tensor) -> torch.Tensor:
    return torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)


def _index(shape: torch.Size, flat: int) -> str:
    idx = []
    for size in reversed(shape):
        idx.append(flat % size)
        flat //= size
    return ",".join(str(i) for i in reversed(idx))


def _draw_row(label: str, x: torch.Tensor) -> tuple[str, ...]:
    """x: (chains, draws)."""
    flat = x.reshape(-1)
    q = torch.quantile(flat.to(torch.float64), torch.tensor([0.05, 0.95], dtype=torch.float64))
    stats = diagnostics(x) if x.shape[1] >= 4 and float(_std(flat)) > 0 else {}
    cells = [f"{stats[k]:{fmt}}" if math.isfinite(stats.get(k, math.nan)) else ""
             for k, fmt in (("mcse_mean", ".2g"), ("ess_bulk", ".0f"), ("ess_tail", ".0f"),
                            ("r_hat", ".3f"))]
    return (label, f"{float(flat.mean()):.4g}", f"{float(_std(flat)):.4g}",
            f"{float(q[0]):.4g}", f"{float(q[1]):.4g}", *cells, "")


def diagnostics(x: torch.Tensor) -> dict[str, float]:
    """ArviZ's convergence diagnostics of draws ``(chains, draws)`` of one scalar (Vehtari
    et al. 2021): Monte Carlo standard error of the mean, bulk and tail effective sample
    sizes, rank-normalised split R-hat. One chain is judged as its two halves (ArviZ wants
    two chains for R-hat)."""
    import logging
    import warnings

    az = _arviz()
    draws = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    if draws.shape[0] == 1:
        half = draws.shape[1] // 2
        draws = draws[:, : 2 * half].reshape(2, half)
    quiet = logging.getLogger("arviz")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it logs a warning for chains it finds short
    try:
        with warnings.catch_warnings():
            # draws of a few distinct values can leave a tail quantile's indicator constant:
            # that diagnostic is then NaN (shown blank), not an error
            warnings.simplefilter("ignore", RuntimeWarning)
            values = {"mcse_mean": az.mcse(draws, method="mean"),
                      "ess_bulk": az.ess(draws, method="bulk"),
                      "ess_tail": az.ess(draws, method="tail"),
                      "r_hat": az.rhat(draws)}
    finally:
        quiet.setLevel(level)
    return {k: float(torch.as_tensor(v).reshape(-1)[0]) for k, v in values.items()}


def _arviz() -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # ArviZ announces its refactor
        import arviz

    return arviz
