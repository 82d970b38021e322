"""Run under ``torchrun --nproc_per_node=2`` (gloo, CPU) by test_train_dist.py; writes a JSON verdict.

Checks: (1) SegMetric.reduce sums the ranks' confusion matrices; (2) after DDP training steps both
ranks hold identical student weights, different from the initial ones; (3) the DDP-reduced validation
mIoU equals a single-process evaluation of the same weights over the whole split.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from _engine_helpers import tiny_config
from segkd.distributed import rank, setup_distributed, world_size
from segkd.engine.evaluator import run_evaluation
from segkd.engine.metrics import SegMetric
from segkd.engine.trainer import Trainer


def reduction_ok() -> bool:
    metric = SegMetric(3)
    label = torch.tensor([[0, 1, 2, 255]])
    metric.update(torch.full_like(label, rank()), label)  # rank r predicts class r everywhere
    metric.reduce()
    expected = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 0]])  # column r from rank r
    return torch.equal(metric.conf, expected)


def main(out_dir: Path) -> None:
    device = setup_distributed("cpu")
    assert world_size() == 2 and dist.get_backend() == "gloo"
    cfg = tiny_config(out_dir / "run", iters=3, train__val_interval=3, data__batch_size=2)
    trainer = Trainer(cfg, device, out_dir / "run")
    initial = {k: v.detach().clone() for k, v in trainer.distiller.student.named_parameters()}
    trainer.fit()
    # Parameters: BN running statistics are rank-local between forwards (DDP re-broadcasts rank 0's).
    state = {k: v.detach().clone() for k, v in trainer.distiller.student.named_parameters()}
    gathered: list[dict] = [None, None]  # type: ignore[list-item]
    dist.all_gather_object(gathered, state)
    identical = all(torch.equal(gathered[0][k], gathered[1][k]) for k in state)
    changed = any(not torch.equal(initial[k], state[k]) for k in state)
    reduced, _ = run_evaluation(trainer.distiller.student, trainer.val_loader, cfg.eval, 9, device)
    verdict = {
        "reduction_ok": reduction_ok(),
        "identical": identical,
        "changed": changed,
        "ddp_miou": reduced["miou"],
        "ddp_pixels": reduced["num_pixels"],
    }
    if rank() == 0:
        full = [trainer.data.val_set[i] for i in range(len(trainer.data.val_set))]
        loader = [{"image": s["image"][None], "label": s["label"][None]} for s in full]
        single, _ = run_evaluation(trainer.distiller.student, loader, cfg.eval, 9, device, reduce=False)
        verdict.update(single_miou=single["miou"], single_pixels=single["num_pixels"])
        (out_dir / "verdict.json").write_text(json.dumps(verdict))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
