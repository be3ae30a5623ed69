"""Benchmarks: genppl measured side by side with its peers in the same run.

Nothing in ``genppl`` imports this package; it depends on genppl (and on the ``bench`` extra,
scikit-learn), never the other way round. Run ``python -m benchmarks.run --help``.
"""
