"""arc_jax."""
