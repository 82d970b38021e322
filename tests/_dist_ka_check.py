"""Run under ``torchrun --nproc_per_node=2`` (gloo, CPU) by test_ka_stage_dist.py; writes a JSON verdict.

Knowledge Adaptation stage 1 (:func:`segkd.losses.ka.fit_autoencoder`) under two processes, each with its
own batches: both ranks must end with the same auto-encoder, and it must be the one a single process
trains on the two ranks' batches concatenated (gradients averaged as DDP does; the loss is a mean over the
batch, so equal per-rank batches give exactly the global batch's gradient, up to float rounding).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from segkd.distributed import rank, setup_distributed, world_size
from segkd.losses.ka import fit_autoencoder
from segkd.models.outputs import SegOutput


class _Teacher(nn.Module):
    """A fixed conv as the frozen teacher: ``feat`` (N, 8, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, images: torch.Tensor) -> SegOutput:
        feat = self.conv(images)
        return SegOutput(logits=feat[:, :2], feat=feat)


def _batches(seed: int, steps: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.randn(2, 3, 8, 8, generator=g)} for _ in range(steps)]


def _fit(batches: list[dict[str, torch.Tensor]], seed: int) -> torch.Tensor:
    teacher = _Teacher()
    torch.manual_seed(seed)  # the auto-encoder's initial weights
    ae, _ = fit_autoencoder(teacher, batches, len(batches), lr=0.5, weight_decay=0.0, progress=False)
    return torch.cat([p.detach().flatten() for p in ae.parameters()])


def main(out: Path) -> None:
    setup_distributed("cpu")
    flat = _fit(_batches(seed=rank()), seed=100 + rank())  # different initial weights: rank 0's must win
    gathered = [torch.empty_like(flat) for _ in range(world_size())]
    dist.all_gather(gathered, flat)
    if rank() == 0:
        per_rank = [_batches(seed=r) for r in range(world_size())]
        joined = [{"image": torch.cat([b[i]["image"] for b in per_rank])} for i in range(len(per_rank[0]))]
        dist.destroy_process_group()  # the reference run is a single process
        ref = _fit(joined, seed=100)
        alone = _fit(per_rank[0], seed=100)  # what rank 0 fitted before the gradients were averaged
        verdict = {
            "ranks_identical": bool(torch.equal(gathered[0], gathered[1])),
            "max_diff_to_single": float((gathered[0] - ref).abs().max()),
            "diff_rank0_alone_to_single": float((alone - ref).abs().max()),
        }
        (out / "verdict.json").write_text(json.dumps(verdict))
    else:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
