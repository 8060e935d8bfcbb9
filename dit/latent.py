"""A fixed linear patch autoencoder: the suite's stand-in for the paper's video VAE latent space.

The paper diffuses in a VAE latent space with 16 values per token (4 latent channels x 1 x 2 x 2).
No VAE weights can be downloaded here, and diffusing raw RGB tubelets instead puts
``channels x pt x ph x pw`` values behind every token (96 for a 2 x 4 x 4 RGB tubelet): a model
narrower than that cannot even pass the noise through, so the loss of the smallest sizes would
measure that width bottleneck rather than learning. ``LatentCodec`` removes it the way a VAE does:
each tubelet of pixels is projected onto the top ``latent_channels`` principal components of the
training clips' tubelets (PCA, fitted once by ``fit_codec`` and shared by every run), giving a latent
video of shape ``(latent_channels, F/pt, H/ph, W/pw)``. The DiT then works on that latent video with a
1 x 1 x 1 patch, so ``patch_dim = latent_channels``.

Latents are scaled by one global factor to unit variance (as latent-diffusion models scale VAE
latents). ``decode`` maps back to pixels for samples; its round-trip PSNR is recorded in the codec
file. Files are ``.npz`` arrays plus a JSON header, read with ``allow_pickle=False``.

``python -m dit.latent fit --data PREPARED --out codec.npz [--patch 2 4 4] [--channels 16]``; non-positive counts,
a negative seed, a bad ``--out`` path and a fit with non-finite values are refused (exit status 2) and nothing is
written. A codec file with non-finite values is refused when read (``CodecError`` naming the file).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dit.atomic import atomic_write_bytes, check_output_files
from dit.data.loader import ShardDataset
from dit.diffusion import model_space_to_video, video_to_model_space
from dit.provenance import provenance

FORMAT = "dit-latent-codec"


class CodecError(ValueError):
    """A codec file is missing, malformed or does not match the clips; the message names it."""


@dataclass(frozen=True)
class LatentCodec:
    """Fixed linear encoder/decoder between uint8 clips and latent videos.

    Attributes:
        patch: pixel tubelet ``(frames, height, width)`` that becomes one latent position.
        channels: pixel channels (3, RGB).
        basis: ``(patch_values, latent_channels)`` orthonormal principal directions (float64).
        mean: ``(patch_values,)`` mean tubelet in model space ``[-1, 1]``.
        scale: multiplies the projections so the latents have unit variance on the fitting clips.
        metadata: fitting record (clips used, explained variance, round-trip PSNR in dB, provenance).
    """

    patch: tuple[int, int, int]
    channels: int
    #: Latents are scaled to unit variance, not bounded: a sampler must not clamp them to [-1, 1].
    bounded = False
    basis: np.ndarray
    mean: np.ndarray
    scale: float
    metadata: dict

    @property
    def latent_channels(self) -> int:
        return int(self.basis.shape[1])

    @property
    def patch_values(self) -> int:
        pt, ph, pw = self.patch
        return self.channels * pt * ph * pw

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``(latent_channels, frames/pt, height/ph, width/pw)`` for a clip of that pixel shape."""
        return latent_shape(self.patch, self.latent_channels, frames, height, width)

    def _tubelets(self, video: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        if video.dtype != torch.uint8 or video.ndim != 5 or video.shape[-1] != self.channels:
            raise CodecError(
                f"expected uint8 clips (batch, frames, height, width, {self.channels}), "
                f"got {video.dtype} {tuple(video.shape)}"
            )
        batch, frames, height, width, channels = video.shape
        _, gf, gh, gw = self.latent_shape(frames, height, width)
        pt, ph, pw = self.patch
        pixels = video.to(torch.float32) / 127.5 - 1.0
        tubelets = pixels.reshape(batch, gf, pt, gh, ph, gw, pw, channels)
        tubelets = tubelets.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(batch, gf, gh, gw, self.patch_values)
        return tubelets, (gf, gh, gw)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 clips ``(B, F, H, W, C)`` -> float32 latents ``(B, latent_channels, F/pt, H/ph, W/pw)``."""
        tubelets, _ = self._tubelets(video)
        basis = torch.as_tensor(self.basis, dtype=torch.float32, device=video.device)
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=video.device)
        latents = (tubelets - mean) @ basis * self.scale
        return latents.permute(0, 4, 1, 2, 3).contiguous()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """float latents ``(B, latent_channels, f, h, w)`` -> uint8 clips ``(B, f*pt, h*ph, w*pw, C)``."""
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise CodecError(
                f"expected latents (batch, {self.latent_channels}, frames, height, width), got {tuple(latents.shape)}"
            )
        batch, _, gf, gh, gw = latents.shape
        pt, ph, pw = self.patch
        basis = torch.as_tensor(self.basis, dtype=torch.float32, device=latents.device)
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=latents.device)
        values = latents.detach().float().permute(0, 2, 3, 4, 1) / self.scale @ basis.T + mean
        pixels = values.reshape(batch, gf, gh, gw, pt, ph, pw, self.channels)
        pixels = pixels.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(batch, gf * pt, gh * ph, gw * pw, self.channels)
        return ((pixels.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)

    def check_finite(self, where: str) -> None:
        """``CodecError`` naming ``where`` when the basis, mean or scale holds a NaN or an infinity (a fit on clips
        without variance, or a damaged file): such a codec would turn every clip into NaNs."""
        bad = [name for name, values in (("basis", self.basis), ("mean", self.mean), ("scale", self.scale))
               if not np.isfinite(values).all()]
        if bad:
            raise CodecError(f"{where}: non-finite values (NaN or infinity) in the codec's {' and '.join(bad)}; "
                             "fit it again on clips that vary")

    def to_bytes(self) -> bytes:
        self.check_finite("latent codec")
        header = {
            "format": FORMAT,
            "patch": list(self.patch),
            "channels": self.channels,
            "scale": self.scale,
            "metadata": self.metadata,
        }
        buffer = io.BytesIO()
        np.savez(buffer, basis=self.basis, mean=self.mean, header=np.frombuffer(json.dumps(header).encode(), np.uint8))
        return buffer.getvalue()

    def save(self, path: str | Path) -> None:
        """Write the codec to ``path`` (``.npz``) atomically."""
        atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> "LatentCodec":
        """Read a codec written by ``save`` (no pickles)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as arrays:
                header = json.loads(arrays["header"].tobytes().decode())
                basis, mean = arrays["basis"].astype(np.float64), arrays["mean"].astype(np.float64)
        except FileNotFoundError:
            raise CodecError(f"{path}: no latent codec file (run `python -m dit.latent fit` first)") from None
        except (OSError, KeyError, ValueError) as error:
            raise CodecError(f"{path}: not a latent codec file ({error})") from None
        if header.get("format") != FORMAT:
            raise CodecError(f"{path}: format {header.get('format')!r} is not {FORMAT!r}")
        codec = cls(
            patch=tuple(int(p) for p in header["patch"]),
            channels=int(header["channels"]),
            basis=basis,
            mean=mean,
            scale=float(header["scale"]),
            metadata=header.get("metadata", {}),
        )
        if basis.shape[0] != codec.patch_values or mean.shape != (codec.patch_values,):
            raise CodecError(f"{path}: basis {basis.shape} / mean {mean.shape} do not match patch {codec.patch}")
        codec.check_finite(str(path))
        return codec


def fit_codec(
    videos: torch.Tensor,
    patch: Sequence[int],
    latent_channels: int,
    metadata: dict | None = None,
) -> LatentCodec:
    """Principal directions of the tubelets of ``videos`` (uint8 ``(B, F, H, W, C)``)."""
    patch = tuple(int(p) for p in patch)
    channels = int(videos.shape[-1])
    values = channels * patch[0] * patch[1] * patch[2]
    if not 1 <= latent_channels <= values:
        raise CodecError(f"latent channels must be between 1 and {values} (the values per tubelet), got {latent_channels}")
    probe = LatentCodec(patch, channels, np.zeros((values, 1)), np.zeros(values), 1.0, {})
    tubelets, _ = probe._tubelets(videos)
    data = tubelets.reshape(-1, values).double()
    mean = data.mean(dim=0)
    centred = data - mean
    covariance = centred.T @ centred / max(len(centred) - 1, 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    order = torch.argsort(eigenvalues, descending=True)
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    # A deterministic sign for each direction: its largest-magnitude entry is positive.
    signs = torch.sign(eigenvectors[eigenvectors.abs().argmax(dim=0), torch.arange(values)])
    eigenvectors = eigenvectors * torch.where(signs == 0, torch.ones_like(signs), signs)
    basis = eigenvectors[:, :latent_channels]
    projections = centred @ basis
    scale = float(1.0 / projections.std())
    codec = LatentCodec(patch, channels, basis.numpy(), mean.numpy(), scale, {})
    reconstructed = codec.decode(codec.encode(videos)).float()
    mse = float(((reconstructed - videos.float()) ** 2).mean())
    record = {
        "fitting_clips": int(videos.shape[0]),
        "tubelets": int(len(data)),
        "explained_variance": float(eigenvalues[:latent_channels].sum() / eigenvalues.sum()),
        "round_trip_psnr_db": float(10 * np.log10(255.0**2 / mse)) if mse > 0 else float("inf"),
        **(metadata or {}),
    }
    return LatentCodec(patch, channels, basis.numpy(), mean.numpy(), scale, record)


def fit_codec_from_data(data_root: str | Path, patch: Sequence[int], latent_channels: int, max_clips: int = 2048,
                        seed: int = 0) -> LatentCodec:
    """Fit on up to ``max_clips`` training clips of a prepared data folder (a seeded choice)."""
    dataset = ShardDataset(data_root, split="train")
    count = min(max_clips, len(dataset))
    indices = np.sort(np.random.default_rng(seed).choice(len(dataset), size=count, replace=False))
    videos = dataset.get(indices)["video"]
    settings = {"data_root": str(data_root), "patch": list(patch), "latent_channels": latent_channels,
                "max_clips": max_clips, "seed": seed}
    return fit_codec(videos, patch, latent_channels, metadata={"provenance": provenance(settings)})


def check_fit_options(args: argparse.Namespace) -> None:
    """Before any work: ``CodecError`` naming the option for a non-positive ``--patch``, ``--channels`` or
    ``--max-clips`` and a negative ``--seed``; ``OutputPathError`` for an ``--out`` that is a folder, lies below a
    file or is a file of the ``--data`` folder."""
    for option, values in (("--patch", args.patch), ("--channels", [args.channels]), ("--max-clips", [args.max_clips])):
        if any(value < 1 for value in values):
            raise CodecError(f"{option} must be positive, got {' '.join(map(str, values))}")
    if args.seed < 0:
        raise CodecError(f"--seed must be a non-negative integer, got {args.seed}")
    check_output_files([args.out], list(args.data.iterdir()) if args.data.is_dir() else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dit.latent", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="fit the codec on a prepared data folder's training clips")
    fit.add_argument("--data", required=True, type=Path, help="prepared data folder (python -m dit.data prepare)")
    fit.add_argument("--out", required=True, type=Path, help="codec file to write (.npz)")
    fit.add_argument("--patch", type=int, nargs=3, default=[2, 4, 4], help="pixel tubelet (frames height width)")
    fit.add_argument("--channels", type=int, default=16, help="latent channels (values per token)")
    fit.add_argument("--max-clips", type=int, default=2048, help="training clips used for the fit")
    fit.add_argument("--seed", type=int, default=0, help="seed of the choice of clips")
    args = parser.parse_args(argv)
    try:
        check_fit_options(args)
        codec = fit_codec_from_data(args.data, args.patch, args.channels, args.max_clips, args.seed)
        codec.check_finite(f"{args.out} (not written)")
    except (CodecError, FileNotFoundError, ValueError) as error:
        print(f"dit.latent: {error}", file=sys.stderr)
        return 2
    codec.save(args.out)
    record = codec.metadata
    print(
        f"{args.out}: {codec.latent_channels} latent channels per {codec.patch} tubelet of {codec.patch_values} values; "
        f"explained variance {record['explained_variance']:.3f}, round-trip PSNR {record['round_trip_psnr_db']:.1f} dB "
        f"on {record['fitting_clips']} clips"
    )
    return 0



def latent_shape(patch: Sequence[int], latent_channels: int, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """``(latent_channels, frames/pt, height/ph, width/pw)``: the latent video a codec with this tubelet
    ``patch`` and channel count makes of a clip of that pixel shape (no fitted codec needed)."""
    pt, ph, pw = patch
    for name, size, p in (("frames", frames, pt), ("height", height, ph), ("width", width, pw)):
        if size % p:
            raise CodecError(f"clip {name} {size} is not divisible by the codec's patch {tuple(patch)}")
    return latent_channels, frames // pt, height // ph, width // pw


@dataclass(frozen=True)
class PixelSpace:
    """The identity "codec": the model works on RGB pixels in ``[-1, 1]`` (``dit.diffusion``)."""

    channels: int = 3
    #: Pixels lie in [-1, 1]: a sampler may clamp its predicted clean clip to that range.
    bounded = True

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        return self.channels, frames, height, width

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 clips ``(B, F, H, W, C)`` -> float32 ``(B, C, F, H, W)`` in ``[-1, 1]``."""
        return video_to_model_space(video)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """float ``(B, C, F, H, W)`` -> uint8 clips ``(B, F, H, W, C)``."""
        return model_space_to_video(x)


def load_model_space(codec_path: str | Path | None) -> "LatentCodec | PixelSpace":
    """The space a run's model works in: a ``LatentCodec`` file's latents, or pixels when ``None``."""
    return PixelSpace() if codec_path is None else LatentCodec.load(codec_path)


def encoded_batches(batches, space):
    """Loader batches with their uint8 "video" replaced by its model-space encoding."""
    for batch in batches:
        yield {**batch, "video": space.encode(batch["video"])}


ENCODED_SPLIT_MAX_BYTES = 512 * 2**20


def encode_split(space: "LatentCodec | PixelSpace", dataset: ShardDataset, device: torch.device | str = "cpu", chunk_clips: int = 256,
                 max_bytes: int = ENCODED_SPLIT_MAX_BYTES) -> tuple[torch.Tensor | None, str]:
    """Every clip of ``dataset`` (all its stored frames) in model space.

    Returns float32 ``(clips, *space.latent_shape(...))`` on ``device``, encoded ``chunk_clips`` clips at a
    time in stored order, and an empty string; or ``None`` and the reason where it would take more than
    ``max_bytes``.
    """
    shape = space.latent_shape(dataset.frames, dataset.height, dataset.width)
    size = len(dataset) * math.prod(shape) * 4
    if size > max_bytes:
        return None, f"the encoded split would take {size:,} bytes, above {max_bytes:,}"
    encoded = torch.empty((len(dataset), *shape), dtype=torch.float32, device=device)
    for start in range(0, len(dataset), chunk_clips):
        clips = np.arange(start, min(start + chunk_clips, len(dataset)))
        encoded[start:start + clips.size] = space.encode(dataset.get(clips)["video"].to(device))
    return encoded, ""


if __name__ == "__main__":
    sys.exit(main())
