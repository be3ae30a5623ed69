"""ALARM, a patient-monitoring network for intensive care (Beinlich, Suermondt, Chavez &
Cooper 1989, "The ALARM monitoring system: a case study with two probabilistic inference
techniques for belief networks", AIME 89, 247-256): 37 discrete nodes, 46 arcs.

The tables are not retyped here: the network is read with ``genppl.read_bif`` from the bnlearn
copy that ships inside the pgmpy wheel (``pgmpy/utils/example_models/alarm.bif.gz``), which
is read offline; pgmpy comes with the ``gallery`` extra. bnlearn's rows are rounded, and
``read_bif`` rescales each to sum to one.

The query: low blood pressure and high central venous pressure are measured -- how likely is
left-ventricular failure, and hypovolaemia? Both act on the heart's filling
(LVEDVOLUME), so the graph says they are independent a priori but not once a measurement
downstream of that common effect is seen.
"""

from __future__ import annotations

from pathlib import Path

import genppl
from genppl.errors import ModelError
from models_gallery._bayes_net import Separation, network_entry

EVIDENCE = {"BP": "LOW", "CVP": "HIGH"}
TARGETS = ("LVFAILURE", "HYPOVOLEMIA", "STROKEVOLUME")
SEPARATIONS: tuple[Separation, ...] = (
    ("HYPOVOLEMIA", "LVFAILURE", ()),               # yes: they meet head-to-head
    ("HYPOVOLEMIA", "LVFAILURE", ("CVP",)),         # no: CVP descends from LVEDVOLUME
    ("CVP", "PCWP", ("LVEDVOLUME",)),               # yes: their common cause is given
    ("HISTORY", "CVP", ("LVFAILURE",)),             # yes: HISTORY hangs off LVFAILURE only
    ("HISTORY", "CVP", ()),                         # no
)


def network_file() -> Path:
    """pgmpy's copy of the bnlearn ALARM file, found inside the installed package."""
    try:
        import pgmpy
    except ImportError as e:
        raise ModelError("gallery entry 'alarm' reads the ALARM network shipped with pgmpy; "
                         "install the gallery extra: pip install 'genppl[gallery]'.") from e
    return Path(pgmpy.__file__).parent / "utils" / "example_models" / "alarm.bif.gz"


def build() -> genppl.Model:
    """The 37 CPT nodes as published in bnlearn's ``alarm.bif``."""
    return genppl.read_bif(network_file())


ENTRY = network_entry(
    "alarm",
    "ALARM (Beinlich et al. 1989): 37-node ICU monitoring network from its BIF file",
    build, EVIDENCE, TARGETS, SEPARATIONS, engines=("exact",))
