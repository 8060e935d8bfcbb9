"""Attention backends at video-like shapes: forward and forward+backward.

Run: ``.venv/bin/python -m pytest benchmarks/bench_attention.py --benchmark-only -q``
(add ``--benchmark-json FILE`` to keep the numbers with pytest-benchmark's machine metadata).

Shapes keep the batch at 4096 video tokens in all (``batch = 4096 // tokens``) for sequences of 256,
1024 and 4096 tokens, head_dim 64 and 2 or 8 heads. Backends: ``math`` (the reference), ``sdpa``,
``auto``, and ``xformers`` where CUDA and xformers run. After the run a table gives each shape's median
time per backend and the ratio of ``auto`` to the fastest backend (1.00 = auto picked the best).
About 1 minute on a 2-core CPU.
"""

from __future__ import annotations

import platform
import statistics

import pytest
import torch

from dit.attention import attention, resolve_backend, xformers_unavailable_reason

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
TOTAL_TOKENS = 4096
HEAD_DIM = 64
SEQUENCES = [256, 1024, 4096]
HEADS = [2, 8]
BACKENDS = ["math", "sdpa", "auto"] + (
    ["xformers"] if DEVICE.type == "cuda" and xformers_unavailable_reason(DEVICE) is None else []
)
MODES = ["forward", "forward_backward"]

_medians: dict[tuple, float] = {}


def _synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _summary_lines() -> list[str]:
    lines = [
        "",
        f"attention medians in ms on {DEVICE} ({DTYPE}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}); auto resolves to {resolve_backend('auto', DEVICE)}",
        f"{'mode':<17}{'tokens':>7}{'heads':>6}{'batch':>6}"
        + "".join(f"{backend:>10}" for backend in BACKENDS)
        + f"{'auto/best':>11}",
    ]
    for mode in MODES:
        for tokens in SEQUENCES:
            for heads in HEADS:
                row = {b: _medians.get((mode, tokens, heads, b)) for b in BACKENDS}
                if all(value is None for value in row.values()):
                    continue
                cells = "".join(f"{row[b] * 1e3:>10.2f}" if row[b] is not None else f"{'-':>10}" for b in BACKENDS)
                timed = [value for value in row.values() if value is not None]
                ratio = f"{row['auto'] / min(timed):>11.2f}" if row.get("auto") is not None else f"{'-':>11}"
                lines.append(f"{mode:<17}{tokens:>7}{heads:>6}{TOTAL_TOKENS // tokens:>6}{cells}{ratio}")
    return lines


class _SummaryPlugin:
    """Prints the table at the end of the session, after pytest-benchmark's own."""

    def pytest_terminal_summary(self, terminalreporter):
        if _medians:
            for line in _summary_lines():
                terminalreporter.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def summary_table(request):
    name = "bench-attention-summary"
    if not request.config.pluginmanager.has_plugin(name):
        request.config.pluginmanager.register(_SummaryPlugin(), name)
    yield


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("tokens", SEQUENCES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_backend(benchmark, backend, tokens, heads, mode):
    batch = TOTAL_TOKENS // tokens
    generator = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(batch, tokens, heads, HEAD_DIM, generator=generator).to(DEVICE, DTYPE).requires_grad_(mode != "forward")
        for _ in range(3)
    )

    def forward():
        with torch.no_grad():
            attention(q, k, v, backend=backend)
        _synchronize()

    def forward_backward():
        out = attention(q, k, v, backend=backend)
        torch.autograd.grad(out.sum(), (q, k, v))
        _synchronize()

    function = forward if mode == "forward" else forward_backward
    # Bound the rounds so the slowest shapes (math attention at 4096 tokens on CPU) stay within seconds.
    rounds = 3 if tokens >= 4096 and DEVICE.type == "cpu" else 7
    benchmark.extra_info.update(
        backend=backend, resolved=resolve_backend(backend, DEVICE), tokens=tokens, heads=heads, batch=batch,
        head_dim=HEAD_DIM, mode=mode, device=str(DEVICE), dtype=str(DTYPE), threads=torch.get_num_threads(),
    )
    benchmark.pedantic(function, rounds=rounds, iterations=1, warmup_rounds=1)
    _medians[(mode, tokens, heads, backend)] = statistics.median(benchmark.stats.stats.data)
