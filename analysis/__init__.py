"""Scaling-law analysis: fits of the optimal-hyperparameter laws, loss laws and compute-optimal allocation."""
