"""A 3x3 Ising model (Ising 1925; Lenz 1920): the undirected graphical model of physics.

Nine spins on a grid, each ``-1`` or ``+1``, with energy
``E(s) = -J sum_{neighbours i~j} s_i s_j - h sum_i s_i``; the probability of a configuration is
``exp(-E(s)) / Z``. There is no generative story and no CPT: each spin is a discrete
``variable`` with a counting base measure, and the law comes from factors -- one coupling
factor per grid edge (12) and one field factor per spin (9). Exact enumeration sums the 512
configurations: its log evidence is log Z, the log partition function, and its marginals are
the single-spin probabilities (corner, edge and centre spins differ: more neighbours align more).
"""

from __future__ import annotations

import math

import torch

import genppl
from genppl.gallery import GalleryEntry, Report

SIZE = 3
COUPLING = 0.4  # J > 0: ferromagnetic, neighbours prefer to align
FIELD = 0.1  # h > 0: every spin leans towards +1
SPIN_STATES = ("down", "up")  # state index 0 is spin -1, index 1 is spin +1


def spin_name(i: int, j: int) -> str:
    return f"s_{i}_{j}"


def grid_edges(rows: int = SIZE, cols: int | None = None
               ) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Nearest-neighbour pairs of a ``rows x cols`` grid (square by default), each once:
    ``rows * (cols - 1) + (rows - 1) * cols``."""
    cols = rows if cols is None else cols
    return [((i, j), (k, l)) for i in range(rows) for j in range(cols)
            for k, l in ((i, j + 1), (i + 1, j)) if k < rows and l < cols]


def spin(state: torch.Tensor) -> torch.Tensor:
    """State index {0, 1} -> spin {-1, +1}, in the model's floating dtype."""
    return 2.0 * state - 1.0


def ising_grid(m: genppl.Model, rows: int, cols: int, coupling: float) -> None:
    """Declare a ``rows x cols`` grid of spins on ``m`` with a coupling factor
    ``coupling * s_i * s_j`` per pair of neighbours (the Ising prior)."""
    for i in range(rows):
        for j in range(cols):
            m.variable(spin_name(i, j), 2, states=SPIN_STATES)

    def bond(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return coupling * spin(a) * spin(b)

    for (i, j), (k, l) in grid_edges(rows, cols):
        m.factor(f"bond_{i}_{j}__{k}_{l}", bond, scope=[spin_name(i, j), spin_name(k, l)])


def build(coupling: float = COUPLING, field: float = FIELD, size: int = SIZE) -> genppl.Model:
    m = genppl.Model(f"ising_{size}x{size}")
    ising_grid(m, size, size, coupling)

    def external(a: torch.Tensor) -> torch.Tensor:
        return field * spin(a)

    for i in range(size):
        for j in range(size):
            m.factor(f"field_{i}_{j}", external, scope=[spin_name(i, j)])
    return m


def data() -> dict[str, torch.Tensor]:
    """Nothing is observed: the queries are the partition function and the marginals."""
    return {}


def experiment(report: Report) -> None:
    posterior = genppl.infer(report.build(), data(), engine=report.engine)
    assert posterior.log_evidence is not None
    p_up = [[float(posterior.marginals[spin_name(i, j)][1]) for j in range(SIZE)]
            for i in range(SIZE)]
    report.line(f"J = {COUPLING}, h = {FIELD}; {2**(SIZE * SIZE)} configurations, "
                f"{len(grid_edges())} bonds")
    report.label_width = 26
    report.number("log Z", posterior.log_evidence, ".6f", key="log_z")
    report.line(f"log Z if no coupling (J=0) {SIZE * SIZE * math.log(2 * math.cosh(FIELD)):.6f}")
    report.number("mean magnetisation <s>", sum(2 * p - 1 for row in p_up for p in row) / SIZE**2,
                  ".4f", key="magnetisation", unit=f"   (J=0: {math.tanh(FIELD):.4f})")
    report.line("P(spin up) on the grid:")
    for row in report.metric("p_up", p_up):
        report.line("    " + "  ".join(f"{p:.4f}" for p in row))


ENTRY = GalleryEntry(
    name="ising_3x3",
    title="A 3x3 Ising model: an undirected model of factors, its partition function exactly",
    build=build,
    data=data,
    engines=("exact", "enum"),
    experiment=experiment,
)
