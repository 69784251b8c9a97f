"""Evaluation: the defender against held-out seeds, red-teaming, utility, reports and plots."""
