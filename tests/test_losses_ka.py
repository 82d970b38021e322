"""Knowledge Adaptation: hand-computed losses, auto-encoder stage 1, stage-2 terms."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segkd.losses import LOSSES, DistillBatch, DistillSpec
from segkd.losses.functional.ka import (
    autoencoder_loss,
    ka_adaptation_loss,
    ka_affinity_loss,
    ka_affinity_loss_torchdistill,
)
from segkd.losses.ka import AutoEncoder, fit_autoencoder, load_autoencoder, save_autoencoder
from segkd.models.outputs import SegOutput


def naive_affinity(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Explicit HW x HW cosine affinities, mean squared difference."""
    ft = F.normalize(t.flatten(2), dim=1).transpose(1, 2)
    fs = F.normalize(s.flatten(2), dim=1).transpose(1, 2)
    return ((fs @ fs.transpose(1, 2) - ft @ ft.transpose(1, 2)) ** 2).mean()


def test_adaptation_loss_hand_computed() -> None:
    t = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)  # -> (0.6, 0.8)
    s = torch.tensor([4.0, 3.0]).view(1, 2, 1, 1)  # -> (0.8, 0.6)
    assert ka_adaptation_loss(t, s, reduction="sum").item() == pytest.approx(0.4, rel=1e-6)
    assert ka_adaptation_loss(t, s).item() == pytest.approx(0.2, rel=1e-6)  # default "mean", as the module
    # two samples: the first as above (L1 0.4), the second identical (0): torchdistill's l1_loss sums over
    # samples for "sum" (0.4, not the per-sample mean 0.2) and averages over N*C*H*W = 4 for "mean" (0.1)
    t2, s2 = torch.cat([t, t]), torch.cat([s, t])
    assert ka_adaptation_loss(t2, s2, reduction="sum").item() == pytest.approx(0.4, rel=1e-6)
    assert ka_adaptation_loss(t2, s2, reduction="mean").item() == pytest.approx(0.1, rel=1e-6)
    assert ka_adaptation_loss(t, 7 * t).item() == pytest.approx(0.0, abs=1e-7)  # scale-invariant per sample


def test_affinity_loss_hand_computed_and_matches_naive() -> None:
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)  # positions (1,0), (0,1): A_t = I
    s = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 2, 1, 2)  # positions (1,0), (1,0): A_s = ones
    assert ka_affinity_loss(t, s).item() == pytest.approx(0.5, rel=1e-6)  # (0+1+1+0)/4
    g = torch.Generator().manual_seed(0)
    t, s = (
        torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64),
        torch.randn(2, 3, 3, 4, generator=g, dtype=torch.float64),
    )
    assert ka_affinity_loss(t, s).item() == pytest.approx(naive_affinity(t, s).item(), rel=1e-10)
    assert ka_affinity_loss(t, 2 * t).item() == pytest.approx(0.0, abs=1e-12)


def test_ka_gradcheck() -> None:
    t = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    s = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: ka_affinity_loss(t, x), (s,))
    assert torch.autograd.gradcheck(lambda x: ka_adaptation_loss(t, x), (s,))  # |.| smooth away from 0


def test_autoencoder_loss_hand_computed() -> None:
    recon, target = torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, 2)
    latent = torch.tensor([-2.0, 3.0]).view(1, 2, 1, 1)
    assert autoencoder_loss(recon, target, latent, l1_weight=0.1).item() == pytest.approx(1.5)


class TinyTeacher(nn.Module):
    def __init__(self, channels: int = 6, stride: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, stride=stride, padding=1)

    def forward(self, x: torch.Tensor) -> SegOutput:
        feat = torch.relu(self.conv(x))
        return SegOutput(logits=feat[:, :2], feat=feat)


def test_fit_autoencoder_reduces_loss_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = TinyTeacher()
    batches = [
        {"image": torch.randn(2, 3, 8, 8), "label": torch.zeros(2, 8, 8, dtype=torch.long)} for _ in range(3)
    ]
    ae, history = fit_autoencoder(
        teacher, batches, iters=40, lr=0.05, progress=False, latent_channels=4, hidden_channels=8
    )
    assert len(history) == 40
    assert sum(history[-5:]) / 5 < 0.7 * sum(history[:5]) / 5
    assert all(p.grad is None for p in teacher.parameters())
    save_autoencoder(tmp_path / "ae.pt", ae, {"teacher": "tiny"})
    loaded, meta = load_autoencoder(tmp_path / "ae.pt")
    x = torch.randn(1, 6, 4, 4)
    assert meta == {"teacher": "tiny"}
    assert torch.equal(loaded(x)[0], ae(x)[0])


def test_autoencoder_stride_2_shapes() -> None:
    ae = AutoEncoder(6, latent_channels=4, hidden_channels=8, stride=2)
    recon, latent = ae(torch.randn(1, 6, 8, 8))
    assert recon.shape == (1, 6, 8, 8) and latent.shape == (1, 4, 4, 4)


def test_stage2_terms_missing_path_is_clear(tmp_path: Path) -> None:
    spec = DistillSpec(num_classes=2, student_feat_channels=5, teacher_feat_channels=6)
    with pytest.raises(ValueError, match="autoencoder"):
        LOSSES.build("ka_adapt", spec=spec)
    with pytest.raises(FileNotFoundError, match="ka_autoencoder"):
        LOSSES.build("ka_affinity", spec=spec, autoencoder=str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("name", ["ka_adapt", "ka_affinity"])
def test_stage2_gradients_reach_student_and_adapter_only(tmp_path: Path, name: str) -> None:
    save_autoencoder(tmp_path / "ae.pt", AutoEncoder(6, latent_channels=4, hidden_channels=8))
    spec = DistillSpec(num_classes=2, student_feat_channels=5, teacher_feat_channels=6)
    loss = LOSSES.build(name, spec=spec, autoencoder=str(tmp_path / "ae.pt")).train()
    assert not loss.encoder.training
    fs = torch.randn(2, 5, 4, 4, requires_grad=True)  # student at stride 8
    ft = torch.randn(2, 6, 8, 8, requires_grad=True)  # teacher at stride 4: maps resized to match
    value = loss(
        SegOutput(logits=fs, feat=fs),
        SegOutput(logits=ft, feat=ft),
        DistillBatch(images=torch.zeros(2, 3, 32, 32), labels=torch.zeros(2, 32, 32)),
    )
    value.backward()
    assert value.item() > 0
    assert fs.grad is not None and fs.grad.abs().sum() > 0 and ft.grad is None
    assert all(p.grad is None for p in loss.encoder.parameters())
    trained = list(loss.student_parameters())
    # ka_adapt: conv3x3 + BN (weight, bias); ka_affinity (torchdistill's adapter): conv3x3 with bias
    assert len(trained) == {"ka_adapt": 3, "ka_affinity": 2}[name]
    assert all(p.grad is not None for p in trained)


def test_stage2_terms_share_one_encoder_run_per_step(tmp_path: Path) -> None:
    save_autoencoder(tmp_path / "ae.pt", AutoEncoder(6, latent_channels=4, hidden_channels=8))
    spec = DistillSpec(num_classes=2, student_feat_channels=5, teacher_feat_channels=6)
    adapt = LOSSES.build("ka_adapt", spec=spec, autoencoder=str(tmp_path / "ae.pt"))
    affinity = LOSSES.build("ka_affinity", spec=spec, autoencoder=str(tmp_path / "ae.pt"))
    assert adapt.encoder is affinity.encoder
    calls = []
    adapt.encoder.net.register_forward_hook(lambda *args: calls.append(1))
    ft = torch.randn(2, 6, 4, 4)
    student = SegOutput(logits=torch.zeros(2, 2, 4, 4), feat=torch.randn(2, 5, 4, 4))
    teacher = SegOutput(logits=torch.zeros(2, 2, 4, 4), feat=ft)
    batch = DistillBatch(torch.zeros(2, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.long))
    adapt(student, teacher, batch)
    affinity(student, teacher, batch)
    assert len(calls) == 1
    other = DistillSpec(num_classes=2, student_feat_channels=5, teacher_feat_channels=6)
    separate = LOSSES.build("ka_adapt", spec=other, autoencoder=str(tmp_path / "ae.pt"))
    assert separate.encoder is not adapt.encoder


def torchdistill_affinity_naive(t: torch.Tensor, s: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """torchdistill ``AffinityLoss.forward`` written out: explicit HW x HW outer products per channel."""
    s, t = s.flatten(2), t.flatten(2)
    n, c, hw = s.shape
    s, t = s / s.norm(p=2, dim=2, keepdim=True), t / t.norm(p=2, dim=2, keepdim=True)
    total = torch.zeros(n, dtype=s.dtype)
    for i in range(c):
        outer_s = torch.bmm(s[:, i].unsqueeze(2), s[:, i].unsqueeze(1))
        outer_t = torch.bmm(t[:, i].unsqueeze(2), t[:, i].unsqueeze(1))
        total += ((outer_s - outer_t) / hw).norm(p=2, dim=(1, 2))
    return total.mean() if reduction == "mean" else total.sum()


def test_torchdistill_affinity_hand_value_naive_and_gradcheck() -> None:
    # sample 0, channel 0: t = (1, 0), s = (1, 1)/sqrt2 over the 2 positions:
    # t t^T = [[1, 0], [0, 0]], s s^T = all 1/2, difference [[-1/2, 1/2], [1/2, 1/2]]: Frobenius 1,
    # divided by HW = 2 -> 0.5 (un-squared); channel 1 identical -> 0; sample 1 identical -> 0.
    t = torch.tensor([[[1.0, 0.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]], dtype=torch.float64)
    t = t.view(2, 2, 1, 2)
    s = t.clone()
    s[0, 0] = torch.tensor([[5.0, 5.0]])  # normalised over positions: (1, 1)/sqrt2
    assert ka_affinity_loss_torchdistill(t, s).item() == pytest.approx(0.25, rel=1e-12)  # mean over N=2
    assert ka_affinity_loss_torchdistill(t, s, "sum").item() == pytest.approx(0.5, rel=1e-12)
    # the paper's definition on the same tensors is another number (position-to-position affinity)
    assert ka_affinity_loss(t, s).item() != pytest.approx(0.25, rel=1e-3)
    g = torch.Generator().manual_seed(1)
    t = torch.randn(2, 3, 3, 4, generator=g, dtype=torch.float64)
    s = torch.randn(2, 3, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    for red in ("mean", "sum"):
        fast, naive = ka_affinity_loss_torchdistill(t, s, red), torchdistill_affinity_naive(t, s, red)
        (g_fast,), (g_naive,) = torch.autograd.grad(fast, s), torch.autograd.grad(naive, s)
        assert fast.item() == pytest.approx(naive.item(), rel=1e-12)
        assert torch.allclose(g_fast, g_naive, rtol=1e-10, atol=1e-14)
    assert torch.autograd.gradcheck(lambda x: ka_affinity_loss_torchdistill(t, x), (s,))
    same = ka_affinity_loss_torchdistill(t, 3 * t.detach().clone().requires_grad_(True))
    assert same.item() == pytest.approx(0.0, abs=1e-15)


def test_ka_affinity_torchdistill_module_uses_single_conv_adapter(tmp_path: Path) -> None:
    save_autoencoder(tmp_path / "ae.pt", AutoEncoder(6, latent_channels=4, hidden_channels=8))
    spec = DistillSpec(num_classes=2, student_feat_channels=5, teacher_feat_channels=6)
    loss = LOSSES.build("ka_affinity", spec=spec, autoencoder=str(tmp_path / "ae.pt"),
                        definition="torchdistill")
    assert isinstance(loss.adapter, nn.Conv2d) and loss.adapter.bias is not None
    assert loss.adapter.kernel_size == (3, 3) and loss.adapter.out_channels == 4
    fs, ft = torch.randn(2, 5, 4, 4, requires_grad=True), torch.randn(2, 6, 4, 4)
    value = loss(SegOutput(logits=fs, feat=fs), SegOutput(logits=ft, feat=ft),
                 DistillBatch(images=torch.zeros(2, 3, 16, 16), labels=torch.zeros(2, 16, 16)))
    with torch.no_grad():
        latent = loss.encoder.net(ft)
    expected = ka_affinity_loss_torchdistill(latent, loss.adapter(fs))
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    with pytest.raises(ValueError, match="definition"):
        LOSSES.build("ka_affinity", spec=spec, autoencoder=str(tmp_path / "ae.pt"), definition="cosine")


def test_stage1_honours_the_optim_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.stage=ka_autoencoder passes the run's optim section to fit_autoencoder (optim.lr= on a
    ka_autoencoder config used to be silently dropped)."""
    import segkd.losses.ka as ka_module
    from _engine_helpers import tiny_config
    from segkd.config_schema import ModelConfig
    from segkd.engine import builder
    from segkd.engine.ka_stage import train_ka_autoencoder

    cfg = tiny_config(tmp_path / "run", iters=3, optim__name="adamw", optim__lr=0.123,
                      optim__weight_decay=0.01, optim__poly_power=0.5, optim__betas="[0.8,0.9]",
                      optim__momentum=0.7, optim__warmup_iters=2, optim__warmup_ratio=0.3)
    cfg.distill.teacher = ModelConfig(name="test_tiny_student")
    seen = {}

    def fake_fit(teacher, batches, iters, **kwargs):
        seen.update(kwargs, iters=iters)
        return AutoEncoder(4, 2, 4), [1.0]

    monkeypatch.setattr(ka_module, "fit_autoencoder", fake_fit)
    monkeypatch.setattr(builder, "build_teacher", lambda cfg, k, names=None: nn.Identity())
    monkeypatch.setattr(builder, "build_train_iterator", lambda data, cfg, start_iter: iter(()))
    (tmp_path / "run").mkdir()
    data = type("Data", (), {"num_classes": 2, "class_names": ["a", "b"]})()
    train_ka_autoencoder(cfg, torch.device("cpu"), tmp_path / "run", data=data)
    assert seen["optimizer"] == "adamw" and seen["lr"] == 0.123 and seen["weight_decay"] == 0.01
    assert seen["poly_power"] == 0.5 and tuple(seen["betas"]) == (0.8, 0.9) and seen["momentum"] == 0.7
    assert seen["warmup_iters"] == 2 and seen["warmup_ratio"] == 0.3 and seen["iters"] == 3
    assert (tmp_path / "run" / "autoencoder.pt").is_file()


@pytest.mark.parametrize("optimizer,poly", [("sgd", 0.0), ("adamw", 0.9)])
def test_fit_autoencoder_optimizer_and_schedule(optimizer: str, poly: float) -> None:
    """lr = 0 leaves the auto-encoder where it started for either optimizer (the LR is the one given);
    a positive lr moves it."""
    batches = [{"image": torch.randn(2, 3, 8, 8)}]
    weights = []
    for lr in (0.0, 0.01):
        torch.manual_seed(0)
        TinyTeacher()
        ref = AutoEncoder(6, 4, 8).state_dict()  # what fit_autoencoder builds after the same draws
        torch.manual_seed(0)
        ae, _ = fit_autoencoder(TinyTeacher(), batches, iters=3, lr=lr, progress=False, latent_channels=4,
                                hidden_channels=8, optimizer=optimizer, poly_power=poly, weight_decay=0.0)
        weights.append(all(torch.equal(ae.state_dict()[k], ref[k]) for k in ref))
    assert weights == [True, False]
    with pytest.raises(ValueError, match="optimizer"):
        fit_autoencoder(TinyTeacher(), batches, iters=1, optimizer="rmsprop", progress=False)
