"""The lung-cancer diagnosis network of Korb & Nicholson, *Bayesian Artificial Intelligence*,
2nd ed. (CRC Press, 2010), Figure 2.1 with the tables of Table 2.2.

Air pollution and smoking are causes of cancer; cancer shows on an X-ray and causes shortness
of breath (dyspnoea). Node and state names follow the bnlearn copy of the network (pollution
``low``/``high``, the others ``True``/``False``, X-ray ``positive``/``negative``), so the
tables can be checked against the file pgmpy ships.

The query is the book's diagnostic reasoning: a positive X-ray and dyspnoea, how likely is
cancer, and what does that say about smoking and pollution? The graph says the two causes are
independent a priori and become dependent once any symptom of cancer is seen.
"""

from __future__ import annotations

from collections.abc import Sequence

import genppl
from models_gallery._bayes_net import Separation, network_entry

TRUE_FALSE = ("True", "False")

#: ``TABLES[node] = (parents, table, states)`` with ``table[parent states..., own state]``.
TABLES: dict[str, tuple[tuple[str, ...], list, tuple[str, ...]]] = {
    "Pollution": ((), [0.9, 0.1], ("low", "high")),
    "Smoker": ((), [0.3, 0.7], TRUE_FALSE),
    "Cancer": (("Pollution", "Smoker"), [[[0.03, 0.97],      # low pollution, smoker
                                          [0.001, 0.999]],   # low pollution, non-smoker
                                         [[0.05, 0.95],      # high pollution, smoker
                                          [0.02, 0.98]]],    # high pollution, non-smoker
               TRUE_FALSE),
    "Xray": (("Cancer",), [[0.9, 0.1],
                           [0.2, 0.8]], ("positive", "negative")),
    "Dyspnoea": (("Cancer",), [[0.65, 0.35],
                               [0.3, 0.7]], TRUE_FALSE),
}

EVIDENCE = {"Xray": "positive", "Dyspnoea": "True"}
TARGETS = ("Cancer", "Smoker", "Pollution")
SEPARATIONS: tuple[Separation, ...] = (
    ("Pollution", "Smoker", ()),            # yes: they meet head-to-head at Cancer
    ("Pollution", "Smoker", ("Xray",)),     # no: Xray is a descendant of the collider
    ("Xray", "Dyspnoea", ("Cancer",)),      # yes: common cause given
    ("Smoker", "Dyspnoea", ("Cancer",)),    # yes: Cancer blocks the chain
    ("Smoker", "Dyspnoea", ()),             # no
)


def build(observed: Sequence[str] = tuple(EVIDENCE)) -> genppl.Model:
    """The network, with the nodes in ``observed`` declared observed."""
    m = genppl.Model("cancer")
    for name, (parents, table, states) in TABLES.items():
        m.cpt(name, parents, table, states=states, observed=name in observed)
    return m


ENTRY = network_entry(
    "cancer",
    "Lung-cancer diagnosis (Korb & Nicholson 2010): causes, symptoms, explaining away",
    build, EVIDENCE, TARGETS, SEPARATIONS)
