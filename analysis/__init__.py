"""Scaling-law analysis: fits of the optimal-hyperparameter laws, loss laws and compute-optimal allocation.

Units in every fitted law, as in the paper: N and T in billions (non-embedding parameters, video
tokens), B in tokens per batch, C in FLOPs. The runs table holds raw counts; ``analysis.runs``
converts.

This package does not import torch. It works on small matrices, where OpenBLAS threads only add
overhead (and, on a loaded machine, make the fits many times slower), so it asks OpenBLAS for one
thread unless ``OPENBLAS_NUM_THREADS`` is already set; that takes effect only when numpy has not
been imported before this package.
"""

import os as _os

_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
