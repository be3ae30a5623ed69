"""What engines run on, with no inference maths of its own: engine options as typed dataclasses
(``options``), one runner for every MCMC engine (``mcmc_runner``), chains in worker processes
(``chains``), the sampling loop with checkpoints (``driver``, ``checkpoint``, ``kernel_state``),
Pyro's Hamiltonian kernels built from checked options (``hamiltonian``), seeds and progress bars
(``progress``) and per-run param stores (``params``)."""
