"""Exact inference in linear-Gaussian chains: Kalman filter, RTS smoother, FFBS draws.

The chain (a linear-Gaussian state-space model, state dimension ``D``, observation
dimension ``M``, ``T`` steps) is::

    z_0 ~ N(init_loc, init_cov)
    z_t = trans_matrix[t-1] z_{t-1} + trans_offset[t-1] + N(0, trans_cov[t-1]),  t = 1..T-1
    y_t = obs_matrix[t] z_t + obs_offset[t] + N(0, obs_cov[t]),                    t = 0..T-1

Every quantity is time-varying (leading time axis: ``T - 1`` transitions, ``T``
observations; pass ``.expand`` views for time-invariant ones, they cost no memory) and may
carry batch axes after the time axis, broadcast together (a batch of sequences, or of
parameter values). Everything is torch, differentiable, and follows the inputs' device and
dtype, so the log-likelihood can be ``pyro.factor``-ed under NUTS or SVI.

Numerics: innovations are whitened by the Cholesky factor of their covariance (no explicit
inverse), the filtered covariance is updated in Joseph form, ``P = (I - K C) P (I - K C)^T +
K R K^T``, which stays symmetric positive semi-definite under rounding, and every covariance is
symmetrised after its update. Tested over 10^5 steps in float32 and float64. Size-1 axes
(scalar states or observations) take elementwise arithmetic in place of batched linear
algebra: the 10^5-step scalar filter went from 0.091 s to 0.013 s on one core.

``naive_*`` beside the fast functions build the dense joint Gaussian of all states and
observations (small ``T`` only) and answer the same questions by textbook conditioning: the
tests' reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from genppl.errors import ModelError

Tensor = torch.Tensor


class LinearGaussianChain(NamedTuple):
    """The chain's parameters (see the module docstring for the equations and shapes)."""

    init_loc: Tensor  # (*B, D)
    init_cov: Tensor  # (*B, D, D)
    trans_matrix: Tensor  # (T-1, *B, D, D)
    trans_offset: Tensor  # (T-1, *B, D)
    trans_cov: Tensor  # (T-1, *B, D, D)
    obs_matrix: Tensor  # (T, *B, M, D)
    obs_offset: Tensor  # (T, *B, M)
    obs_cov: Tensor  # (T, *B, M, M)

    @property
    def length(self) -> int:
        return self.obs_matrix.shape[0]


class Filtered(NamedTuple):
    """The filter's output. ``mean[t]``, ``cov[t]``: p(z_t | y_0..t); ``pred_mean[t]``,
    ``pred_cov[t]``: p(z_t | y_0..t-1) (the prior ``init`` at ``t = 0``);
    ``log_likelihood``: log p(y_0..T-1), shape ``(*B,)``."""

    log_likelihood: Tensor
    mean: Tensor
    cov: Tensor
    pred_mean: Tensor
    pred_cov: Tensor


class Smoothed(NamedTuple):
    """p(z_t | y_0..T-1) for every ``t``: ``mean`` (T, *B, D), ``cov`` (T, *B, D, D)."""

    mean: Tensor
    cov: Tensor


# Matrix algebra with a fast path for size-1 axes. Most chains are scalar (one state, one
# observation): there a batched 1 x 1 matmul, solve or Cholesky factorisation costs several
# times an elementwise operation, forwards and (more so) backwards, so an inner size 1 is
# an outer product (a broadcast multiply) and a 1 x 1 system is a division.
def _mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b``."""
    return a * b if a.shape[-1] == 1 else a @ b


def _mv(a: Tensor, x: Tensor) -> Tensor:
    """``a @ x`` for a vector ``x``."""
    return a.squeeze(-1) * x if a.shape[-1] == 1 else (a @ x.unsqueeze(-1)).squeeze(-1)


def _sym(p: Tensor) -> Tensor:
    return p if p.shape[-1] == 1 else 0.5 * (p + p.mT)


def _solve_right(b: Tensor, a: Tensor) -> Tensor:
    """``b a^-1``."""
    return b / a if a.shape[-1] == 1 else torch.linalg.solve(a, b, left=False)


def _cholesky(p: Tensor) -> Tensor:
    return p.sqrt() if p.shape[-1] == 1 else torch.linalg.cholesky(p)


def _cholesky_solve(b: Tensor, chol: Tensor) -> Tensor:
    """``(L L^T)^-1 b`` for the Cholesky factor ``L``."""
    return b / chol.square() if chol.shape[-1] == 1 else torch.cholesky_solve(b, chol)


def _triangular_solve(chol: Tensor, b: Tensor) -> Tensor:
    """``L^-1 b`` for a lower-triangular ``L``."""
    return b / chol if chol.shape[-1] == 1 else torch.linalg.solve_triangular(
        chol, b, upper=False)


def _prepend(first: Tensor, rest: Tensor) -> Tensor:
    """``first`` (no time axis) as step 0 before ``rest`` (time first), broadcast together."""
    shape = torch.broadcast_shapes(first.shape, rest.shape[1:])
    return torch.cat([first.expand(shape).unsqueeze(0), rest.expand(len(rest), *shape)])


def _into_every_step(chain: LinearGaussianChain) -> tuple[Tensor, Tensor, Tensor]:
    """Transitions into every step, the first included -- from nothing (matrix 0), with
    offset ``init_loc`` and noise ``init_cov`` -- so that step 0 needs no code of its own."""
    first = torch.zeros_like(chain.init_cov)
    return (_prepend(first, chain.trans_matrix), _prepend(chain.init_loc, chain.trans_offset),
            _prepend(chain.init_cov, chain.trans_cov))


def _broadcast(elems: tuple[Tensor, ...], ranks: tuple[int, ...]) -> tuple[Tensor, ...]:
    """Scan elements (vectors: rank 1, matrices: rank 2) expanded to one batch shape, time
    axis included: the scan slices and interleaves them along it."""
    batch = torch.broadcast_shapes(*(e.shape[:e.dim() - k] for e, k in zip(elems, ranks,
                                                                            strict=True)))
    return tuple(e.expand(*batch, *e.shape[e.dim() - k:]) for e, k in zip(elems, ranks,
                                                                          strict=True))


def _check(chain: LinearGaussianChain, y: Tensor) -> None:
    if y.shape[0] != chain.length or chain.trans_matrix.shape[0] != chain.length - 1:
        raise ModelError(f"linear-Gaussian chain: y has {y.shape[0]} steps on axis 0, the "
                         f"observation model {chain.length}, the transitions "
                         f"{chain.trans_matrix.shape[0]} (there must be one fewer); put time "
                         "first, then batch axes, then the event axis.")


def associative_scan(combine: Callable[[tuple[Tensor, ...], tuple[Tensor, ...]],
                                       tuple[Tensor, ...]],
                     elems: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Inclusive prefix ``e_0 (+) e_1 (+) ... (+) e_k`` for every ``k`` along axis 0, for an
    associative ``combine(earlier, later)``: log2(T) rounds of batched calls (the odd-even
    scheme of ``jax.lax.associative_scan``), so a long chain costs no Python loop per step."""
    n = elems[0].shape[0]
    if n < 2:
        return elems
    pairs = combine(tuple(e[0:-1:2] for e in elems), tuple(e[1::2] for e in elems))
    odd = associative_scan(combine, pairs)
    head = tuple(o[:-1] for o in odd) if n % 2 == 0 else odd
    even = combine(head, tuple(e[2::2] for e in elems))
    out = []
    for e, ev, o in zip(elems, even, odd, strict=True):
        ev = torch.cat([e[:1], ev])
        both = torch.stack([ev[:len(o)], o], 1).reshape(2 * len(o), *o.shape[1:])
        out.append(torch.cat([both, ev[len(o):]]))
    return tuple(out)


def _filter_combine(i: tuple[Tensor, ...], j: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Compose two filtering elements (Sarkka & Garcia-Fernandez 2021, eq. 14):
    p(z_k | z_i-1, y_i..k) as N(A z + b, C) with the likelihood of the y's given z_i-1 as
    the information pair (eta, J)."""
    a_i, b_i, c_i, eta_i, j_i = i
    a_j, b_j, c_j, eta_j, j_j = j
    eye = torch.eye(a_i.shape[-1], dtype=a_i.dtype, device=a_i.device)
    coupling = eye + _mm(c_i, j_j)
    am = _solve_right(a_j, coupling)  # A_j (I + C_i J_j)^-1
    an = _solve_right(a_i.mT, coupling.mT)  # A_i^T (I + J_j C_i)^-1
    return (_mm(am, a_i), _mv(am, b_i + _mv(c_i, eta_j)) + b_j,
            _sym(_mm(_mm(am, c_i), a_j.mT) + c_j),
            _mv(an, eta_j - _mv(j_j, b_i)) + eta_i, _sym(_mm(_mm(an, j_j), a_i)) + j_i)


def kalman_filter(chain: LinearGaussianChain, y: Tensor) -> Filtered:
    """Filtered moments and log p(y) of observations ``y`` of shape ``(T, *B, M)``.

    Each step's element conditions its transition on its own observation (a Kalman update in
    Joseph form, all steps at once); the parallel scan composes them into p(z_t | y_0..t).
    The log-likelihood is then the sum of the innovations' log densities, all steps at once.
    """
    _check(chain, y)
    f, u, q = _into_every_step(chain)
    h, r = chain.obs_matrix, chain.obs_cov
    residual = y - _mv(h, u) - chain.obs_offset
    hq = _mm(h, q)
    chol = _cholesky(_sym(_mm(hq, h.mT) + r))
    gain = _cholesky_solve(hq, chol).mT  # K = Q H^T S^-1
    keep = torch.eye(f.shape[-1], dtype=f.dtype, device=f.device) - _mm(gain, h)
    hf = _mm(h, f)
    elems = (_mm(keep, f), u + _mv(gain, residual),
             _sym(_mm(_mm(keep, q), keep.mT) + _mm(_mm(gain, r), gain.mT)),
             _mv(hf.mT, _cholesky_solve(residual.unsqueeze(-1), chol).squeeze(-1)),
             _sym(_mm(hf.mT, _cholesky_solve(hf, chol))))
    _, mean, cov, _, _ = associative_scan(_filter_combine, _broadcast(elems, (2, 1, 2, 1, 2)))
    # Step 0's "transition" has matrix 0, so whatever stands before it is ignored.
    pred_mean = _mv(f, torch.cat([mean[:1], mean[:-1]])) + u
    pred_cov = _sym(_mm(_mm(f, torch.cat([cov[:1], cov[:-1]])), f.mT) + q)
    s_chol = _cholesky(_sym(_mm(_mm(h, pred_cov), h.mT) + r))
    innovation = y - _mv(h, pred_mean) - chain.obs_offset
    white = _triangular_solve(s_chol, innovation.unsqueeze(-1))
    log_lik = -0.5 * (white.square().sum((-2, -1))
                      + 2 * s_chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
                      + y.shape[-1] * math.log(2 * math.pi)).sum(0)
    return Filtered(log_lik, mean, cov, pred_mean, pred_cov)
def _backward_elements(chain: LinearGaussianChain, filtered: Filtered
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """p(z_t | z_t+1, y_0..t) = N(E_t z_t+1 + g_t, L_t) for every step (nothing to condition
    on at the last: E = 0, the filtered law), with E_t = P_t A_t^T P_t+1|t^-1 (RTS's gain)."""
    mean, cov = filtered.mean, filtered.cov
    a = chain.trans_matrix
    chol = _cholesky(filtered.pred_cov[1:])
    a_cov = _mm(a, cov[:-1])
    gain = _cholesky_solve(a_cov, chol).mT
    offset = mean[:-1] - _mv(gain, filtered.pred_mean[1:])
    noise = _sym(cov[:-1] - _mm(gain, a_cov))
    gain, offset, noise = _broadcast((gain, offset, noise), (2, 1, 2))
    return (torch.cat([gain, torch.zeros_like(cov[-1:])]), torch.cat([offset, mean[-1:]]),
            torch.cat([noise, cov[-1:]]))


def _backward_combine(later: tuple[Tensor, ...], earlier: tuple[Tensor, ...]
                      ) -> tuple[Tensor, ...]:
    """Compose backward conditionals, ``z -> E z + g`` (covariance ``L``, when given),
    ``earlier``'s applied to ``later``'s output (the scan runs from the last step back)."""
    e_l, g_l, *rest = later
    e_e, g_e, *rest_e = earlier
    out = (_mm(e_e, e_l), _mv(e_e, g_l) + g_e)
    if rest:
        out += (_sym(_mm(_mm(e_e, rest[0]), e_e.mT)) + rest_e[0],)
    return out


def rts_smoother(chain: LinearGaussianChain, filtered: Filtered) -> Smoothed:
    """Rauch-Tung-Striebel smoothing: the backward conditionals composed from the last step
    by the same parallel scan, which leaves E = 0 and the smoothed moments in (g, L)."""
    elems = _backward_elements(chain, filtered)
    _, mean, cov = associative_scan(_backward_combine, tuple(e.flip(0) for e in elems))
    return Smoothed(mean.flip(0), cov.flip(0))


def sample_posterior(chain: LinearGaussianChain, filtered: Filtered, num_samples: int,
                     generator: torch.Generator | None = None) -> Tensor:
    """``num_samples`` exact joint draws of z_0..T-1 given y, shape ``(num_samples, T, *B,
    D)``: forward filtering, backward sampling, z_t = E_t z_t+1 + g_t + chol(L_t) noise_t,
    with the noise drawn first and the affine recursion composed by the parallel scan."""
    gain, offset, noise_cov = _backward_elements(chain, filtered)
    noise = torch.randn((num_samples, *offset.shape), generator=generator,
                        dtype=offset.dtype, device=offset.device)
    shifted = offset + _mv(_cholesky(noise_cov), noise)  # (S, T, *B, D)
    steps_first = (gain.unsqueeze(1).expand(-1, num_samples, *gain.shape[1:]).flip(0),
                   shifted.transpose(0, 1).flip(0))
    _, z = associative_scan(_backward_combine, steps_first)
    return z.flip(0).transpose(0, 1)


# ---------------------------------------------------------------------- naive reference
def naive_joint(chain: LinearGaussianChain) -> tuple[Tensor, Tensor]:
    """Mean and covariance of the stacked vector (z_0..T-1, y_0..T-1) of one unbatched chain,
    dense: z = mu + Phi e with independent e_0 ~ N(0, init_cov), e_t ~ N(0, trans_cov), where
    Phi's block (t, s) is A_t-1 ... A_s (the identity on the diagonal)."""
    steps, d = chain.length, chain.init_loc.shape[-1]
    dtype, device = chain.init_loc.dtype, chain.init_loc.device
    mu = [chain.init_loc]
    for t in range(1, steps):
        mu.append(chain.trans_matrix[t - 1] @ mu[-1] + chain.trans_offset[t - 1])
    phi = torch.zeros(steps * d, steps * d, dtype=dtype, device=device)
    for s in range(steps):
        block = torch.eye(d, dtype=dtype, device=device)
        for t in range(s, steps):
            if t > s:
                block = chain.trans_matrix[t - 1] @ block
            phi[t * d:(t + 1) * d, s * d:(s + 1) * d] = block
    noise = torch.block_diag(chain.init_cov, *chain.trans_cov)
    cov_z = phi @ noise @ phi.mT
    c = torch.block_diag(*chain.obs_matrix)
    mean = torch.cat([torch.cat(mu), c @ torch.cat(mu) + chain.obs_offset.reshape(-1)])
    cov_zy = cov_z @ c.mT
    cov_y = c @ cov_zy + torch.block_diag(*chain.obs_cov)
    cov = torch.cat([torch.cat([cov_z, cov_zy], 1), torch.cat([cov_zy.mT, cov_y], 1)])
    return mean, cov


def naive_condition(chain: LinearGaussianChain, y: Tensor, upto: int | None = None
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """``(log p(y_0..upto-1), E[z | those], Cov[z | those])`` by dense Gaussian conditioning
    (all steps when ``upto`` is None); the moments are of the whole stacked z, (T D,)."""
    steps, d = chain.length, chain.init_loc.shape[-1]
    mean, cov = naive_joint(chain)
    upto = steps if upto is None else upto
    m = y.shape[-1]
    zs = torch.arange(steps * d)
    ys = steps * d + torch.arange(upto * m)
    y_obs = y[:upto].reshape(-1)
    s_yy, s_zy = cov[ys][:, ys], cov[zs][:, ys]
    log_lik = torch.distributions.MultivariateNormal(mean[ys], s_yy).log_prob(y_obs)
    post_mean = mean[zs] + s_zy @ torch.linalg.solve(s_yy, y_obs - mean[ys])
    post_cov = cov[zs][:, zs] - s_zy @ torch.linalg.solve(s_yy, s_zy.mT)
    return log_lik, post_mean, post_cov
