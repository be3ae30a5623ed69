"""genppl: the generative-model lineage on one graphical-model DSL, compiled to Pyro."""

from genppl.bif import read_bif, write_bif
from genppl.budget import memory_limit
from genppl.dsl import Guide, Model
from genppl.engines import ENGINES
from genppl.errors import ModelError
from genppl.hmm import HMM
from genppl.inference import fit, infer
from genppl.pgmpy_io import from_pgmpy
from genppl.results import FitResult, Posterior

__all__ = [
    "ENGINES",
    "HMM",
    "FitResult",
    "Guide",
    "Model",
    "ModelError",
    "Posterior",
    "fit",
    "from_pgmpy",
    "infer",
    "memory_limit",
    "read_bif",
    "write_bif",
]
__version__ = "0.1.0"
