"""Training: the shared loop (trainer), the algorithms and their losses, the players' weights,
and what a run needs besides (processes, seed order, logs, checkpoints)."""
