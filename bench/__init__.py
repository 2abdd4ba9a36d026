"""Benchmarks: run as `.venv/bin/python -m bench.<name>`; see bench/README.md. Not tests."""
