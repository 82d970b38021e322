"""Issue 28 terms: ``pseudo_label`` (FixMatch / Naive-Student hard labels with a threshold), ``kd`` at the
label resolution, the routing of unlabelled-only terms and ``distill.strong_augment``. Values written out by
hand on tiny tensors, float64 gradchecks, thresholds and routing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from segkd.config_schema import InputConfig
from segkd.engine.routing import TermInputs
from segkd.engine.strong_view import StrongAugment
from segkd.input_convention import reference_bgr, to_input
from segkd.losses import LOSSES, DistillBatch, DistillSpec
from segkd.losses.pseudo_label import pseudo_label_loss
from segkd.models.outputs import SegOutput
from test_unlabeled import _distiller, _mixed_batch, mixed_config

SPEC = DistillSpec(num_classes=2, student_feat_channels=4, teacher_feat_channels=4)
LN9, LN3 = math.log(9.0), math.log(3.0)


def _maps():
    """One image, two pixels (1 x 2). Teacher: pixel 0 -> class 0 with p 0.9, pixel 1 -> class 1 with
    p 0.75. Student: pixel 0 uniform (CE ln 2), pixel 1 (0, ln 3) -> p(class 1) 0.75 (CE ln 4/3)."""
    teacher = torch.tensor([[[[LN9, 0.0]], [[0.0, LN3]]]], dtype=torch.float64)
    student = torch.tensor([[[[0.0, 0.0]], [[0.0, LN3]]]], dtype=torch.float64)
    return student, teacher


@pytest.mark.parametrize(
    ("threshold", "normalize", "expected"),
    [
        (0.0, "all", (math.log(2) + math.log(4 / 3)) / 2),  # Naive-Student: every pixel
        (0.8, "all", math.log(2) / 2),  # FixMatch: masked pixel still in the mean's denominator
        (0.8, "confident", math.log(2)),  # mean over the confident pixels only
        (0.95, "all", 0.0),  # nothing confident
        (0.95, "confident", 0.0),  # nothing confident: 0, not NaN
    ],
)
def test_pseudo_label_values_by_hand(threshold: float, normalize: str, expected: float):
    student, teacher = _maps()
    value = pseudo_label_loss(student, teacher, (1, 2), threshold, normalize)
    assert value.item() == pytest.approx(expected, abs=1e-12)


def test_threshold_is_inclusive():
    """FixMatch keeps a pixel whose top probability equals tau (``>=``): (0, 0) logits give exactly 0.5."""
    teacher = torch.zeros(1, 2, 1, 1, dtype=torch.float64)
    student = torch.tensor([[[[0.0]], [[LN3]]]], dtype=torch.float64)  # p(class 0) = 1/4
    kept = pseudo_label_loss(student, teacher, (1, 1), 0.5)
    assert kept.item() == pytest.approx(math.log(4.0), abs=1e-12)  # argmax of a tie: class 0
    assert pseudo_label_loss(student, teacher, (1, 1), 0.5 + 1e-9).item() == 0.0


def test_maps_are_upsampled_to_the_label_size():
    """A 1 x 1 teacher map upsampled to 2 x 2 is constant; a 1 x 1 student too: CE of every pixel equal."""
    teacher = torch.tensor([[[[2.0]], [[0.0]]]], dtype=torch.float64)
    student = torch.tensor([[[[0.0]], [[LN3]]]], dtype=torch.float64)
    assert pseudo_label_loss(student, teacher, (2, 2), 0.0).item() == pytest.approx(math.log(4.0), abs=1e-12)
    # A student already at the label size with a different value per pixel: the mean of the four CEs.
    s4 = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    s4[0, 1, 0, 0] = LN3  # this pixel: p(class 0) = 1/4
    expected = (math.log(4.0) + 3 * math.log(2.0)) / 4
    assert pseudo_label_loss(s4, teacher, (2, 2), 0.0).item() == pytest.approx(expected, abs=1e-12)


def test_pseudo_label_gradcheck_and_teacher_gets_no_gradient():
    torch.manual_seed(0)
    student = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    for normalize in ("all", "confident"):
        assert torch.autograd.gradcheck(
            lambda s, n=normalize: pseudo_label_loss(s, teacher, (6, 8), 0.4, n), (student,)
        )
    pseudo_label_loss(student, teacher, (6, 8), 0.0).backward()
    assert teacher.grad is None


def test_pseudo_label_term_options_and_errors():
    loss = LOSSES.build("pseudo_label", spec=SPEC)
    assert (loss.threshold, loss.images, loss.normalize) == (0.95, "unlabeled", "all")  # FixMatch
    assert loss.uses_labels is False and loss.routed_images() == "unlabeled"
    assert LOSSES.build("pseudo_label", spec=SPEC, images="all").routed_images() == "all"
    assert loss.teacher_reads() == frozenset({"logits"})  # a teacher cache can serve it
    for options, key in (({"threshold": 1.5}, "threshold"), ({"images": "labeled"}, "images"),
                         ({"normalize": "sum"}, "normalize")):
        with pytest.raises(ValueError, match=f"option '{key}'"):
            LOSSES.build("pseudo_label", spec=SPEC, **options)


# ------------------------------------------------------------------------------------ kd at label size
def test_kd_label_resolution_by_hand():
    """2 classes, a 1 x 1 map upsampled to 2 x 2: KL(t || s) of the one pixel, at every label pixel."""
    kd = LOSSES.build("kd", spec=SPEC, resolution="label")
    s = SegOutput(logits=torch.tensor([[[[0.0]], [[0.0]]]], dtype=torch.float64), feat=None)
    t = SegOutput(logits=torch.tensor([[[[LN3]], [[0.0]]]], dtype=torch.float64), feat=None)  # p = (3/4, 1/4)
    batch = DistillBatch(images=torch.zeros(1, 3, 2, 2), labels=torch.zeros(1, 2, 2, dtype=torch.long))
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd(s, t, batch).item() == pytest.approx(expected, abs=1e-12)
    assert LOSSES.build("kd", spec=SPEC)(s, t, batch).item() == pytest.approx(expected, abs=1e-12)


def test_kd_label_resolution_differs_from_the_logit_grid_and_gradchecks():
    """On a non-constant map, upsampling before the KL is not the same as the KL on the logit grid."""
    torch.manual_seed(1)
    s = torch.randn(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    t = SegOutput(logits=torch.randn(1, 3, 2, 2, dtype=torch.float64), feat=None)
    batch = DistillBatch(images=torch.zeros(1, 3, 8, 8), labels=torch.zeros(1, 8, 8, dtype=torch.long))
    at_label = LOSSES.build("kd", spec=SPEC, resolution="label")
    on_grid = LOSSES.build("kd", spec=SPEC)
    a = at_label(SegOutput(logits=s, feat=None), t, batch)
    b = on_grid(SegOutput(logits=s, feat=None), t, batch)
    assert abs(a.item() - b.item()) > 1e-4
    assert torch.autograd.gradcheck(lambda x: at_label(SegOutput(logits=x, feat=None), t, batch), (s,))
    with pytest.raises(ValueError, match="option 'resolution'"):
        LOSSES.build("kd", spec=SPEC, resolution="input")


# ------------------------------------------------------------------------------------------ routing
class _Term:
    def __init__(self, images: str) -> None:
        self.images = images

    def routed_images(self) -> str:
        return self.images


def _inputs(labeled: torch.Tensor | None):
    logits = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 2, 2, 2)
    out = SegOutput(logits=logits, feat=None)
    labels = torch.zeros(4, 2, 2, dtype=torch.long)
    index = None if labeled is None or labeled.all() else labeled.nonzero().squeeze(1)
    return TermInputs(out, out, torch.zeros(4, 3, 2, 2), labels, index, 255)


def test_routing_of_labelled_all_and_unlabelled_terms():
    inputs = _inputs(torch.tensor([True, False, True, False]))
    seen = {kind: inputs.for_term(_Term(kind))[0].logits[:, 0, 0, 0].tolist()
            for kind in ("labeled", "all", "unlabeled")}
    assert seen == {"labeled": [0.0, 2.0], "all": [0.0, 1.0, 2.0, 3.0], "unlabeled": [1.0, 3.0]}
    # Every image labelled (or no flags): the unlabelled-only term is skipped, the others see everything.
    for flags in (torch.ones(4, dtype=torch.bool), None):
        inputs = _inputs(flags)
        assert inputs.for_term(_Term("unlabeled")) is None
        assert inputs.for_term(_Term("labeled"))[0].logits.shape[0] == 4
    # No labelled image: the label-reading term is skipped, the unlabelled-only one sees all four.
    inputs = _inputs(torch.zeros(4, dtype=torch.bool))
    assert inputs.for_term(_Term("labeled")) is None
    assert inputs.for_term(_Term("unlabeled"))[0].logits.shape[0] == 4


def _mixed_step(tmp_path: Path, options: dict, labelled_images: int | None = None):
    """A real distiller's forward on the batch [T, F, T, F] with one pseudo_label term of ``options``, and
    the term's value computed directly on images 1 and 3."""
    losses = "[{name: pseudo_label, options: " + json.dumps(options) + "}]"
    torch.manual_seed(0)
    _, distiller = _distiller(mixed_config(tmp_path / "r", losses))
    images, labels, labeled = _mixed_batch()
    result = distiller.compute(images, labels, labeled)
    keep = torch.tensor([1, 3])
    expected = pseudo_label_loss(result.student.logits[keep], result.teacher.logits[keep], (32, 32),
                                 options["threshold"], options.get("normalize", "all"), labelled_images)
    return distiller, result, expected


def test_distiller_applies_pseudo_label_to_the_unlabelled_images_only(tmp_path: Path):
    """In a real distiller step the term's value equals the loss on images 1 and 3 of [T, F, T, F]."""
    distiller, result, expected = _mixed_step(tmp_path, {"threshold": 0.0})
    assert torch.allclose(result.terms["pseudo_label"], expected, rtol=1e-6, atol=0)
    images, labels, _ = _mixed_batch()
    # Every image labelled: the unlabelled-only term is skipped (0), whatever the labels hold.
    result_all = distiller.compute(images, labels, torch.ones(4, dtype=torch.bool))
    assert result_all.terms["pseudo_label"].item() == 0.0


def test_unlabelled_only_term_without_unlabelled_images_is_refused(tmp_path: Path):
    from _engine_helpers import tiny_config

    cfg = tiny_config(tmp_path / "r", distill__teacher="{name: test_tiny_teacher}",
                      distill__allow_untrained_teacher="true", distill__losses="[{name: pseudo_label}]")
    with pytest.raises(ValueError, match="pseudo_label.*images: unlabeled.*set data.unlabeled") as err:
        _distiller(cfg)
    assert "\n" not in str(err.value)
    cfg = tiny_config(tmp_path / "s", distill__teacher="{name: test_tiny_teacher}",
                      distill__allow_untrained_teacher="true", distill__losses="[{name: kd}]",
                      distill__strong_augment="true")
    with pytest.raises(ValueError, match="strong_augment"):
        _distiller(cfg)


# ------------------------------------------------------------------------------------ strong augment
@pytest.mark.parametrize("convention", [InputConfig(), reference_bgr()])
def test_strong_view_changes_only_the_unlabelled_images_and_is_seeded(convention: InputConfig):
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(4, 3, 16, 16, generator=g)
    images = to_input(rgb, convention)
    labeled = torch.tensor([True, False, True, False])
    view = StrongAugment(convention)
    torch.manual_seed(3)
    a = view(images, labeled)
    torch.manual_seed(3)
    b = view(images, labeled)
    assert torch.equal(a, b)
    assert torch.equal(a[[0, 2]], images[[0, 2]])
    assert not torch.equal(a[[1, 3]], images[[1, 3]])
    assert torch.equal(view(images, torch.ones(4, dtype=torch.bool)), images)
    # The round trip to RGB and back is exact when nothing is drawn (p = 0 transforms).
    view.transform = lambda x: x
    assert torch.allclose(view(images, labeled), images, atol=1e-4)


def test_strong_view_reaches_the_student_not_the_teacher(tmp_path: Path):
    losses = "[{name: pseudo_label, options: {threshold: 0.0}}]"
    torch.manual_seed(0)
    _, distiller = _distiller(mixed_config(tmp_path / "r", losses, distill__strong_augment="true"))
    assert isinstance(distiller.student_view, StrongAugment)
    images, labels, labeled = _mixed_batch()
    seen = []
    distiller.teacher.register_forward_hook(lambda m, i, o: seen.append(("teacher", i[0].clone())))
    distiller.student.register_forward_hook(lambda m, i, o: seen.append(("student", i[0].clone())))
    torch.manual_seed(4)
    distiller.compute(images, labels, labeled)
    inputs = dict(seen)
    assert torch.equal(inputs["teacher"], images)
    assert torch.equal(inputs["student"][[0, 2]], images[[0, 2]])
    assert not torch.equal(inputs["student"][[1, 3]], images[[1, 3]])


# --------------------------------------------------------------------- the bundle's weighting rule
def test_normalize_labeled_weighs_a_pseudo_pixel_as_a_labelled_one():
    """Sum over the term's pixels / (labelled images x H x W): with 2 labelled images in the batch and the
    1 x 2 map above, (ln 2 + ln 4/3) / (2 * 2); without a count, the term's own images (1)."""
    student, teacher = _maps()
    value = pseudo_label_loss(student, teacher, (1, 2), 0.0, "labeled", labelled_images=2)
    assert value.item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 4, abs=1e-12)
    alone = pseudo_label_loss(student, teacher, (1, 2), 0.0, "labeled")
    assert alone.item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2, abs=1e-12)
    assert pseudo_label_loss(student, teacher, (1, 2), 0.0, "labeled", labelled_images=0).item() == \
        pytest.approx(alone.item(), abs=1e-12)  # no labelled image: divided by one image, not by zero
    s = student.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: pseudo_label_loss(x, teacher, (2, 3), 0.0, "labeled", 3), (s,))


def test_ce_plus_term_is_the_union_mean_times_n_over_labelled():
    """The rule stated in the docs: CE over the labelled images + the term (normalize labeled, weight 1)
    = N / n_l x the per-pixel CE over the whole batch, with the teacher's labels on the unlabelled images."""
    torch.manual_seed(2)
    n, n_l, k, size = 8, 1, 4, (6, 6)
    student = torch.randn(n, k, *size, dtype=torch.float64)
    teacher = torch.randn(n, k, 3, 3, dtype=torch.float64)
    labels = torch.randint(0, k, (n_l, *size))
    ce = torch.nn.functional.cross_entropy(student[:n_l], labels)
    term = pseudo_label_loss(student[n_l:], teacher[n_l:], size, 0.0, "labeled", labelled_images=n_l)
    up = torch.nn.functional.interpolate(teacher[n_l:], size=size, mode="bilinear", align_corners=False)
    union = torch.cat([labels, up.argmax(1)])
    expected = n / n_l * torch.nn.functional.cross_entropy(student, union)
    assert (ce + term).item() == pytest.approx(expected.item(), rel=1e-12)


def test_routing_tells_the_term_how_many_images_are_labelled(tmp_path: Path):
    inputs = _inputs(torch.tensor([True, False, True, False]))
    assert inputs.for_term(_Term("unlabeled"))[2].labelled_images == 2
    assert inputs.for_term(_Term("all"))[2].labelled_images == 2
    assert _inputs(None).for_term(_Term("all"))[2].labelled_images == 4
    _, result, expected = _mixed_step(tmp_path, {"threshold": 0.0, "normalize": "labeled"}, labelled_images=2)
    assert torch.allclose(result.terms["pseudo_label"], expected, rtol=1e-6, atol=0)


def test_the_bundle_file_is_what_the_demo_trains():
    """configs/_base/methods/unlabeled.yaml and the demo's ``unlabeled`` row are one recipe."""
    import yaml

    from segkd.demo.pipeline import METHODS, RATIOS

    bundle = yaml.safe_load((Path(__file__).parents[1] / "configs/_base/methods/unlabeled.yaml").read_text())
    assert bundle["distill"]["losses"] == METHODS["unlabeled"]
    assert bundle["data"]["unlabeled"]["ratio"] == RATIOS["unlabeled"]
