"""The variational autoencoder family, declared once for any binarised image data set.

Shared by ``vae_digits`` (8x8 digits) and ``vae_mnist`` (28x28 MNIST): the networks, the
model and guide builders (VAE, β-VAE and conditional VAE in one builder; VQ-VAE in another)
and the two distributions the DSL needs for the β weight and the vector quantiser.

**β (Higgins et al. 2017).** The β-VAE objective is E_q[log p(x | z)] - β KL(q(z | x) ‖ p(z)).
In Pyro's ELBO the KL term is the latent site's log p(z) - log q(z), so weighting that one
site's log-probability by β in the model *and* the guide gives exactly the β-VAE objective:
``KLWeighted`` is what ``poutine.scale(scale=β)`` would do to the site ``z`` alone, carried by
the distribution a factory returns (the DSL's sites are the factories' distributions). For
β ≠ 1 the objective is not a bound on log p(x); the entry reports the β = 1 ELBO and IWAE of
the β-trained networks.

**VQ-VAE (van den Oord et al. 2017).** The latent is a code from a learnt codebook of K
vectors at each of P positions, with a uniform prior; the posterior is one-hot on the code
nearest the encoder's output z_e (``NearestCode``). The model's latent is the code's *vector*
rather than its index: the straight-through estimator passes the decoder's gradient to z_e
through the value the guide hands the model, which an integer index cannot carry. Since
log q = 0 and log p(z) = -P log K, the "ELBO" is log p(x | z_q) - P log K. The codebook and
commitment losses are not terms of any ELBO; they ride on ``NearestCode.log_prob`` as a
zero-valued surrogate (value 0, the exact log q of the one-hot posterior; gradient that of
‖sg[z_e] - e‖² + β_c ‖z_e - sg[e]‖²), so the ELBO Pyro reports is the true one and its
gradient is the paper's loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn

import genppl

#: The VQ-VAE's commitment weight β_c (van den Oord et al. 2017 use 0.25).
COMMITMENT = 0.25


def seeded(make: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a module with its own seed, leaving the global RNG alone: builders are then
    reproducible whatever ran before them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def _join(x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """``x`` with the condition's features appended (broadcast over particle dims)."""
    if cond is None:
        return x
    return torch.cat([x, cond.expand(*x.shape[:-1], cond.shape[-1])], -1)


def one_hot(label: torch.Tensor, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """Integer labels as one-hot rows in ``like``'s dtype (on the labels' device, the model's)."""
    return nn.functional.one_hot(label.long(), num_classes).to(like.dtype)


# --------------------------------------------------------------------------- networks
class Decoder(nn.Module):
    """z (with an optional condition appended) -> Bernoulli logits of the pixels."""

    def __init__(self, in_dim: int, num_pixels: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Softplus(),
                                 nn.Linear(hidden, num_pixels))

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(_join(z, cond))


class Encoder(nn.Module):
    """pixels (with an optional condition appended) -> (loc, scale) of a diagonal Gaussian
    over z. The scale is a softplus plus a floor, which stays finite where ``exp`` of a
    log-variance can overflow early in training."""

    def __init__(self, in_dim: int, latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Softplus(),
                                 nn.Linear(hidden, 2 * latent_dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.net(_join(x, cond)).chunk(2, dim=-1)
        return loc, nn.functional.softplus(raw) + 1e-4


class VQEncoder(nn.Module):
    """pixels -> z_e, shape (..., positions, code dim), and the codebook (K, code dim) that
    quantises it; the model's prior reads the same codebook module."""

    def __init__(self, num_pixels: int, positions: int, code_dim: int, hidden: int,
                 codebook: nn.Embedding) -> None:
        super().__init__()
        self.positions, self.code_dim = positions, code_dim
        self.net = nn.Sequential(nn.Linear(num_pixels, hidden), nn.Softplus(),
                                 nn.Linear(hidden, positions * code_dim))
        self.codebook = codebook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).unflatten(-1, (self.positions, self.code_dim))


# --------------------------------------------------------------------------- distributions
class KLWeighted(dist.TorchDistribution):
    """``base`` with its log-probability multiplied by ``weight`` (draws unchanged): the
    effect of ``poutine.scale(scale=weight)`` on this one site (see the module docstring)."""

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}

    def __init__(self, base: dist.TorchDistribution, weight: float) -> None:
        self.base, self.weight = base, weight
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return self.base.has_rsample

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return self.base.support

    def expand(self, batch_shape: torch.Size, _instance: object = None) -> KLWeighted:
        return KLWeighted(self.base.expand(batch_shape), self.weight)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        return self.base.rsample(sample_shape)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        return self.base.sample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.weight * self.base.log_prob(value)


class UniformCodes(dist.TorchDistribution):
    """The VQ-VAE prior: at each of ``positions`` positions, one of the K codebook vectors,
    uniformly. log p = -positions · log K for any codebook vector (values come from the
    guide's quantiser, which only returns codebook vectors)."""

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    support = constraints.independent(constraints.real, 2)

    def __init__(self, codebook: torch.Tensor, positions: int,
                 batch_shape: tuple[int, ...] = ()) -> None:
        self.codebook, self.positions = codebook, positions
        super().__init__(torch.Size(batch_shape), torch.Size((positions, codebook.shape[-1])),
                         validate_args=False)

    def expand(self, batch_shape: torch.Size, _instance: object = None) -> UniformCodes:
        return UniformCodes(self.codebook, self.positions, torch.Size(batch_shape))

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape + (self.positions,)
        codes = torch.randint(len(self.codebook), shape, device=self.codebook.device)
        return self.codebook.detach()[codes]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        shape = value.shape[:value.dim() - 2]
        return torch.full(shape, -self.positions * math.log(len(self.codebook)),
                          dtype=value.dtype, device=value.device)


class NearestCode(dist.TorchDistribution):
    """The VQ-VAE posterior q(z | x): one-hot on the codebook vector nearest ``z_e`` at each
    position. A draw is that vector, with the straight-through gradient
    ``z_e + (e - z_e).detach()``; ``log_prob`` of a draw is 0 in value, with the codebook and
    commitment losses' gradient (see the module docstring)."""

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, z_e: torch.Tensor, codebook: torch.Tensor,
                 commitment: float = COMMITMENT) -> None:
        self.z_e, self.codebook, self.commitment = z_e, codebook, commitment
        super().__init__(z_e.shape[:-2], z_e.shape[-2:], validate_args=False)

    @property
    def codes(self) -> torch.Tensor:
        """Index of the nearest code at each position, shape batch + (positions,)."""
        with torch.no_grad():
            flat = self.z_e.reshape(-1, self.z_e.shape[-1])
            distances = torch.cdist(flat, self.codebook,
                                    compute_mode="donot_use_mm_for_euclid_dist")
            return distances.argmin(-1).reshape(self.z_e.shape[:-1])

    def expand(self, batch_shape: torch.Size, _instance: object = None) -> NearestCode:
        shape = torch.Size(batch_shape) + self.event_shape
        return NearestCode(self.z_e.expand(shape), self.codebook, self.commitment)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        e = self.codebook[self.codes]
        value = self.z_e + (e - self.z_e).detach()
        return value.expand(torch.Size(sample_shape) + value.shape)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        return self.rsample(sample_shape).detach()

    def losses(self) -> torch.Tensor:
        """‖sg[z_e] - e‖² + β_c ‖z_e - sg[e]‖², summed over positions (per batch item)."""
        e = self.codebook[self.codes]
        return ((self.z_e.detach() - e) ** 2).sum((-1, -2)) + self.commitment * (
            (self.z_e - e.detach()) ** 2).sum((-1, -2))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        loss = self.losses()
        return (loss - loss.detach()).expand(value.shape[:value.dim() - 2])


def codebook_perplexity(codes: torch.Tensor, num_codes: int) -> float:
    """exp of the entropy of the codes' frequencies: K when every code is used equally, 1
    when one code is used everywhere."""
    freq = torch.bincount(codes.flatten(), minlength=num_codes).double()
    freq = freq / freq.sum()
    return float(torch.exp(-(freq[freq > 0] * freq[freq > 0].log()).sum()))


# --------------------------------------------------------------------------- builders
def build_vae(name: str, num_pixels: int, *, latent_dim: int, hidden: int,
              subsample_size: int | None, decoder: nn.Module | None = None, beta: float = 1.0,
              num_classes: int | None = None, seed: int = 0) -> genppl.Model:
    """p(z) p_θ(x | z) per image (``num_classes``: p_θ(x | z, y) with the label y an input
    of the decoder: the conditional VAE). ``beta`` weights the KL term (see the module
    docstring); ``decoder`` shares a trained network with another copy of the model."""
    cond = num_classes or 0
    net = decoder if decoder is not None else seeded(
        lambda: Decoder(latent_dim + cond, num_pixels, hidden), seed)
    m = genppl.Model(name)
    m.module("decoder", net)

    def prior() -> dist.Distribution:
        d = dist.Normal(torch.zeros(latent_dim), 1.0).to_event(1)
        return d if beta == 1.0 else KLWeighted(d, beta)

    with m.plate("images", subsample_size=subsample_size):
        m.latent("z", prior)
        if num_classes is None:
            m.observed("pixels",
                       lambda z, decoder: dist.Bernoulli(logits=decoder(z)).to_event(1))
        else:
            m.input("label")
            m.observed("pixels", lambda z, label, decoder: dist.Bernoulli(
                logits=decoder(z, one_hot(label, num_classes, z))).to_event(1))
    return m


def build_guide(model: genppl.Model, num_pixels: int, *, latent_dim: int, hidden: int,
                encoder: nn.Module | None = None, beta: float = 1.0,
                num_classes: int | None = None, seed: int = 1) -> genppl.Guide:
    """q_φ(z | x) (or q_φ(z | x, y)): the encoder reads the observed pixels (amortised
    inference). Build it after ``model.to(...)``: it takes the model's device and dtype."""
    net = encoder if encoder is not None else seeded(
        lambda: Encoder(num_pixels + (num_classes or 0), latent_dim, hidden), seed)
    g = model.guide()
    g.module("encoder", net)

    def weighted(d: dist.TorchDistribution) -> dist.TorchDistribution:
        return d if beta == 1.0 else KLWeighted(d, beta)

    if num_classes is None:
        g.latent("z", lambda pixels, encoder: weighted(
            dist.Normal(*encoder(pixels)).to_event(1)))
    else:
        g.latent("z", lambda pixels, label, encoder: weighted(dist.Normal(
            *encoder(pixels, one_hot(label, num_classes, pixels))).to_event(1)))
    # A module declared after model.to(...) stays where it was made; put it with the model.
    return g.to(model.device, model.dtype)


def build_vqvae(name: str, num_pixels: int, *, positions: int, code_dim: int, num_codes: int,
                hidden: int, subsample_size: int | None, decoder: nn.Module | None = None,
                codebook: nn.Embedding | None = None, seed: int = 0) -> genppl.Model:
    """p(z) p_θ(x | z) with z a codebook vector at each of ``positions`` positions, uniform
    over the ``num_codes`` codes (``UniformCodes``); the codebook is a module of the model
    (its prior's support) that the guide's quantiser shares."""
    dec = decoder if decoder is not None else seeded(
        lambda: Decoder(positions * code_dim, num_pixels, hidden), seed)
    book = codebook if codebook is not None else seeded(
        lambda: nn.Embedding(num_codes, code_dim), seed + 2)
    m = genppl.Model(name)
    m.module("decoder", dec)
    m.module("codebook", book)
    with m.plate("images", subsample_size=subsample_size):
        m.latent("z", lambda codebook: UniformCodes(codebook.weight, positions),
                 enumerate=False)
        # the decoder reads the P code vectors as one flat vector
        m.observed("pixels", lambda z, decoder: dist.Bernoulli(
            logits=decoder(z.flatten(-2))).to_event(1))
    return m


def build_vq_guide(model: genppl.Model, num_pixels: int, *, positions: int, code_dim: int,
                   hidden: int, encoder: VQEncoder | None = None, seed: int = 1,
                   commitment: float = COMMITMENT) -> genppl.Guide:
    """q(z | x) = one-hot on the code nearest the encoder's output (``NearestCode``). The
    encoder holds the model's codebook module (the same parameters, registered under the
    guide's name too: Pyro's optimiser sees one tensor)."""
    book: nn.Embedding = model["codebook"].value
    net = encoder if encoder is not None else seeded(
        lambda: VQEncoder(num_pixels, positions, code_dim, hidden, book), seed)
    g = model.guide()
    g.module("encoder", net)
    g.latent("z", lambda pixels, encoder: NearestCode(encoder(pixels), encoder.codebook.weight,
                                                      commitment))
    return g.to(model.device, model.dtype)
