"""Training: the trainer and its run state, optimizers, schedules, checkpoints, evaluation."""
