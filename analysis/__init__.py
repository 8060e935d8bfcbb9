"""Scaling-law analysis: fits of the optimal-hyperparameter laws, loss laws and compute-optimal allocation,
the facts document they support, and the reports rendered from it.

Units in every fitted law, as in the paper: N and T in billions (non-embedding parameters, video
tokens), B in tokens per batch, C in FLOPs. The runs table holds raw counts; ``analysis.runs``
converts. This package does not import torch, and importing it changes nothing (the fits' OpenBLAS
setting is ``analysis.blas``).
"""
