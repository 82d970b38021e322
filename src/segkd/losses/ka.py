"""Knowledge Adaptation (He et al., CVPR 2019): ``ka_adapt`` and ``ka_affinity``, plus stage 1.

Stage 1 (:func:`fit_autoencoder`): an auto-encoder learns to reconstruct the frozen teacher's ``feat``
(reconstruction L2 + alpha * L1 of the latent, alpha = 1e-7, so that it is not an identity map); it is
saved with :func:`save_autoencoder`. Stage 2: the terms load its frozen encoder E from option
``autoencoder: PATH`` and train small adapters on the student's ``feat`` to match E(teacher feat):
``ka_adapt`` (C_f, weight 50 in the paper) and ``ka_affinity`` (C_a, weight 1).
When teacher and student maps differ in size, the smaller one is bilinearly upsampled to the larger.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from segkd.checkpoint_io import read_checkpoint, write_checkpoint
from segkd.distributed import average_gradients, broadcast_parameters
from segkd.losses.base import LOSSES, DistillBatch, DistillLoss, DistillSpec
from segkd.losses.functional.common import align_to_larger
from segkd.losses.functional.ka import (
    autoencoder_loss,
    ka_adaptation_loss,
    ka_affinity_loss,
    ka_affinity_loss_torchdistill,
)
from segkd.models.outputs import SegOutput


class AutoEncoder(nn.Module):
    """Encoder: three 3x3 convs (C -> hidden -> hidden -> latent, ReLU between; the middle one has stride
    ``stride``); decoder: the symmetric transposed convs back to C. (N, C, H, W) -> (N, C, H, W).

    The layer widths and strides of the paper's auto-encoder are not published in detail (unverified);
    ``stride=1`` keeps the feat resolution.
    """

    def __init__(
        self, in_channels: int, latent_channels: int = 128, hidden_channels: int = 256, stride: int = 1
    ) -> None:
        super().__init__()
        self.config = dict(
            in_channels=in_channels,
            latent_channels=latent_channels,
            hidden_channels=hidden_channels,
            stride=stride,
        )
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, hidden_channels, 3, stride=stride, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, latent_channels, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(latent_channels, hidden_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(
                hidden_channels, hidden_channels, 3, stride=stride, padding=1, output_padding=stride - 1
            ),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(hidden_channels, in_channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(reconstruction, latent)``."""
        latent = self.encoder(x)
        return self.decoder(latent), latent


def save_autoencoder(path: str | Path, ae: AutoEncoder, meta: dict[str, Any] | None = None) -> None:
    """Write ``{"config", "state_dict", "meta"}`` to ``path`` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_checkpoint({"config": ae.config, "state_dict": ae.state_dict(), "meta": dict(meta or {})}, path)


def load_autoencoder(path: str | Path) -> tuple[AutoEncoder, dict[str, Any]]:
    """Rebuild an :class:`AutoEncoder` saved by :func:`save_autoencoder`; returns ``(ae, meta)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Knowledge Adaptation auto-encoder not found: {path} (train it first with "
            "train.stage=ka_autoencoder, which writes RUN_DIR/autoencoder.pt)"
        )
    data = read_checkpoint(path)
    if not isinstance(data, dict) or "config" not in data or "state_dict" not in data:
        raise ValueError(f"{path}: not a segkd auto-encoder file (expected keys 'config' and 'state_dict')")
    ae = AutoEncoder(**data["config"])
    ae.load_state_dict(data["state_dict"])
    return ae, data.get("meta", {})


def default_widths(teacher_channels: int) -> tuple[int, int]:
    """``(latent, hidden)`` auto-encoder widths for a teacher feat of C channels: (C // 2, C)."""
    return max(teacher_channels // 2, 8), teacher_channels


def fit_autoencoder(
    teacher: nn.Module,
    batches: Iterable[dict[str, Tensor]],
    iters: int,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    l1_weight: float = 1e-7,
    device: str | torch.device = "cpu",
    progress: bool = True,
    latent_channels: int | None = None,
    hidden_channels: int | None = None,
    momentum: float = 0.9,
    optimizer: str = "sgd",
    betas: tuple[float, float] = (0.9, 0.999),
    poly_power: float = 0.0,
    warmup_iters: int = 0,
    warmup_ratio: float = 0.1,
    lr_floor: float = 0.0,
) -> tuple[AutoEncoder, list[float]]:
    """Stage 1: train an auto-encoder on the frozen teacher's ``feat`` for ``iters`` batches.

    ``batches`` yields dicts with ``"image"`` (N, 3, H, W) (``"label"`` is ignored); it is cycled if shorter
    than ``iters``. ``optimizer`` "sgd" (``lr``, ``momentum``, ``weight_decay``) or "adamw" (``lr``,
    ``betas``, ``weight_decay``), with the poly schedule of :mod:`segkd.schedule` when
    ``poly_power`` > 0 (0: constant LR). Defaults: SGD lr 0.1, momentum 0.9, constant LR, as
    torchdistill's KTAAD stage 1 (the paper: lr 0.1, "large" weight decay, value unpublished; 5e-4 here
    is an assumption); ``train.stage=ka_autoencoder`` passes the run's ``optim`` section instead.
    The widths default to the teacher's feat channels C (hidden = C, latent = C // 2: 256 / 128 for the
    256-channel DeepLabV3-R101 head), so the auto-encoder compresses the teacher's features whatever its
    width. Under torchrun every rank starts from rank 0's weights and the gradients are averaged over the
    ranks at every step (as DDP would), so ``iters`` steps see ``iters`` x the global batch and every rank
    ends with the same auto-encoder. Returns ``(autoencoder, this rank's loss per iteration)``.
    """
    from segkd.schedule import build_poly_scheduler

    if optimizer not in ("sgd", "adamw"):
        raise ValueError(f"fit_autoencoder: optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
    teacher = teacher.to(device).eval()
    ae: AutoEncoder | None = None
    history: list[float] = []
    stream = _cycle(batches)
    opt = sched = None
    for _ in tqdm(range(iters), disable=not progress, desc="ka autoencoder"):
        images = next(stream)["image"].to(device)
        with torch.no_grad():
            feat = teacher(images).feat
        if ae is None:
            latent, hidden = default_widths(feat.shape[1])
            ae = AutoEncoder(feat.shape[1], latent_channels or latent, hidden_channels or hidden).to(device)
            broadcast_parameters(ae)
            if optimizer == "sgd":
                opt = torch.optim.SGD(ae.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
            else:
                opt = torch.optim.AdamW(ae.parameters(), lr=lr, betas=tuple(betas), weight_decay=weight_decay)
            if poly_power > 0 or warmup_iters > 0 or lr_floor > 0:
                sched = build_poly_scheduler(opt, iters, poly_power, warmup_iters, warmup_ratio,
                                             floor=lr_floor)
        recon, latent = ae(feat)
        loss = autoencoder_loss(recon, feat, latent, l1_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(ae)
        opt.step()
        if sched is not None:
            sched.step()
        history.append(loss.item())
    if ae is None:
        raise ValueError("fit_autoencoder: no batch was seen (iters must be >= 1 and batches non-empty)")
    return ae.eval(), history


def _cycle(batches: Iterable[dict[str, Tensor]]) -> Iterator[dict[str, Tensor]]:
    while True:
        empty = True
        for item in batches:
            empty = False
            yield item
        if empty:
            return


def adapter(in_channels: int, out_channels: int) -> nn.Sequential:
    """C_f / C_a: conv3x3 - BN - ReLU from the student feat to the latent channels."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FrozenEncoder(nn.Module):
    """The stage-1 encoder E, frozen (BN statistics included).

    ``ka_adapt`` and ``ka_affinity`` both need E(teacher feat) of the same step: the distiller holds one
    instance in its shared modules (:func:`shared_encoder`) and the first term's output is kept in the
    forward's ``batch.memo``, so the encoder runs once per step, not once per term.
    """

    def __init__(self, encoder: nn.Module, config: dict[str, Any]) -> None:
        super().__init__()
        self.net = encoder.requires_grad_(False)
        self.config = dict(config)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenEncoder:
        return super().train(False)

    def forward(self, teacher_feat: Tensor, batch: DistillBatch) -> Tensor:
        key = f"ka_encoder:{id(self)}"
        if key not in batch.memo:
            with torch.no_grad():
                batch.memo[key] = self.net(teacher_feat)
        return batch.memo[key]


def shared_encoder(spec: DistillSpec, path: str) -> FrozenEncoder:
    """The distiller's :class:`FrozenEncoder` of the auto-encoder file ``path`` (loaded on first use),
    named ``ka_encoder`` (``ka_encoder_<n>`` for further files) in ``spec.shared``."""
    return spec.shared.find_or_create(
        "ka_encoder",
        lambda m: isinstance(m, FrozenEncoder) and m.config["path"] == path,
        lambda: _frozen_encoder(spec, path),
    )


def _frozen_encoder(spec: DistillSpec, path: str) -> FrozenEncoder:
    ae, _ = load_autoencoder(path)
    if ae.config["in_channels"] != spec.teacher_feat_channels:
        raise ValueError(
            f"{path}: auto-encoder expects {ae.config['in_channels']} teacher channels, "
            f"the teacher has {spec.teacher_feat_channels}"
        )
    return FrozenEncoder(ae.encoder, {**ae.config, "path": path})


def single_conv_adapter(in_channels: int, out_channels: int) -> nn.Conv2d:
    """torchdistill's affinity adapter (``Student4KTAAD``): one conv3x3 with bias, no BN or ReLU."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class _KATerm(DistillLoss):
    """Uses the shared frozen encoder (``autoencoder`` option) and owns one adapter."""

    uses_labels = False  # never reads batch.labels: trains on unlabelled images too
    live_teacher_reason = "Knowledge Adaptation encodes the live teacher's features (not cached)"

    def __init__(self, spec: DistillSpec, autoencoder: str | None = None, single_conv: bool = False) -> None:
        super().__init__()
        if not autoencoder:
            raise ValueError(
                f"{type(self).__name__}: option 'autoencoder' (path to autoencoder.pt from "
                "train.stage=ka_autoencoder) is required"
            )
        self._encoder = (shared_encoder(spec, str(autoencoder)),)  # owned by the distiller (``shared``)
        build = single_conv_adapter if single_conv else adapter
        self.adapter = build(spec.student_feat_channels, self._encoder[0].config["latent_channels"])

    @property
    def encoder(self) -> FrozenEncoder:
        """The distiller's shared frozen encoder this term reads."""
        return self._encoder[0]

    def student_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.adapter.parameters())

    def shared_references(self) -> list[nn.Module]:
        return list(self._encoder)

    def aligned(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> tuple[Tensor, Tensor]:
        """(E(teacher feat), adapter(student feat)) at a common size."""
        latent = self.encoder(teacher.feat, batch)  # no_grad inside; one run for both terms
        adapted, latent = align_to_larger(self.adapter(student.feat), latent)
        return latent, adapted


@LOSSES.register("ka_adapt")
class KAAdapt(_KATerm):
    """Feature adaptation term :func:`ka_adaptation_loss` on (E(t), C_f(s)); options ``autoencoder``
    (required path), ``reduction``: "mean" (default, torchdistill's KTAAD config: L1 averaged over
    N*C*H*W, the scale its weight 50 was set for) or "sum" (torchdistill's ``reduction: sum``: summed over
    samples and the map; a per-sample sum with weight 50 swamped the task loss and the demo student
    collapsed to background, 9.7 mIoU, measured)."""

    def __init__(self, spec: DistillSpec, *, autoencoder: str | None = None, reduction: str = "mean") -> None:
        super().__init__(spec, autoencoder)
        if reduction not in ("sum", "mean"):
            raise ValueError(f"ka_adapt: option 'reduction' must be 'sum' or 'mean', got {reduction!r}")
        self.reduction = reduction

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor:
        latent, adapted = self.aligned(student, teacher, batch)
        return ka_adaptation_loss(latent, adapted, self.reduction)


@LOSSES.register("ka_affinity")
class KAAffinity(_KATerm):
    """Affinity term on (E(t), C_a(s)); options ``autoencoder`` (required path) and ``definition``:

    - ``"torchdistill"`` (default: the one public implementation, torchdistill 3e4373c
      ``AffinityLoss`` with the ``Student4KTAAD`` adapter of ``configs/sample/coco2017/ktaad/*.yaml``):
      :func:`ka_affinity_loss_torchdistill` (each channel normalised over positions, sum over channels of
      un-squared Frobenius norms, mean over samples) with its single-conv adapter (conv3x3 with bias);
      ``reduction`` "mean" or "sum" as there.
    - ``"paper"``: He et al. Eq. 5 (the authors published no code), position-to-position cosine affinity
      (:func:`ka_affinity_loss`), adapter C_a = conv3x3-BN-ReLU; the KA recipes set it.
    """

    def __init__(self, spec: DistillSpec, *, autoencoder: str | None = None, definition: str = "torchdistill",
                 reduction: str = "mean") -> None:
        if definition not in ("paper", "torchdistill"):
            raise ValueError(f"ka_affinity: option 'definition' must be 'paper' or 'torchdistill', "
                             f"got {definition!r}")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"ka_affinity: option 'reduction' must be 'sum' or 'mean', got {reduction!r}")
        if definition == "paper" and reduction != "mean":
            raise ValueError("ka_affinity: option 'reduction' applies to definition 'torchdistill' only")
        super().__init__(spec, autoencoder, single_conv=definition == "torchdistill")
        self.definition, self.reduction = definition, reduction

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor:
        latent, adapted = self.aligned(student, teacher, batch)
        if self.definition == "torchdistill":
            return ka_affinity_loss_torchdistill(latent, adapted, self.reduction)
        return ka_affinity_loss(latent, adapted)
