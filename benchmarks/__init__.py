"""Benchmarks of inbedder-index: each module answers one question, run as ``python -m benchmarks.NAME``.

``harness`` holds what every script shares (machine info, timing, results, memory probes, fresh
processes), ``texts`` the synthetic corpora, ``procedures`` the encoding procedures compared side
by side, and ``report`` turns ``results/*.json`` into ``RESULTS.md``.
"""
