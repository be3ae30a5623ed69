"""The sprinkler network (Pearl 1988; Russell & Norvig; Murphy's BNT tutorial).

Four binary variables: a cloudy day makes rain likely and the sprinkler unlikely; either one
wets the grass. Every node is a conditional probability table, the textbook way of writing a
discrete Bayesian network, and wet grass is the evidence. Exact enumeration answers the two
classic queries, P(rain | wet) ≈ 0.708 and P(sprinkler | wet) ≈ 0.430; observing rain as well
shows *explaining away* (the sprinkler drops to ≈ 0.194), which the graph predicts: sprinkler
and rain are d-separated by cloudy, but not once their common child, wet grass, is observed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

import genppl
from genppl.gallery import GalleryEntry, Report, engine_options

#: State names of every node; state index 1 is "yes".
YES_NO = ("no", "yes")

#: ``TABLES[node] = (parents, table)`` with ``table[parent states..., own state]``.
TABLES: dict[str, tuple[tuple[str, ...], list]] = {
    "cloudy": ((), [0.5, 0.5]),
    "sprinkler": (("cloudy",), [[0.5, 0.5],     # not cloudy: P(on) = 0.5
                                [0.9, 0.1]]),   # cloudy:     P(on) = 0.1
    "rain": (("cloudy",), [[0.8, 0.2],          # not cloudy: P(rain) = 0.2
                           [0.2, 0.8]]),        # cloudy:     P(rain) = 0.8
    "wet": (("sprinkler", "rain"), [[[1.0, 0.0],      # neither:        P(wet) = 0
                                     [0.1, 0.9]],     # rain only:      P(wet) = 0.9
                                    [[0.1, 0.9],      # sprinkler only: P(wet) = 0.9
                                     [0.01, 0.99]]]),  # both:          P(wet) = 0.99
}


def build(observed: Sequence[str] = ("wet",)) -> genppl.Model:
    """The network with the nodes in ``observed`` as evidence (default: wet grass only).

    Which nodes are evidence is part of the declaration (``observed=True``), so a different
    query -- wet grass *and* rain, for explaining away -- is a second build of the same tables.
    """
    m = genppl.Model("sprinkler")
    for name, (parents, table) in TABLES.items():
        m.cpt(name, parents, table, states=YES_NO, observed=name in observed)
    return m


def data() -> dict[str, torch.Tensor]:
    """The evidence: the grass is wet (state index of "yes")."""
    return {"wet": torch.tensor(YES_NO.index("yes"))}


def d_separation_queries(model: genppl.Model) -> list[tuple[str, bool]]:
    """Independence statements read off the graph alone, before any number is computed."""
    queries = [("sprinkler", "rain", ()), ("sprinkler", "rain", ("cloudy",)),
               ("sprinkler", "rain", ("cloudy", "wet")), ("cloudy", "wet", ("sprinkler", "rain"))]
    out = []
    for x, y, given in queries:
        label = f"{x} _||_ {y}" + (f" | {', '.join(given)}" if given else "")
        out.append((label, model.d_separated(x, y, given=given)))
    return out


def experiment(report: Report) -> None:
    engine = report.engine
    model = report.build()
    evidence = data()
    options = engine_options(engine, report.config, draws=report.config.steps or 4000)
    posterior = genppl.infer(model, evidence, engine=engine, **options)
    # Explaining away: once rain accounts for the wet grass, the sprinkler is less likely.
    explained = genppl.infer(report.build(observed=("wet", "rain")),
                             evidence | {"rain": torch.tensor(1)}, engine=engine, **options)
    kind = f"queries from {options['num_samples']} draws" if options else "exact queries"
    report.line(f"{kind} (engine {engine}):")
    report.label_width = 45
    if posterior.log_evidence is not None:
        report.number("  log P(wet = yes)", posterior.log_evidence, ".4f", key="log_evidence")
    else:
        report.metric("log_evidence", None)
    report.number("  P(rain = yes | wet = yes)", float(posterior.probs("rain", 2)[1]), ".4f",
                  key="p_rain_given_wet")
    report.number("  P(sprinkler = yes | wet = yes)", float(posterior.probs("sprinkler", 2)[1]),
                  ".4f", key="p_sprinkler_given_wet")
    report.number("  P(cloudy = yes | wet = yes)", float(posterior.probs("cloudy", 2)[1]), ".4f",
                  key="p_cloudy_given_wet")
    report.number("  P(sprinkler = yes | wet = yes, rain = yes)",
                  float(explained.probs("sprinkler", 2)[1]), ".4f",
                  key="p_sprinkler_given_wet_rain", unit="   <- explaining away")
    report.line("d-separation (read off the graph alone):")
    for label, separated in d_separation_queries(model):
        report.number(f"  {label}", separated, key=("d_separated", label),
                      shown="yes" if separated else "no")


ENTRY = GalleryEntry(
    name="sprinkler",
    title="The sprinkler network: a discrete Bayesian network of CPTs, queried exactly",
    build=build,
    data=data,
    engines=("exact", "enum", "gibbs"),
    experiment=experiment,
)
