"""A leaderboard row: one number on a likelihood scale, with what it is and how to remake it.

Every scale (text in bits per character, images in nats per image) reports a *cost*: the
negative log-likelihood of held-out data per unit, lower is better. ``bound`` says how the
number relates to the model's true held-out cost, named as the literature names likelihood
estimators (an ELBO is a "lower bound" on the log-likelihood):

- ``exact``: computed exactly (an n-gram's held-out cross-entropy, a compressor's output
  length counted in bytes);
- ``lower``: a (stochastic) lower bound on the log-likelihood, so the true cost is at most the
  value (ELBO, IWAE-k, AIS);
- ``upper``: an upper bound on the log-likelihood, so the true cost is at least the value
  (reverse AIS, BDMC);
- ``point``: an estimate with no known direction.

``diagnostics`` holds other measurements of the row's model and estimator, shown under the
table but never ranked: the bidirectional Monte Carlo sandwich on simulated data, the
effective sample size of importance weights, sample quality in LeNet features.

Rows are JSON-able (``to_dict``/``from_dict``) so the leaderboard can cache them and write
them out; construction refuses a row that could not be read back or compared.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["BOUNDS", "Row"]

#: The relations a row's value may have to the true value (module docstring).
BOUNDS = ("exact", "lower", "upper", "point")


@dataclass(frozen=True)
class Row:
    """One leaderboard row (module docstring). ``stderr`` is the estimator's standard error
    (None for exact rows); ``command`` is the shell command that reproduces the row;
    ``settings`` the JSON-able settings its evaluation ran with; ``diagnostics`` other
    JSON-able measurements (module docstring)."""

    model: str
    entry: str
    estimator: str
    bound: str
    value: float
    stderr: float | None
    unit: str
    command: str
    settings: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.bound not in BOUNDS:
            raise ValueError(f"Row {self.model!r}: bound={self.bound!r}; pass one of {BOUNDS}.")
        for name in ("model", "estimator", "unit", "command"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"Row: {name} must be a non-empty string, got "
                                 f"{getattr(self, name)!r}.")
        if not isinstance(self.value, int | float) or not math.isfinite(self.value):
            raise ValueError(f"Row {self.model!r}: value={self.value!r} is not a finite "
                             "number; an evaluation that diverged has no row.")
        object.__setattr__(self, "value", float(self.value))
        if self.stderr is not None:
            if not isinstance(self.stderr, int | float) or not self.stderr >= 0 or \
                    not math.isfinite(self.stderr):
                raise ValueError(f"Row {self.model!r}: stderr={self.stderr!r} must be a finite "
                                 "number >= 0, or None for an exact row.")
            object.__setattr__(self, "stderr", float(self.stderr))
        if self.bound == "exact" and self.stderr not in (None, 0.0):
            raise ValueError(f"Row {self.model!r}: an exact row has no standard error "
                             f"(got stderr={self.stderr}); pass stderr=None or another bound.")
        for name in ("settings", "diagnostics"):
            try:
                value = json.loads(json.dumps(getattr(self, name), allow_nan=False))
            except (TypeError, ValueError) as e:
                raise ValueError(f"Row {self.model!r}: {name} must be JSON-able (finite "
                                 f"numbers, strings, lists, dicts): {e}.") from None
            object.__setattr__(self, name, value)

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """``value ± z·stderr`` (the value itself for a row without a standard error)."""
        half = z * (self.stderr or 0.0)
        return self.value - half, self.value + half

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        """The row of ``to_dict``'s output (as read back from JSON); unknown or missing keys
        are refused by name."""
        names = set(cls.__dataclass_fields__)
        unknown, missing = set(data) - names, names - set(data) - {"settings", "diagnostics"}
        if unknown or missing:
            raise ValueError(f"Row.from_dict: unknown keys {sorted(unknown)}, missing keys "
                             f"{sorted(missing)}; pass what Row.to_dict() wrote.")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Row:
        return cls.from_dict(json.loads(text))
