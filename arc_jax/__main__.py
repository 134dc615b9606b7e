"""`python -m arc_jax ...` is `arc-jax ...` (where the console script is not installed)."""

from arc_jax.cli import main

raise SystemExit(main())
