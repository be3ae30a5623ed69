"""The lineage of generative models, each declared once on the genppl DSL.

``ENTRIES`` is the registry: every module here must be listed (a test fails otherwise), and
each defines ``ENTRY = genppl.gallery.GalleryEntry(...)``. The library finds this package by
its ``genppl.gallery`` entry point (``pyproject.toml``), never by importing it by name.
"""

ENTRIES = [
    "pearson_crabs",
    "sprinkler",
    "asia",
    "cancer",
    "alarm",
    "casino_hmm",
    "weather_hmm",
    "ising_3x3",
    "ising_denoise",
    "vae_digits",
    "vae_mnist",
    "ddpm_toy",
    "kalman_nile",
    "rbm_digits",
    "markov_text",
    "flows",
    "lda_bbc",
    "naive_bayes_bbc",
    "bernoulli_mixture_mnist",
    "rbm_mnist",
]
