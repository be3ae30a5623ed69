"""genppl: the generative-model lineage on one graphical-model DSL, compiled to Pyro."""

from genppl.dsl import Guide, Model
from genppl.errors import ModelError

__all__ = ["Guide", "Model", "ModelError"]
__version__ = "0.1.0"
