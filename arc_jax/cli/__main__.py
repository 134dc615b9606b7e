"""`python -m arc_jax.cli ...` is `arc-jax ...` (the multi-process tests and launch scripts start it so)."""

import sys

from arc_jax.cli import main

sys.exit(main())
