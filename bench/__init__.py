"""fiveplane benchmarks (``make bench``): each ``bench/bench_*.py`` module exposes ``BENCHMARKS``,
a mapping of benchmark name → zero-argument callable returning a dict of figures (floats/ints/str).
"""
