"""Benchmark cases for benchmarks/step_latency.py: one module per model shape.

A case module defines NAME, SHAPE, make(dir) -> path, oracle(path) -> (label, step_fn) | None,
and inputs(n, rng) -> list of per-step inputs (as StreamingSession.step takes them).
"""
