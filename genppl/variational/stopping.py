"""Early stopping: watch a score (the held-out ELBO, or the training ELBO averaged since the
last evaluation), keep the params of its best evaluation, and stop after ``patience``
evaluations without improvement (None: never stop, still keep the best)."""

from __future__ import annotations

from typing import Any

import torch

from genppl.variational.params import snapshot


class EarlyStopping:
    def __init__(self, patience: int | None, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = -float("inf")
        self.best_step = 0
        self.best_params: dict[str, torch.Tensor] | None = None
        self.bad = 0  # evaluations since the best
        self.stopped = False
        self.history: list[tuple[int, float]] = []  # (step, score)

    def update(self, step: int, score: float) -> None:
        """Record the score after ``step`` steps (higher is better)."""
        self.history.append((step, score))
        if score > self.best + self.min_delta:
            self.best, self.best_step, self.bad = score, step, 0
            self.best_params = snapshot()
        else:
            self.bad += 1
            if self.patience is not None and self.bad >= self.patience:
                self.stopped = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "best_params": self.best_params,
                "bad": self.bad, "stopped": self.stopped,
                "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step = state["best"], state["best_step"]
        self.best_params, self.bad = state["best_params"], state["bad"]
        self.stopped = state["stopped"]
        self.history = [(int(s), float(v)) for s, v in state["history"]]
