"""RBM on binarised digits: block Gibbs sampling and PCD-1 training, genppl vs scikit-learn.

The model is ``models_gallery/rbm_digits.py``'s: 64 visible units (the 8 x 8 digits of
``sklearn.datasets.load_digits`` binarised at 8) and 32 hidden units, energy
``E(v, h) = b.v + c.h + v.W.h`` (``p ∝ exp E``), declared with a plate per layer; its peer is
scikit-learn's ``BernoulliRBM``, the same model with ``components_ = W.T``,
``intercept_hidden_ = c``, ``intercept_visible_ = b``.

**Block Gibbs sampling.** ``CHAINS`` chains, each started from the all-off image, make
``SWEEPS`` sweeps (h | v, then v | h) of the RBM that scikit-learn's PCD fits in
``SAMPLER_EPOCHS`` epochs (setup, not timed; the same weights for every contender):
``BernoulliRBM.gibbs`` on a batch of chains (the baseline); genppl's Gibbs kernel
(``genppl.gibbs.kernel.sweep``) on the grounding of ``CHAINS`` copies of the model, as the
``cd`` engine runs its negative chains (grounding is setup); the gallery's public path,
``genppl.infer(engine="gibbs")`` with its chains as one batched state (``num_chains``,
``executor="vectorized"``); and the same sweeps written by hand in torch with two matmuls (a
reference for what the hardware gives, not a genppl path). Each contender's state after the
last sweep is checked against scikit-learn's: all start from the same state under the same
transition kernel, so the law of the final state is the same for every contender whether
or not the chains have mixed, and the chain-to-chain means of the share of pixels on and
of ``p(h = 1 | v)`` must agree to Monte Carlo error (z-scores in the table). The exact
one-step conditionals genppl's kernel draws from are compared with scikit-learn's
(``transform`` for ``p(h | v)``; ``sigmoid(h @ components_ + intercept_visible_)``, what
its ``gibbs`` draws from, for ``p(v | h)``) at random states; the case raises past 1e-9.

**PCD-1 training.** ``EPOCHS`` epochs on the 1,797 digits, batch 100, learning rate 0.05,
from the same initial weights (scikit-learn's ``N(0, 0.01^2)`` draw, given to genppl as
``init``): ``BernoulliRBM.fit`` (persistent CD-1, batches in the data's order) vs
``genppl.fit(engine="cd", persistent=True, k=1)`` (batches of a fresh permutation each
epoch, a last partial batch dropped: 17 updates an epoch to scikit-learn's 18). Quality is
one function of the fitted weights for both: the pseudo-log-likelihood of the digits
(scikit-learn's ``score_samples``, which flips one random pixel per image and scales by the
number of pixels, taken here in expectation: the sum over every pixel of
``log p(v_i | v_rest)``, averaged over the images). The gallery's tiny RBM (4 x 4 digits,
10 hidden units) is trained the same way and scored by its exact mean log-likelihood, the
2^10 hidden states summed out.

Each contender reports its own seconds (the mean of its untraced calls after the first);
the ``time / sklearn`` column divides them by scikit-learn's on the same task.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks.harness import BenchConfig, Case, Column, Contender, register
from models_gallery import rbm_digits

HIDDEN, TINY_SIDE, TINY_HIDDEN = rbm_digits.HIDDEN, rbm_digits.TINY_SIDE, rbm_digits.TINY_HIDDEN
BATCH, LR = rbm_digits.BATCH, rbm_digits.LR
CHAINS, SWEEPS, EPOCHS = 100, 100, 10
QUICK_CHAINS, QUICK_SWEEPS, QUICK_EPOCHS, QUICK_IMAGES = 16, 20, 1, 300
SAMPLER_EPOCHS = 10  # scikit-learn PCD epochs that make the sampled RBM (setup)
DTYPE = torch.float64  # the gallery's (RunConfig's default); scikit-learn's too
CONDITIONAL_TOL = 1e-9
SAMPLE, TRAIN, TINY = "block Gibbs 64x32", "PCD-1 64x32", "PCD-1 16x10"
SKLEARN = "sklearn BernoulliRBM"
KERNEL = "genppl gibbs kernel, chains as grounded copies"
INFER = "genppl.infer gibbs, chains vectorized"
TORCH = "torch matmuls (hand-written reference)"
CD = "genppl.fit cd, persistent"
Weights = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # W (visible, hidden), b, c


def _label(task: str, impl: str) -> str:
    return f"{task} | {impl}"


# --------------------------------------------------------------------------- one scale
def free_energy(weights: Weights, v: torch.Tensor) -> torch.Tensor:
    """``F(v) = -log sum_h exp E(v, h) = -b.v - sum_j softplus(c_j + (v W)_j)``."""
    w, b, c = weights
    return -(v @ b) - torch.nn.functional.softplus(c + v @ w).sum(-1)


def pseudo_log_likelihood(weights: Weights, images: torch.Tensor) -> float:
    """Mean over images of ``sum_i log p(v_i | v_rest) = sum_i log sigmoid(F(v^i) - F(v))``,
    ``v^i`` the image with pixel i flipped: the expectation of scikit-learn's
    ``score_samples`` over the pixel it flips at random."""
    w, b, c = weights
    v = images.to(w.dtype)
    sign = 1 - 2 * v  # flipping pixel i adds sign_i to v_i
    act = c + v @ w  # (N, H)
    flipped = (-(v @ b)[:, None] - sign * b
               - torch.nn.functional.softplus(act[:, None, :] + sign[..., None] * w).sum(-1))
    gap = flipped - free_energy(weights, v)[:, None]
    return float(torch.nn.functional.logsigmoid(gap).sum(1).mean())


def exact_log_likelihood(weights: Weights, images: torch.Tensor) -> float:
    """Mean ``log p(v) = -F(v) - log Z``, ``log Z`` summed over every hidden state:
    ``log sum_h exp(c.h + sum_i softplus(b_i + (W h)_i))``."""
    w, b, c = weights
    hidden = w.shape[1]
    if hidden > 20:
        raise ValueError(f"{hidden} hidden units: 2^{hidden} states are too many to sum")
    states = torch.tensor(list(itertools.product((0.0, 1.0), repeat=hidden)), dtype=w.dtype)
    log_z = torch.logsumexp(states @ c
                            + torch.nn.functional.softplus(b + states @ w.T).sum(-1), 0)
    return float((-free_energy(weights, images.to(w.dtype))).mean() - log_z)


def to_sklearn(weights: Weights, seed: int) -> Any:
    """A ``BernoulliRBM`` holding ``weights`` (float64 numpy, CPU), ready for ``gibbs``."""
    from sklearn.neural_network import BernoulliRBM

    w, b, c = (t.detach().cpu().double().numpy() for t in weights)
    rbm = BernoulliRBM(n_components=w.shape[1], random_state=seed)
    rbm.components_ = np.asfortranarray(w.T)
    rbm.intercept_hidden_, rbm.intercept_visible_ = c.copy(), b.copy()
    rbm.h_samples_ = np.zeros((1, w.shape[1]))
    rbm.n_features_in_ = w.shape[0]
    rbm.random_state_ = np.random.RandomState(seed)
    return rbm


def from_sklearn(rbm: Any) -> Weights:
    return (torch.as_tensor(rbm.components_.T.copy(), dtype=DTYPE),
            torch.as_tensor(rbm.intercept_visible_, dtype=DTYPE),
            torch.as_tensor(rbm.intercept_hidden_, dtype=DTYPE))


def sklearn_init(visible: int, hidden: int, seed: int) -> Weights:
    """The initial weights ``BernoulliRBM.fit(random_state=seed)`` draws first."""
    w = np.random.RandomState(seed).normal(0, 0.01, (hidden, visible)).T
    return (torch.as_tensor(w.copy(), dtype=DTYPE), torch.zeros(visible, dtype=DTYPE),
            torch.zeros(hidden, dtype=DTYPE))


# --------------------------------------------------------------------------- timing
def _timed(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """The contender's run, also reporting its own seconds per call for the per-task ratio:
    the mean over its calls outside the harness's traced run (tracemalloc slows Python),
    the first call (a warm-up) left out when there are others. A mean, as the harness's
    per-call time is: a median of many short calls would leave out the time the process
    lost to others on a loaded core, which a long call cannot leave out."""
    seconds: list[float] = []

    def run() -> dict[str, Any]:
        start = time.perf_counter()
        out = fn()
        if out.get("sync") is not None and out["sync"].is_cuda:
            torch.cuda.synchronize(out["sync"].device)
        if not tracemalloc.is_tracing():
            seconds.append(time.perf_counter() - start)
        kept = seconds[1:] or seconds
        return out | {"seconds": statistics.fmean(kept) if kept else math.nan}
    return run


# --------------------------------------------------------------------------- contenders
def contenders(config: BenchConfig) -> list[Contender]:
    from sklearn.neural_network import BernoulliRBM

    import genppl

    torch.manual_seed(config.seed)
    images = rbm_digits.binarised_digits()
    tiny_images = rbm_digits.binarised_digits(TINY_SIDE)
    chains, sweeps = (QUICK_CHAINS, QUICK_SWEEPS) if config.quick else (CHAINS, SWEEPS)
    epochs = QUICK_EPOCHS if config.quick else EPOCHS
    train_images = images[:QUICK_IMAGES] if config.quick else images
    train_tiny = tiny_images[:QUICK_IMAGES] if config.quick else tiny_images

    # The sampled RBM: scikit-learn's PCD on the digits (setup).
    sampled = BernoulliRBM(n_components=HIDDEN, learning_rate=LR, batch_size=BATCH,
                           n_iter=SAMPLER_EPOCHS, random_state=config.seed)
    sampled.fit(images.double().numpy())
    weights = from_sklearn(sampled)
    out = _sampling(config, weights, chains, sweeps)

    for task, data, hidden in ((TRAIN, train_images, HIDDEN), (TINY, train_tiny, TINY_HIDDEN)):
        visible = data.shape[1]
        x = data.double().numpy()
        init = sklearn_init(visible, hidden, config.seed)
        model = rbm_digits.rbm(visible, hidden, seed=config.seed).to(config.device, DTYPE)
        v = data.to(config.device)
        steps = epochs * (len(data) // BATCH)
        score = (pseudo_log_likelihood, images) if task == TRAIN else \
            (exact_log_likelihood, tiny_images)

        def sklearn_fit(x: np.ndarray = x, hidden: int = hidden, score: Any = score,
                        init: Weights = init) -> dict[str, Any]:
            rbm = BernoulliRBM(n_components=hidden, learning_rate=LR, batch_size=BATCH,
                               n_iter=epochs, random_state=config.seed).fit(x)
            updates = epochs * math.ceil(len(x) / BATCH)
            return {"weights": from_sklearn(rbm), "epochs": epochs, "updates": updates,
                    "images": len(x), "score": score, "init": init}

        def genppl_fit(model: genppl.Model = model, v: torch.Tensor = v, steps: int = steps,
                       init: Weights = init, score: Any = score) -> dict[str, Any]:
            fit = genppl.fit(model, {"v": v}, engine="cd", k=1, persistent=True, steps=steps,
                             lr=LR, batch_size=BATCH, seed=config.seed, progress=False,
                             init=dict(zip("Wbc", (t.to(config.device) for t in init),
                                           strict=True)))
            p = fit.params
            return {"weights": tuple(p[n].detach().cpu() for n in "Wbc"), "epochs": epochs,
                    "updates": steps, "score": score, "sync": p["W"]}

        out += [Contender(_label(task, SKLEARN), _timed(sklearn_fit)),
                Contender(_label(task, CD), _timed(genppl_fit))]
    return out


def _sampling(config: BenchConfig, weights: Weights, chains: int, sweeps: int
              ) -> list[Contender]:
    import genppl
    from genppl.gibbs.copies import Copies
    from genppl.gibbs.grounding import ground
    from genppl.gibbs.kernel import colouring, sweep
    from genppl.runtime.params import param_values
    from genppl.tabulation.tabulation import model_factors

    visible, hidden = weights[0].shape
    device = torch.device(config.device)
    params = dict(zip("Wbc", (t.to(device) for t in weights), strict=True))
    model = rbm_digits.rbm(visible, hidden, seed=config.seed).to(device, DTYPE)
    with param_values(model, params):
        one = ground(model_factors(model, {}))
    colours = colouring(one)
    copies = Copies(one, colours, chains)
    graph = copies.graph(one)
    v_block = graph.blocks["v"]
    h = one.blocks["h"]
    if sorted(colours[0].tolist()) != list(range(h.offset, h.offset + h.size)):
        raise AssertionError("the kernel's first colour is not the hidden layer: its sweep "
                             "would not be scikit-learn's h | v, v | h")
    reference = to_sklearn(weights, config.seed)
    checks = {KERNEL: conditional_error(graph, copies.colours, reference, config.seed),
              INFER: conditional_error(one, colours, reference, config.seed)}
    common = {"weights": weights, "chains": chains, "sweeps": sweeps}

    def sklearn_gibbs() -> dict[str, Any]:
        v = np.zeros((chains, visible))
        for _ in range(sweeps):
            v = reference.gibbs(v)
        return common | {"v": torch.as_tensor(v, dtype=DTYPE)}

    def kernel() -> dict[str, Any]:
        state = torch.zeros(graph.size, dtype=torch.long, device=device)
        for _ in range(sweeps):
            state = sweep(graph, copies.colours, state)
        v = state[v_block.offset:v_block.offset + v_block.size].reshape(chains, visible)
        return common | {"v": v.to("cpu", DTYPE), "conditional_error": checks[KERNEL],
                         "sync": state}

    seeds = itertools.count(config.seed)

    def infer() -> dict[str, Any]:
        # Draw 1 is the state one sweep after the engine's start, itself one sweep from
        # all-off (kernel.starting_state), so the last of sweeps - 1 draws is sweep `sweeps`.
        post = genppl.infer(model, {}, engine="gibbs", num_samples=sweeps - 1,
                            warmup_steps=0, num_chains=chains, executor="vectorized",
                            seed=next(seeds) * chains, progress=False, params=params)
        v = post.samples["v"][:, -1].reshape(chains, visible)
        return common | {"v": v.to("cpu", DTYPE), "conditional_error": checks[INFER]}

    w, b, c = params.values()

    def matmuls() -> dict[str, Any]:
        v = torch.zeros(chains, visible, dtype=DTYPE, device=device)
        for _ in range(sweeps):
            h = torch.bernoulli(torch.sigmoid(c + v @ w))
            v = torch.bernoulli(torch.sigmoid(b + h @ w.T))
        return common | {"v": v.to("cpu"), "sync": v}

    return [Contender(_label(SAMPLE, SKLEARN), _timed(sklearn_gibbs)),
            Contender(_label(SAMPLE, KERNEL), _timed(kernel)),
            Contender(_label(SAMPLE, INFER), _timed(infer)),
            Contender(_label(SAMPLE, TORCH), _timed(matmuls))]


def conditional_error(graph: Any, colours: list[torch.Tensor], reference: Any,
                      seed: int) -> float:
    """Largest absolute difference between the one-step conditionals ``p(unit = 1 | other
    layer)`` that genppl's kernel draws from (its colour updates, at a random state of
    ``graph``) and scikit-learn's at the same state."""
    from genppl.gibbs.kernel import updates

    gen = torch.Generator().manual_seed(seed)
    device = graph.padding.device
    state = torch.randint(0, 2, (graph.size,), generator=gen).to(device)
    prob = torch.full((graph.size,), math.nan, dtype=DTYPE)
    for update in updates(graph, colours):
        prob[update.ids.cpu()] = torch.softmax(update.logits(state), -1)[:, 1].cpu().to(DTYPE)
    v_block, h_block = graph.blocks["v"], graph.blocks["h"]
    chains = v_block.size // reference.components_.shape[1]

    def layer(block: Any, values: torch.Tensor) -> np.ndarray:
        return values[block.offset:block.offset + block.size].reshape(chains, -1).cpu().numpy()

    v, h = layer(v_block, state).astype(float), layer(h_block, state).astype(float)
    p_h = reference.transform(v)
    p_v = 1 / (1 + np.exp(-(h @ reference.components_ + reference.intercept_visible_)))
    return max(float(np.abs(layer(h_block, prob) - p_h).max()),
               float(np.abs(layer(v_block, prob) - p_v).max()))


# --------------------------------------------------------------------------- evaluation
def chain_statistics(weights: Weights, v: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per chain: the share of pixels on, and the mean over hidden units of ``p(h = 1 | v)``."""
    w, _, c = weights
    v = v.to(w.dtype)
    return {"pixels_on": v.mean(1), "hidden_mean": torch.sigmoid(c + v @ w).mean(1)}


def z_scores(weights: Weights, ours: torch.Tensor, theirs: torch.Tensor) -> dict[str, float]:
    """``(mean - mean') / sqrt(se^2 + se'^2)`` of each chain statistic, chains independent."""
    a, b = chain_statistics(weights, ours), chain_statistics(weights, theirs)
    out = {}
    for key in a:
        se = math.sqrt(float(a[key].var() / len(a[key]) + b[key].var() / len(b[key])))
        gap = float(a[key].mean() - b[key].mean())
        out[key] = gap / se if se > 0 else (0.0 if gap == 0 else math.inf)
    return out


def evaluate(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, r in results.items():
        task, impl = name.split(" | ")
        ref = results[_label(task, SKLEARN)]
        row: dict[str, Any] = {"time_vs_sklearn": r["seconds"] / ref["seconds"]}
        if task == SAMPLE:
            row["chain_sweeps_per_s"] = r["chains"] * r["sweeps"] / r["seconds"]
            stats = chain_statistics(r["weights"], r["v"])
            row["pixels_on"] = float(stats["pixels_on"].mean())
            row["hidden_mean"] = float(stats["hidden_mean"].mean())
            if impl != SKLEARN:
                z = z_scores(r["weights"], r["v"], ref["v"])
                row["z_pixels_on"], row["z_hidden_mean"] = z["pixels_on"], z["hidden_mean"]
            if "conditional_error" in r:
                row["conditional_error"] = r["conditional_error"]
                if r["conditional_error"] > CONDITIONAL_TOL:
                    raise AssertionError(f"{name}: the kernel's one-step conditionals differ "
                                         f"from scikit-learn's by {r['conditional_error']:.3g}")
        else:
            row["ms_per_epoch"] = 1e3 * r["seconds"] / r["epochs"]
            row["ms_per_update"] = 1e3 * r["seconds"] / r["updates"]
            function, images = r["score"]
            key = "pll" if function is pseudo_log_likelihood else "exact_ll"
            row[key] = function(r["weights"], images)
        out[name] = row
    return out


def notes(results: dict[str, Any]) -> list[str]:
    sample = results[_label(SAMPLE, SKLEARN)]
    train = results[_label(TRAIN, SKLEARN)]
    genppl_train = results[_label(TRAIN, CD)]
    tiny = results[_label(TINY, SKLEARN)]
    return [
        f"block Gibbs: {sample['chains']} chains x {sample['sweeps']} sweeps (h | v, v | h) "
        "from the all-off image, of the RBM scikit-learn fits in "
        f"{SAMPLER_EPOCHS} epochs; z: (mean - sklearn's) / standard error over the chains, "
        "of the share of pixels on and of the mean p(h = 1 | v) at the last sweep (same "
        "start and kernel, so the same law whether or not the chains mixed)",
        "conditional error: largest |p(unit = 1 | other layer)| difference between the "
        "kernel's colour updates and scikit-learn's, at random states (raises past "
        f"{CONDITIONAL_TOL:g})",
        f"PCD-1: {train['epochs']} epochs of {train['images']:,} digits, batch {BATCH}, lr "
        f"{LR}, same initial weights; updates an epoch: scikit-learn "
        f"{train['updates'] // train['epochs']} (ceil), genppl "
        f"{genppl_train['updates'] // genppl_train['epochs']} (a last partial batch "
        "dropped); scikit-learn's gradient statistics use p(h | v), genppl's the sampled h "
        "(same expectation, more variance)",
        "PLL: mean over the 1,797 digits of sum over pixels of log p(v_i | v_rest) (the "
        "expectation of scikit-learn's score_samples); exact LL: mean log p(v) of the 4 x 4 "
        f"digits, 2^{TINY_HIDDEN} hidden states summed; higher is better for both; at the "
        f"initial weights, PLL {pseudo_log_likelihood(train['init'], train['score'][1]):.2f}"
        f" and exact LL {exact_log_likelihood(tiny['init'], tiny['score'][1]):.3f}",
        "time / sklearn: the contender's own mean seconds per call (the first call left "
        "out) over scikit-learn's on the same task; chain-sweeps/s = chains x sweeps / that",
        "scikit-learn runs on the CPU (numpy, float64) whatever --device says; the genppl "
        "rows and the torch reference run on --device",
    ]


CASE = register(Case(
    name="rbm",
    description="RBM 64x32 on binarised digits: block Gibbs sweeps and PCD-1 epochs, genppl "
                "vs scikit-learn BernoulliRBM",
    baseline=_label(SAMPLE, SKLEARN),
    contenders=contenders,
    evaluate=evaluate,
    columns=(Column("time_vs_sklearn", "time / sklearn", ".3g"),
             Column("chain_sweeps_per_s", "chain-sweeps/s", ".3g"),
             Column("ms_per_epoch", "ms / epoch", ".3g"),
             Column("ms_per_update", "ms / update", ".3g"),
             Column("z_pixels_on", "z pixels on", ".2f"),
             Column("z_hidden_mean", "z mean p(h|v)", ".2f"),
             Column("conditional_error", "conditional error", ".1e"),
             Column("pll", "PLL", ".2f"),
             Column("exact_ll", "exact LL", ".3f")),
    notes=notes,
))
