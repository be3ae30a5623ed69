"""Benchmark cases, one module each; importing a module registers its case
(``benchmarks.harness.register``), and ``benchmarks.harness.discover`` imports them all."""
