"""Distillation on unlabelled images (``data.unlabeled``): batch mixing, routing per term, config errors."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _engine_helpers import tiny_config
from loss_testing import NUM_CLASSES, tiny_pair
from segkd.config import load_config
from segkd.data import build_train_loader
from segkd.data.images import ImageFolder
from segkd.data.mixed import MixedBatchSampler, build_mixed_train_loader, unlabeled_count
from segkd.data.preflight import PreflightError
from segkd.engine import builder
from segkd.engine.checkpoint import load_checkpoint
from segkd.engine.distiller import named_values, upsampled_ce
from segkd.engine.trainer import train
from segkd.losses import LOSSES, DistillBatch, DistillLoss, DistillSpec
from segkd.losses.base import SharedModules
from segkd.losses.ka import AutoEncoder, save_autoencoder

TEACHER = "{name: test_tiny_teacher}"
UNLABELED = "{split: unlabeled, ratio: 0.5, options: {num_samples: 20}}"


def mixed_config(out: Path, losses: str = "[{name: kd}]", **extra: object):
    """Tiny distillation config whose batches of 4 hold 2 labelled and 2 unlabelled synthetic scenes."""
    extra = {"data__batch_size": 4, "data__unlabeled": UNLABELED, **extra}
    return tiny_config(out, distill__teacher=TEACHER, distill__allow_untrained_teacher="true",
                       distill__losses=losses, **extra)


# ------------------------------------------------------------------------------------------- spy terms
class _Spy(DistillLoss):
    """Records what it is called with; ``uses_labels`` as the subclass says."""

    def __init__(self, spec: DistillSpec) -> None:
        super().__init__()
        self.calls: list[dict[str, torch.Tensor]] = []

    def forward(self, student, teacher, batch):
        self.calls.append({"images": batch.images.detach().clone(), "labels": batch.labels.clone(),
                           "s_logits": student.logits.detach().clone(),
                           "t_logits": teacher.logits.detach().clone()})
        return student.logits.float().square().mean()


class _LabelSpy(_Spy):
    uses_labels = True


class _FreeSpy(_Spy):
    uses_labels = False


for _name, _cls in (("test_spy_labels", _LabelSpy), ("test_spy_free", _FreeSpy)):
    if _name not in LOSSES:
        LOSSES.add(_name, _cls)

SPIES = "[{name: test_spy_labels}, {name: test_spy_free}, {name: kd}, {name: ifvd}]"


def _distiller(cfg):
    data = builder.build_data(cfg)
    student = builder.build_student(cfg.model, data.num_classes)
    teacher = builder.build_teacher(cfg, data.num_classes, data.class_names)
    return data, builder.build_distiller(cfg, student, teacher, data.num_classes).train()


def _mixed_batch(seed: int = 0):
    """Four 32x32 images, labelled [T, F, T, F]; the unlabelled ones carry real (non-ignore) labels, which
    the routing must never pass on."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(4, 3, 32, 32, generator=g)
    labels = torch.randint(0, 9, (4, 32, 32), generator=g)
    labels[0, :4] = 255
    return images, labels, torch.tensor([True, False, True, False])


# ---------------------------------------------------------------------------------- engine: routing
def test_fully_labelled_batch_gives_the_same_loss_and_gradients_bit_for_bit(tmp_path: Path):
    """``labeled`` all true = the pre-existing path, written out: CE + 0.4 aux CE + terms on the whole
    batch (stateful CIRKD memory included). Values and every gradient are bit-equal."""
    losses = ("[{name: kd}, {name: ifvd, weight: 2}, {name: cwd, options: {target: feat}},"
              " {name: cirkd_memory_p2p, weight: 0.1,"
              " options: {pixel_memory_size: 20, pixel_contrast_size: 12}}]")
    torch.manual_seed(0)
    _, distiller = _distiller(mixed_config(tmp_path / "r", losses))
    reference = copy.deepcopy(distiller)
    images, labels, _ = _mixed_batch()
    torch.manual_seed(1)  # the same dropout masks in both forwards
    result = distiller.compute(images, labels, torch.ones(4, dtype=torch.bool))
    result.total.backward()

    torch.manual_seed(1)
    out = reference.student(images)
    with torch.no_grad():
        t_out = reference.teacher(images)
    terms = {"ce": upsampled_ce(out.logits, labels), "aux_ce": upsampled_ce(out.aux_logits, labels)}
    batch = DistillBatch(images=images, labels=labels)
    for name, loss in reference.losses.items():
        terms.update(named_values(name, loss(out, t_out, batch)))
    total = sum(reference.weight_of(n) * v for n, v in terms.items())
    total.backward()

    assert list(result.terms) == list(terms)
    for name, value in terms.items():
        assert torch.equal(result.terms[name], value), name
    assert torch.equal(result.total, total)
    got = dict(distiller.net.named_parameters())
    for name, p in reference.net.named_parameters():
        assert (p.grad is None) == (got[name].grad is None), name
        if p.grad is not None:
            assert torch.equal(p.grad, got[name].grad), name
    for name, buf in reference.net.named_buffers():  # queues, BN statistics
        assert torch.equal(buf, dict(distiller.net.named_buffers())[name]), name


def test_unlabelled_images_never_reach_ce_or_a_label_reading_term(tmp_path: Path):
    torch.manual_seed(0)
    _, distiller = _distiller(mixed_config(tmp_path / "r", SPIES))
    images, labels, labeled = _mixed_batch()
    result = distiller.compute(images, labels, labeled)
    keep = torch.tensor([0, 2])

    spy = distiller.losses["test_spy_labels"].calls[-1]
    assert torch.equal(spy["images"], images[keep])
    assert torch.equal(spy["labels"], labels[keep])
    assert torch.equal(spy["s_logits"], result.student.logits[keep].detach())
    assert torch.equal(spy["t_logits"], result.teacher.logits[keep])
    free = distiller.losses["test_spy_free"].calls[-1]
    assert torch.equal(free["images"], images)  # label-free terms see every image ...
    assert torch.equal(free["labels"][keep], labels[keep])
    assert (free["labels"][[1, 3]] == 255).all()  # ... but never an unlabelled image's labels

    # CE and aux CE by hand on the labelled images only.
    out = result.student
    assert torch.allclose(result.terms["ce"], upsampled_ce(out.logits[keep], labels[keep]), rtol=1e-6, atol=0)
    assert torch.allclose(result.terms["aux_ce"], upsampled_ce(out.aux_logits[keep], labels[keep]),
                          rtol=1e-6, atol=0)
    # The unlabelled images' labels change nothing at all.
    other = labels.clone()
    other[[1, 3]] = torch.randint(0, 9, (2, 32, 32), generator=torch.Generator().manual_seed(5))
    torch.manual_seed(1)
    result = distiller.compute(images, labels, labeled)
    torch.manual_seed(1)
    again = distiller.compute(images, other, labeled)
    for name in ("ce", "aux_ce", "ifvd", "kd", "test_spy_labels", "test_spy_free"):
        assert torch.equal(again.terms[name], result.terms[name]), name


def test_label_reading_stateful_term_enqueues_only_labelled_images(tmp_path: Path):
    """CIRKD's memory fed a mixed batch holds exactly what it holds when fed the labelled images alone."""
    losses = ("[{name: kd}, {name: cirkd_memory_p2r, weight: 0.1, options: {region_memory_size: 30,"
              " region_contrast_size: 9}}]")
    torch.manual_seed(0)
    _, distiller = _distiller(mixed_config(tmp_path / "r", losses))
    reference = copy.deepcopy(distiller)
    images, labels, labeled = _mixed_batch()
    torch.manual_seed(1)
    distiller.compute(images, labels, labeled)
    torch.manual_seed(1)
    out = reference.student(images)  # the student runs on every image (BN statistics as in the mixed run)
    with torch.no_grad():
        t_out = reference.teacher(images)
    keep = torch.tensor([0, 2])
    batch = DistillBatch(images=images[keep], labels=labels[keep])
    reference.losses["cirkd_memory_p2r"](out.select(keep), t_out.select(keep), batch)
    for name, buf in reference.shared.named_buffers():
        assert torch.equal(buf, dict(distiller.shared.named_buffers())[name]), name
    assert int(dict(distiller.shared.named_buffers())["cirkd_memory.region_queue.ptr"].sum()) > 0


def test_batch_without_labelled_image_gives_zero_task_loss_not_nan(tmp_path: Path):
    torch.manual_seed(0)
    _, distiller = _distiller(mixed_config(tmp_path / "r", SPIES))
    images, labels, _ = _mixed_batch()
    result = distiller.compute(images, labels, torch.zeros(4, dtype=torch.bool))
    for name in ("ce", "aux_ce", "ifvd", "test_spy_labels"):
        assert result.terms[name].item() == 0.0, name
    assert distiller.losses["test_spy_labels"].calls == []
    assert torch.isfinite(result.terms["kd"]) and result.terms["kd"] > 0
    result.total.backward()
    grads = [p.grad for p in distiller.student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# ------------------------------------------------------------------------- every term declares it
LABEL_FREE = {"kd", "dist", "cwd", "fitnet", "at", "skd_pairwise", "skd_holistic", "cirkd_batch_p2p", "dsd",
              "ka_adapt", "ka_affinity", "pseudo_label"}
READS_LABELS = {"ifvd", "cirkd_memory_p2p", "cirkd_memory_p2r"}


class _NoLabels(DistillBatch):
    """A batch whose labels may not be read."""

    def __getattribute__(self, name: str):
        if name == "labels":
            raise AssertionError("read batch.labels")
        return super().__getattribute__(name)


def _build(name: str, spec: DistillSpec, tmp_path: Path, **options: object) -> DistillLoss:
    if name.startswith("ka_"):
        save_autoencoder(tmp_path / "ae.pt", AutoEncoder(spec.teacher_feat_channels, 4, 8))
        options["autoencoder"] = str(tmp_path / "ae.pt")
    if name == "skd_holistic":
        options["conv_dim"] = 4
    if name.startswith("cirkd_memory"):
        options.update(pixel_memory_size=20, region_memory_size=10, pixel_contrast_size=6,
                       region_contrast_size=6)
    return LOSSES.build(name, spec=spec, **options)


@pytest.mark.parametrize("name", sorted(n for n in LOSSES.names() if not n.startswith("test_")))
def test_every_registered_term_declares_whether_it_reads_labels(name: str, tmp_path: Path):
    """The declaration is in the term's own class, matches the table of the issue, and is true: a term
    declared label-free runs (forward and adversary step) on a batch whose labels raise when read; one
    declared label-reading does read them."""
    assert name in LABEL_FREE | READS_LABELS, f"new term {name}: add it to this test's table"
    student, teacher, images, labels, spec = tiny_pair()
    spec = replace(spec, shared=SharedModules())
    loss = _build(name, spec, tmp_path).train()
    cls = type(loss)
    declared = next(k for k in cls.__mro__ if "uses_labels" in vars(k))
    assert declared is not DistillLoss, f"{name} inherits the base default"
    assert loss.uses_labels is (name in READS_LABELS)
    s_out = student(images)
    with torch.no_grad():
        t_out = teacher(images)
    s_out, t_out = replace(s_out, aux_logits=s_out.logits), replace(t_out, aux_logits=t_out.logits)  # dsd
    if loss.uses_labels:
        with pytest.raises(AssertionError, match="read batch.labels"):
            loss(s_out, t_out, _NoLabels(images=images, labels=labels))
        assert torch.isfinite(loss(s_out, t_out, DistillBatch(images=images, labels=labels)))
        return
    value = loss(s_out, t_out, _NoLabels(images=images, labels=labels))
    assert all(torch.isfinite(v) for v in named_values(name, value).values())
    out = loss.adversary_step(s_out.detached(), t_out, _NoLabels(images=images, labels=labels))
    assert all(torch.isfinite(v) for v in out.values())


def test_kd_reads_labels_only_with_mask_ignore():
    spec = DistillSpec(NUM_CLASSES, 4, 6)
    assert LOSSES.build("kd", spec=spec).uses_labels is False
    assert LOSSES.build("kd", spec=spec, mask_ignore=True).uses_labels is True


# ------------------------------------------------------------------------------------------ loader
def _stream(loader, n: int) -> list[dict]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x["name"] == y["name"] and torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
        for x, y in zip(a, b)
    )


def test_mixed_batches_ratio_labels_and_sources(tmp_path: Path):
    pool = "{split: unlabeled, ratio: 0.75, options: {num_samples: 20}}"
    cfg = mixed_config(tmp_path / "r", data__unlabeled=pool)
    data = builder.build_data(cfg)
    assert len(data.train_set) == 8 and len(data.unlabeled_set) == 20  # options merged over data.options
    for batch in _stream(builder.build_train_iterator(data, cfg, 0), 4):  # train.iters = 4
        assert batch["labeled"].tolist() == [True, False, False, False]  # floor(0.75 * 4) = 3 unlabelled
        assert batch["name"][0].startswith("train_")
        assert all(n.startswith("unlabeled_") for n in batch["name"][1:])
        assert (batch["label"][1:] == 255).all()  # the synthetic split has labels: never passed on
        assert (batch["label"][0] != 255).any()


def test_without_unlabeled_the_batches_are_exactly_the_plain_loaders(tmp_path: Path):
    """No ``data.unlabeled`` (or ratio 0): the stream of the unchanged plain loader, no ``labeled`` key."""
    for extra in ({}, {"data__unlabeled": "{split: unlabeled, ratio: 0.0}"}):
        cfg = tiny_config(tmp_path / "r", iters=4, distill__teacher=TEACHER, **extra)
        data = builder.build_data(cfg)
        got = _stream(builder.build_train_iterator(data, cfg, 1), 3)
        plain = build_train_loader(data.train_set, cfg.data, seed=0, total_samples=8, start_batch=1)
        assert _same(got, _stream(plain, 3))
        assert all("labeled" not in b for b in got)


def test_mixed_stream_is_deterministic_resumable_and_worker_independent(tmp_path: Path):
    cfg = mixed_config(tmp_path / "r").data
    data = builder.build_data(mixed_config(tmp_path / "r"))

    def stream(data_cfg, seed: int, n: int, start: int = 0) -> list[dict]:
        return _stream(build_mixed_train_loader(data.train_set, data.unlabeled_set, data_cfg, seed,
                                                start_batch=start), n)

    full = stream(cfg, 3, 7)
    assert _same(full, stream(cfg, 3, 7))
    assert _same(full[4:], stream(cfg, 3, 3, start=4))  # resumed at batch 4
    assert _same(full, stream(replace(cfg, workers=2), 3, 7))
    assert not _same(full, stream(cfg, 4, 7))


def test_unlabelled_count_is_the_floor_of_ratio_times_batch():
    assert [unlabeled_count(r, 8) for r in (0.0, 0.1, 0.125, 0.5, 0.99)] == [0, 0, 1, 4, 7]
    assert unlabeled_count(0.29, 100) == 29  # not 28 from 0.29 * 100 = 28.999999999999996


def test_mixed_sampler_gives_each_rank_a_disjoint_share_of_both_streams():
    """Two ranks: per epoch of each stream every sample is drawn once across the ranks."""
    draws = {True: [], False: []}
    for rank in (0, 1):
        sampler = MixedBatchSampler(6, 10, 3, 5, seed=0, rank=rank, world_size=2, num_batches=2)
        for batch in sampler:
            assert [b[0] for b in batch] == [True] * 3 + [False] * 5
            for is_labeled, index, _ in batch:
                draws[is_labeled].append(index)
    assert sorted(draws[True]) == sorted(list(range(6)) * 2)  # 2 ranks x 2 batches x 3 = 2 epochs of 6
    assert sorted(draws[False]) == sorted(list(range(10)) * 2)


def test_image_folder_pool_any_depth(tmp_path: Path):
    root = tmp_path / "extra"
    for rel in ("a/x.png", "a/b/y.jpg", "z.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(root / rel)
    (root / "notes.txt").write_text("not an image")
    cfg = mixed_config(tmp_path / "r", data__unlabeled=f"{{root: {root}, ratio: 0.5}}")
    data = builder.build_data(cfg)
    assert isinstance(data.unlabeled_set, ImageFolder) and len(data.unlabeled_set) == 3
    batch = next(builder.build_train_iterator(data, cfg, 0))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["labeled"].tolist() == [True, True, False, False]
    assert set(batch["name"][2:]) <= {"a/x", "a/b/y", "z"}
    assert (batch["label"][2:] == 255).all()
    (root / "a" / "broken.png").write_bytes(b"not a png")  # checked before training, named
    with pytest.raises(PreflightError, match="unlabeled: cannot read image .*broken.png"):
        builder.build_data(cfg)


# ------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.unlabeled.ratio=1.0", "data.unlabeled.ratio"),
        ("data.unlabeled.ratio=-0.1", "data.unlabeled.ratio"),
        ("data.unlabeled={split: a, root: b}", "set one, not both"),
    ],
)
def test_config_errors_name_the_key(override: str, message: str):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"distill__teacher": None, "distill__losses": "[]"}, "needs distill.teacher"),
        ({"data__unlabeled": "{ratio: 0.5}"}, "set split .* or root"),
        ({"data__unlabeled": "{split: unlabeled, ratio: 0.2}"}, "data.unlabeled.ratio.*less than one image"),
        ({"data__unlabeled": "{root: /nonexistent/folder}"}, "data.unlabeled.root.*not found"),
    ],
)
def test_unusable_setups_are_refused_with_one_line(tmp_path: Path, extra: dict, message: str):
    cfg = mixed_config(tmp_path / "r")
    if extra.get("distill__teacher", "") is None:
        cfg = replace(cfg, distill=replace(cfg.distill, teacher=None, losses=[]))
        extra = {}
    if extra:
        cfg = mixed_config(tmp_path / "r", **extra)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
        builder.build_data(cfg)
    assert "\n" not in str(err.value)


def test_only_label_reading_terms_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="every distill.losses term .*ifvd.* reads labels"):
        _distiller(mixed_config(tmp_path / "r", "[{name: ifvd}]"))


# ------------------------------------------------------------------------------------ end to end
def test_training_with_unlabelled_images_end_to_end_and_deterministic(tmp_path: Path):
    """Seeded runs mixing unlabelled scenes (KD + CIRKD memory + CE) finish with identical weights; the
    unlabelled images changed the result (vs. the same run without them)."""
    losses = ("[{name: kd}, {name: cirkd_memory_p2p, weight: 0.1, options: {pixel_memory_size: 20,"
              " pixel_contrast_size: 12}}]")
    runs = [train(mixed_config(tmp_path / f"run{i}", losses, iters=3, train__grad_accum=2)) for i in range(2)]
    a, b = (load_checkpoint(r / "checkpoints" / "latest.pt") for r in runs)
    assert a["iteration"] == 3
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    plain = train(tiny_config(tmp_path / "plain", iters=3, data__batch_size=4, train__grad_accum=2,
                              distill__teacher=TEACHER, distill__allow_untrained_teacher="true",
                              distill__losses=losses))
    c = load_checkpoint(plain / "checkpoints" / "latest.pt")
    assert any(not torch.equal(v, c["model"][k]) for k, v in a["model"].items() if v.is_floating_point())
