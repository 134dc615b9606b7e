"""Training: the learning-rate schedule, the optimiser over trainable groups, the train step."""
