"""Measurements and self-checks run from the command line: `arc-jax bench train` (bench_train.py:
the training step's throughput and MFU), `arc-jax bench inference` (bench_inference.py: compressed
against full-context generation, FLOPs and time) and `arc-jax roundtrip` (roundtrip.py: tiny random
models through every checkpoint layout, bit-exact)."""
