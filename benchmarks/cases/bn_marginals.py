"""Bayesian networks: every posterior marginal under 5 evidence variables, one case per network
(``<network>_marginals`` for asia, child, insurance, alarm, hailfinder, hepar2, win95pts).

pgmpy answers with variable elimination, one query per hidden variable (its usual use);
genppl ``exact`` gives every marginal in one elimination and one calibration pass; genppl
``enum`` is Pyro's ``TraceEnum_ELBO.compute_marginals``, which gives each variable its own
tensor dimension and so stops at 64 variables (it is left out above that, with the reason in
the notes). Same network file, same evidence (drawn from the network itself, so it has
positive probability), same run. pgmpy's tables are rescaled like genppl's (bnlearn's rounded
rows are off by up to 1e-7), so the answers must agree to rounding.
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
NETWORKS = ("asia", "child", "insurance", "alarm", "hailfinder", "hepar2", "win95pts")
#: Pyro's enumeration gives every variable its own tensor dimension; torch allows 64.
PYRO_MAX_VARIABLES = 64
Marginals = dict[str, torch.Tensor]


def network_file(name: str) -> Path:
    import pgmpy

    return Path(pgmpy.__file__).parent / "utils" / "example_models" / f"{name}.bif.gz"


def reference_network(path: Path) -> Any:
    """pgmpy's own reading of the file, rows rescaled as genppl's reader does."""
    with warnings.catch_warnings():  # pgmpy's own deprecation notices
        warnings.simplefilter("ignore")
        from pgmpy.readwrite import BIFReader

        reference = BIFReader(string=gzip.decompress(path.read_bytes()).decode()).get_model()
    for cpd in reference.get_cpds():
        cpd.normalize(inplace=True)
    return reference


def sampled_evidence(model: genppl.Model, seed: int, cases: int, count: int = 5
                     ) -> dict[str, torch.Tensor]:
    """``count`` random variables, states of ``cases`` cases drawn from the network."""
    draw = genppl.infer(model, {}, engine="prior", num_samples=cases, seed=seed, progress=False)
    observed = random.Random(seed).sample(sorted(model.nodes), count)
    return {v: draw.samples[v].reshape(-1).long() for v in observed}


def _contenders(network: str, config: BenchConfig) -> list[Contender]:
    path = network_file(network)
    model = genppl.read_bif(path).to(config.device, torch.float64)
    evidence = {v: int(s[0]) for v, s in sampled_evidence(model, config.seed, 1).items()}
    hidden = [v for v in model.nodes if v not in evidence]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgmpy.inference import VariableElimination

        ve = VariableElimination(reference_network(path))
    named = {v: model[v].states[s] for v, s in evidence.items()}
    data = {v: torch.tensor(s, device=config.device) for v, s in evidence.items()}

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

    out = [Contender(PGMPY, pgmpy_all), Contender(EXACT, exact)]
    if len(model.nodes) <= PYRO_MAX_VARIABLES:
        enum_model = _with_observed(model, evidence)

        def enum() -> Marginals:
            post = genppl.infer(enum_model, data, engine="enum")
            return {v: post.marginals[v].cpu() for v in hidden}

        out.append(Contender(ENUM, enum, repeats=1 if config.quick else None))
    return out


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


def _notes(network: str) -> Any:
    def notes(results: dict[str, Any]) -> list[str]:
        size = len(results[EXACT]) + 5
        if ENUM in results:
            return [f"{network}: {size} variables."]
        return [f"{network}: {size} variables; genppl enum (Pyro) not run: its enumeration "
                f"needs one tensor dimension per variable and torch allows "
                f"{PYRO_MAX_VARIABLES}."]
    return notes


for _network in NETWORKS:
    register(Case(
        name=f"{_network}_marginals",
        description=f"every posterior marginal of {_network} under 5 evidence variables: "
                    "genppl exact vs pgmpy VE vs Pyro enumeration (up to 64 variables)",
        baseline=PGMPY,
        contenders=lambda config, network=_network: _contenders(network, config),
        evaluate=evaluate,
        columns=(Column("max_abs_marginal_error", "max abs error vs pgmpy", ".1e"),),
        notes=_notes(_network),
    ))
