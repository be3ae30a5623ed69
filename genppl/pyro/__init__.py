"""The compiler: declarations to Pyro callables. Importing it installs it as the one the
declarations use (``genppl.dsl.compiler``)."""

from genppl.dsl.compiler import install
from genppl.pyro.compiler import PyroCompiler

install(PyroCompiler())
