"""The "chest clinic" network (Lauritzen & Spiegelhalter 1988, "Local computations with
probabilities on graphical structures and their application to expert systems", JRSS B 50(2),
157-224, Figure 1 and the probabilities of its Section 2).

A patient's recent visit to Asia raises the chance of tuberculosis; smoking raises the chances
of lung cancer and bronchitis; either tuberculosis or lung cancer (the deterministic node
``either``) shows on the chest X-ray; dyspnoea comes from bronchitis or from ``either``. Node
and state names are those of the bnlearn copy of the network (state 0 is "yes"), so its
tables can be checked against the file pgmpy ships.

The query: a patient with a positive X-ray and dyspnoea -- how likely is lung cancer, and how
likely tuberculosis? The graph alone says, before any number, that tuberculosis and smoking
are independent until the X-ray (a descendant of their common effect) is seen.
"""

from __future__ import annotations

from collections.abc import Sequence

import genppl
from models_gallery._bayes_net import Separation, network_entry

YES_NO = ("yes", "no")

#: ``TABLES[node] = (parents, table)`` with ``table[parent states..., own state]``; the
#: published P(node = yes | parents) on each row.
TABLES: dict[str, tuple[tuple[str, ...], list]] = {
    "asia": ((), [0.01, 0.99]),
    "tub": (("asia",), [[0.05, 0.95],       # visited Asia
                        [0.01, 0.99]]),     # did not
    "smoke": ((), [0.5, 0.5]),
    "lung": (("smoke",), [[0.1, 0.9],        # smoker
                          [0.01, 0.99]]),    # non-smoker
    "bronc": (("smoke",), [[0.6, 0.4],
                           [0.3, 0.7]]),
    "either": (("lung", "tub"), [[[1.0, 0.0], [1.0, 0.0]],     # lung cancer: yes
                                 [[1.0, 0.0], [0.0, 1.0]]]),   # no lung cancer: iff tub
    "xray": (("either",), [[0.98, 0.02],
                           [0.05, 0.95]]),
    "dysp": (("bronc", "either"), [[[0.9, 0.1], [0.8, 0.2]],   # bronchitis
                                   [[0.7, 0.3], [0.1, 0.9]]]),  # no bronchitis
}

EVIDENCE = {"xray": "yes", "dysp": "yes"}
TARGETS = ("lung", "tub", "bronc")
SEPARATIONS: tuple[Separation, ...] = (
    ("tub", "smoke", ()),              # yes: the only paths meet head-to-head at either
    ("tub", "smoke", ("xray",)),       # no: xray is a descendant of the collider either
    ("lung", "bronc", ("smoke",)),     # yes: their common cause is given
    ("xray", "dysp", ("either",)),     # yes: every path runs through either, not a collider
    ("xray", "dysp", ()),              # no
)


def build(observed: Sequence[str] = tuple(EVIDENCE)) -> genppl.Model:
    """The network, with the nodes in ``observed`` declared observed (Pyro's enumeration
    conditions only on observed sites; the exact engine takes evidence on any node)."""
    m = genppl.Model("asia")
    for name, (parents, table) in TABLES.items():
        m.cpt(name, parents, table, states=YES_NO, observed=name in observed)
    return m


ENTRY = network_entry(
    "asia",
    "The chest clinic (Lauritzen & Spiegelhalter 1988): diagnosis by exact inference",
    build, EVIDENCE, TARGETS, SEPARATIONS)
