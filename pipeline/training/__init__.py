"""Training loop pieces: checkpoint schedules, optimizers, losses and quality metrics."""
