"""genppl: the generative-model lineage on one graphical-model DSL, compiled to Pyro."""

from genppl.bif import read_bif, write_bif
from genppl.dsl import Guide, Model
from genppl.engines import ENGINES
from genppl.errors import ModelError
from genppl.inference import fit, infer
from genppl.results import FitResult, Posterior

__all__ = [
    "ENGINES",
    "FitResult",
    "Guide",
    "Model",
    "ModelError",
    "Posterior",
    "fit",
    "infer",
    "read_bif",
    "write_bif",
]
__version__ = "0.1.0"
