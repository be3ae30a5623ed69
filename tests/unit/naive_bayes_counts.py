"""Naive Bayes on count vectors, the test models' shared multinomial example: a flat
Dirichlet on the class prior, Dirichlet(2) on each class's words (additive smoothing with
one pseudo-count), and each document's counts ``WordCounts`` with its own length. (The
gallery's ``naive_bayes_bbc`` declares the same model on the words, one token per plate
copy; the engines' tests for count-vector observations use this one.)"""

from __future__ import annotations

import pyro.distributions as dist
import torch

import genppl
from genppl.distributions import WordCounts


def build(num_words: int, num_classes: int) -> genppl.Model:
    m = genppl.Model("naive_bayes_counts")
    m.latent("prior", lambda: dist.Dirichlet(torch.ones(num_classes)))
    m.latent("words", lambda: dist.Dirichlet(torch.full((num_words,), 2.0))
             .expand([num_classes]).to_event(1))
    with m.plate("docs"):
        m.input("length")
        m.latent("c", lambda prior: dist.Categorical(prior))
        m.observed("counts", lambda c, words, length: WordCounts(length, probs=words[c]))
    return m
