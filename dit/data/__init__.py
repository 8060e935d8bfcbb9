"""The data stage: the embedded synthetic data set, preparation of video folders into shards, the loader.

* ``dit.data.synthetic``: seeded captioned clips of moving glyphs and shapes (``python -m dit.data generate``).
* ``dit.data.video_io``: ``write_mp4``, ``write_gif``, ``read_frames``, ``psnr``.
* ``dit.data.prepare``: folder of videos -> shards + manifest.json (``python -m dit.data prepare``),
  decoding through ``dit.data.decode`` in crash-isolated worker processes (``dit.data.workers``).
* ``dit.data.loader``: ``ShardDataset`` (memory-mapped split) and ``ClipLoader`` (seeded, resumable,
  per-rank training stream).

Submodules are imported on use, so the command line starts without torch.
"""
