"""The data stage: the embedded synthetic data set, preparation of video folders into shards, the loader.

* ``dit.data.synthetic``: seeded captioned clips of moving glyphs and shapes (``python -m dit.data generate``).
* ``dit.data.video_io``: ``write_mp4``, ``write_gif``, ``read_frames``, ``psnr``.
* ``dit.data.prepare``: folder of videos -> shards + manifest.json (``python -m dit.data prepare``),
  finding files and captions through ``dit.data.sources``, decoding through ``dit.data.decode`` in
  crash-isolated worker processes (``dit.data.workers``), writing the format of ``dit.data.shards``.
* ``dit.data.loader``: ``ShardDataset`` (memory-mapped split) and ``ClipLoader`` (seeded, resumable,
  per-rank training stream).

This package imports no submodule, and the command line (``dit.data.__main__``) does not import
torch, so it starts without it.
"""
