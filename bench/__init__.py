"""Benchmarks. ``python -m bench`` runs the peer comparison (see ``bench/harness.py``)."""
