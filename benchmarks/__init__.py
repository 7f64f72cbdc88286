"""Benchmarks for resumable: every figure is printed next to a baseline measured in the same run.

Run ``python -m benchmarks`` (full sizes) or ``python -m benchmarks --quick`` (a smoke run of about
a minute); ``--only step,throughput`` picks concerns. Each concern lives in its own module and
measures in fresh subprocesses, so one case's memory or global state never leaks into the next.
"""
