"""The overhead benchmark's cases, one module each; ``benchmarks/overhead.py`` lists them in the order it runs them."""
