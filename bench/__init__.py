"""Benchmarks: the product's hot paths against hand-written references, as ratios.

Nothing here imports Django at import time; ``bench.harness.setup_django`` runs first.
"""
