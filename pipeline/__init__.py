"""The pipeline layer: what the stages of the Snakemake workflow share, and nothing of the model or the laws.

* ``pipeline.config``: the pipeline config (``config/*.yaml``), loaded once with the schema's defaults
  filled in and validated once (``python -m pipeline.config check``).
* ``pipeline.runs``: run ids, run and job specs, and each run's ``dit.train`` config.
* ``pipeline.formats``: the files that pass between stages: the runs table's columns and the
  held-out proposal.
* ``pipeline.collect``: run folders into the runs table (``python -m pipeline.collect``).
* ``pipeline.performance``: model FLOPs and job seconds of the grid against the machine's matmul rate.

``dit`` (model, data, engine) and ``analysis`` (laws) know nothing of it; it uses both.
"""
