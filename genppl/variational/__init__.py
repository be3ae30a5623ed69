"""The variational engines' parts, one job per module.

SVI's training loop (``engine="svi"`` drives them): optimisers and learning-rate schedules by
name (``optim``), one torch optimiser over all parameters (``joint``) with multi-tensor
arithmetic (``multi_tensor``), the step itself without ``pyro.infer.SVI`` (``step``),
minibatches of plates (``minibatch``), held-out ELBO and IWAE-k (``evaluate``), early
stopping (``stopping``) and the param store's snapshots (``params``). The conjugate families CAVI
uses live in ``genppl.conjugacy``."""

from genppl.variational.evaluate import Evaluation, evaluate, log_weights

__all__ = ["Evaluation", "evaluate", "log_weights"]
