"""The declaration language: models, guides and their nodes."""

from genppl.dsl.guide import Guide
from genppl.dsl.model import Model
from genppl.dsl.nodes import Node, Parent

__all__ = ["Guide", "Model", "Node", "Parent"]
