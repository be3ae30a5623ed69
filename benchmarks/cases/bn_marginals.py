"""ALARM (37 nodes): every posterior marginal under 5 evidence variables.

pgmpy answers with variable elimination, one query per hidden variable (its usual use);
genppl ``exact`` gives every marginal in one elimination and one backward pass; genppl
``enum`` is Pyro's ``TraceEnum_ELBO.compute_marginals``. Same network file, same evidence
(drawn from the network itself, so it has positive probability), same run. pgmpy's tables are
rescaled like genppl's (bnlearn's rounded rows are off by up to 1e-7), so the answers must
agree to rounding.
"""

from __future__ import annotations

import gzip
import random
import warnings
from pathlib import Path
from typing import Any

import torch

import genppl
from benchmarks.harness import BenchConfig, Case, Column, Contender, register

PGMPY = "pgmpy VariableElimination (one query per variable)"
EXACT = "genppl exact (all marginals, one pass)"
ENUM = "genppl enum (Pyro TraceEnum)"
Marginals = dict[str, torch.Tensor]


def _network() -> Path:
    import pgmpy

    return Path(pgmpy.__file__).parent / "utils" / "example_models" / "alarm.bif.gz"


def contenders(config: BenchConfig) -> list[Contender]:
    path = _network()
    model = genppl.read_bif(path).to(config.device, torch.float64)
    draw = genppl.infer(model, {}, engine="prior", num_samples=1, seed=config.seed,
                        progress=False)
    rng = random.Random(config.seed)
    observed = rng.sample(sorted(model.nodes), 5)
    evidence = {v: int(draw.samples[v].reshape(-1)[0]) for v in observed}
    hidden = [v for v in model.nodes if v not in evidence]
    with warnings.catch_warnings():  # pgmpy's own deprecation notices
        warnings.simplefilter("ignore")
        from pgmpy.inference import VariableElimination
        from pgmpy.readwrite import BIFReader

        reference = BIFReader(string=gzip.decompress(path.read_bytes()).decode()).get_model()
        for cpd in reference.get_cpds():
            cpd.normalize(inplace=True)
        ve = VariableElimination(reference)
    named = {v: model[v].states[s] for v, s in evidence.items()}
    data = {v: torch.tensor(s) for v, s in evidence.items()}
    observed_model = genppl.read_bif(path).to(config.device, torch.float64)
    enum_model = _with_observed(observed_model, evidence)

    def pgmpy_all() -> Marginals:
        out = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for v in hidden:
                q = ve.query([v], evidence=named, show_progress=False)
                order = [q.state_names[v].index(s) for s in model[v].states]
                out[v] = torch.tensor(q.values[order], dtype=torch.float64)
        return out

    def exact() -> Marginals:
        post = genppl.infer(model, data, engine="exact")
        return {v: post.marginals[v].cpu() for v in hidden}

    def enum() -> Marginals:
        post = genppl.infer(enum_model, data, engine="enum")
        return {v: post.marginals[v].cpu() for v in hidden}

    return [Contender(PGMPY, pgmpy_all), Contender(EXACT, exact),
            Contender(ENUM, enum, repeats=1 if config.quick else None)]


def _with_observed(model: genppl.Model, evidence: dict[str, int]) -> genppl.Model:
    """The same network with the evidence variables declared observed (Pyro conditions only
    on observed sites)."""
    out = genppl.Model(model.name)
    for node in model.nodes.values():
        table = node.fn.table  # type: ignore[union-attr]
        out.cpt(node.name, [p.node for p in node.parents], table,  # type: ignore[misc]
                states=node.states, observed=node.name in evidence)
    return out.to(model.device, model.dtype)


def evaluate(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    reference = results[PGMPY]
    return {name: {"max_abs_marginal_error": max(
        float((marg[v] - reference[v]).abs().max()) for v in reference)}
        for name, marg in results.items()}


CASE = register(Case(
    name="alarm_marginals",
    description="every posterior marginal of ALARM under 5 evidence variables: genppl exact "
                "vs pgmpy VE vs Pyro enumeration",
    baseline=PGMPY,
    contenders=contenders,
    evaluate=evaluate,
    columns=(Column("max_abs_marginal_error", "max abs error vs pgmpy", ".1e"),),
))
