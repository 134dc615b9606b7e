"""Training: the `arc-jax train` loop (trainer.py), the jitted train step (step.py), the optimiser
over the trainable groups (optimizer.py, trainable.py, schedule.py), the checked run config
(run_config.py) and Orbax checkpoints (checkpoint.py)."""
