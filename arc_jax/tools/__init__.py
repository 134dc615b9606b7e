"""Measurements and self-checks run from the command line: `arc-jax bench train` (bench_train.py:
the training step's throughput and MFU), `arc-jax bench inference` (bench_inference.py: compressed
against full-context generation, FLOPs and time), `arc-jax roundtrip` (roundtrip.py: tiny random
models through every checkpoint layout, bit-exact) and `arc-jax plan` (plan.py: the train step compiled
for a TPU topology without the hardware; hlo_collectives.py reads its collectives)."""
