"""Side-by-side benchmarks of Sluice and the simplest honest reference for each part.

``sluice bench <scenario>`` runs them (see :mod:`bench.runner`); results go to bench/RESULTS.md.
"""
