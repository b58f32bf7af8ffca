"""Headway's benchmark suite: `python -m bench.run` (see README-performance.md)."""
