"""The variational training loop's parts, one job per module: optimisers and learning-rate
schedules (``optim``), minibatches of plates (``minibatch``), held-out ELBO and IWAE-k
(``evaluate``), early stopping (``stopping``), the param store's snapshots (``params``) and
atomic checkpoints with resume (``checkpoint``). ``engine="svi"`` drives them."""

from genppl.variational.evaluate import Evaluation, evaluate, log_weights

__all__ = ["Evaluation", "evaluate", "log_weights"]
