"""SKD pair-wise (blocked vs naive, hand value) and holistic (discriminator, adversary step)."""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from loss_testing import NUM_CLASSES, assert_grads_student_only, run_pair, tiny_pair
from segkd.config import ConfigError, load_config
from segkd.config_schema import AdversaryOptimConfig
from segkd.engine.optim import adversary_settings, build_adversary_optimizer
from segkd.losses import LOSSES, DistillBatch
from segkd.losses.blocked import affinity_sq_error_sum
from segkd.losses.discriminator import SAGANDiscriminator
from segkd.losses.functional import (
    adversarial_d_loss,
    adversarial_g_loss,
    gradient_penalty,
    pairwise_affinity_loss,
    skd_pool,
)
from segkd.models.outputs import SegOutput


def naive_pairwise(fs: torch.Tensor, ft: torch.Tensor, skd: bool = False) -> torch.Tensor:
    """Reference-code formula, whole (N, M, M) matrices at once, no pooling: CIRKD's ``F.normalize``
    (gradient through the norm) or, ``skd=True``, official SKD's ``f / (||f|| + 1e-8)``, norm detached."""
    def sim(f):
        if skd:
            f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-8).detach()
        else:
            f = torch.nn.functional.normalize(f, p=2, dim=1)
        f = f.flatten(2)
        return torch.einsum("icm,icn->imn", f, f)
    m = fs.shape[2] * fs.shape[3]
    return ((sim(fs) - sim(ft)) ** 2).sum() / (m * m) / fs.shape[0]


def test_pairwise_hand_value():
    # student pixels [1,0], [0,2] -> A_s = I ; teacher pixels [1,1], [1,1] -> A_t = all ones
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64).view(1, 2, 1, 2)
    t = torch.ones(1, 2, 1, 2, dtype=torch.float64)
    assert pairwise_affinity_loss(s, t, pool="none").item() == pytest.approx(2 / 4, rel=1e-6)


@pytest.mark.parametrize("block_size,method", [(1, "blocked"), (5, "blocked"), (7, "blocked"),
                                               (42, "blocked"), (1000, "blocked"), (1, "gram"), (1, "auto")])
def test_blocked_equals_naive_value_and_gradient(block_size, method):
    torch.manual_seed(0)
    s = torch.randn(2, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    blocked = pairwise_affinity_loss(s, t, pool="none", block_size=block_size, method=method)
    (g_blocked,) = torch.autograd.grad(blocked, s)
    naive = naive_pairwise(s, t)
    (g_naive,) = torch.autograd.grad(naive, s)
    assert blocked.item() == pytest.approx(naive.item(), rel=1e-6)
    assert torch.allclose(g_blocked, g_naive, rtol=1e-6, atol=1e-12)


class MaxNumel(TorchDispatchMode):
    """Records the largest tensor produced by any aten op (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(o, torch.Tensor):
                self.max_numel = max(self.max_numel, o.numel())
        return out


def test_blocked_never_materialises_full_affinity():
    m_side, block = 12, 16  # M = 144 nodes; a full affinity would have 20736 entries
    s = torch.randn(1, 4, m_side, m_side, requires_grad=True)
    t = torch.randn(1, 4, m_side, m_side)
    with MaxNumel() as probe:
        pairwise_affinity_loss(s, t, pool="none", block_size=block, method="blocked").backward()
    m = m_side * m_side
    assert probe.max_numel <= block * m
    with MaxNumel() as probe_gram:  # Gram matrices: channels x channels, the features are the largest
        pairwise_affinity_loss(s, t, pool="none", method="gram").backward()
    assert probe_gram.max_numel <= s.numel()
    with MaxNumel() as probe_naive:
        naive_pairwise(s, t)
    assert probe_naive.max_numel >= m * m  # the probe does see a full matrix when there is one


def test_affinity_sum_gradcheck_and_teacher_gradient():
    torch.manual_seed(1)
    s = torch.randn(1, 3, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: affinity_sq_error_sum(a, b, 2, "blocked"), (s, t))
    assert torch.autograd.gradcheck(lambda a, b: affinity_sq_error_sum(a, b, method="gram"), (s, t))
    with pytest.raises(ValueError, match="method must be"):
        affinity_sq_error_sum(s, t, method="fast")


def test_pooling_options():
    assert skd_pool(torch.zeros(1, 1, 65, 65), "skd", 0.5).shape[-2:] == (3, 3)  # SKD: ~3x3 nodes
    assert skd_pool(torch.zeros(1, 1, 9, 8), "cirkd").shape[-2:] == (5, 4)  # 2x2, ceil_mode
    torch.manual_seed(2)
    s, t = torch.randn(2, 4, 6, 8), torch.randn(2, 5, 6, 8)
    pooled = pairwise_affinity_loss(s, t, pool="cirkd")
    manual = naive_pairwise(torch.nn.functional.max_pool2d(s, 2), torch.nn.functional.max_pool2d(t, 2))
    assert pooled.item() == pytest.approx(manual.item(), rel=1e-5)
    # a student map of another size is resized to the teacher's before pooling
    assert pairwise_affinity_loss(torch.randn(2, 4, 3, 4), t, pool="skd").isfinite()


def test_pairwise_invariants_and_gradcheck():
    torch.manual_seed(3)
    s = torch.randn(1, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    assert pairwise_affinity_loss(t, t).item() == pytest.approx(0.0, abs=1e-12)
    assert pairwise_affinity_loss(s, t).item() > 0
    # the undetached norm (the pool="none"/"cirkd" default) has the true gradient
    fn = lambda x: pairwise_affinity_loss(x, t, pool="none", detach_norm=False, block_size=4)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (s,))


def test_pairwise_module_gradients():
    student, teacher, images, labels, spec = tiny_pair()
    loss = LOSSES.build("skd_pairwise", spec=spec, block_size=3)
    value = run_pair(loss, student, teacher, images, labels)
    value.backward()
    assert value.item() > 0
    assert_grads_student_only(loss, student, teacher, feat_only=True)


def test_adversarial_terms_hand_values():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-2.0, 0.5])
    assert adversarial_d_loss(real, fake, "hinge").item() == pytest.approx(0.25 + 0.75)
    assert adversarial_d_loss(real, fake, "wgan-gp").item() == pytest.approx(-0.75 - 1.25)
    assert adversarial_g_loss(fake).item() == pytest.approx(0.75)


def test_gradient_penalty_hand_value_and_nan_guard():
    x_real, x_fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    # D(x) = sum(x): gradient all ones over 4 entries -> norm 2 -> (2 - 1)^2 = 1
    assert gradient_penalty(lambda x: x.sum((1, 2, 3)), x_real, x_fake).item() == pytest.approx(1.0)
    w = torch.zeros(1, requires_grad=True)  # D with a vanishing input gradient: norm 0
    gp = gradient_penalty(lambda x: (w * x).sum((1, 2, 3)), x_real, x_fake)
    (g,) = torch.autograd.grad(gp, w)
    assert gp.item() == pytest.approx(1.0, rel=1e-5) and torch.isfinite(g).all()


@pytest.mark.parametrize("size", [(1, 1), (4, 4), (16, 16), (9, 20)])
def test_discriminator_runs_on_small_maps(size):
    d = SAGANDiscriminator(NUM_CLASSES, conv_dim=8)
    out = d(torch.randn(2, NUM_CLASSES, *size))
    assert out.shape[:2] == (2, 1) and out.dim() == 4 and torch.isfinite(out).all()
    assert d.attn1.gamma.item() == 0.0


@pytest.mark.parametrize("adv_loss,condition", [("hinge", False), ("wgan-gp", True)])
def test_holistic_adversary_step_updates_only_discriminator(adv_loss, condition):
    student, teacher, images, labels, spec = tiny_pair(batch=1)
    loss = LOSSES.build("skd_holistic", spec=spec, adv_loss=adv_loss, condition_on_image=condition,
                        conv_dim=8)
    role = _adversary_optimizer(loss, AdversaryOptimConfig(), iters=10)
    d_opt, d_sched = role.optimizer, role.scheduler
    assert isinstance(d_opt, torch.optim.Adam if adv_loss == "hinge" else torch.optim.SGD)
    assert (d_sched is None) == (adv_loss == "hinge")
    assert not set(map(id, loss.student_parameters())) & set(map(id, loss.adversary_parameters()))
    s_out = student(images)
    with torch.no_grad():
        t_out = teacher(images)
    batch = DistillBatch(images=images, labels=labels)
    d_before = [p.detach().clone() for p in loss.adversary_parameters()]
    d_opt.zero_grad()
    out = loss.adversary_step(s_out, t_out, batch)
    assert torch.isfinite(out["loss"]) and ("d_gp" in out) == (adv_loss == "wgan-gp")
    out["loss"].backward()
    d_opt.step()
    assert all(p.grad is None for p in student.parameters())  # student logits were detached
    assert any(not torch.equal(a, b) for a, b in zip(d_before, loss.adversary_parameters()))
    g_term = loss(s_out, t_out, batch)
    g_term.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_holistic_optimizer_overrides():
    _, _, _, _, spec = tiny_pair()
    loss = LOSSES.build("skd_holistic", spec=spec, conv_dim=8)
    sgd = _adversary_optimizer(loss, AdversaryOptimConfig(name="sgd", lr=1e-3, poly_power=0.9))
    opt, sched = sgd.optimizer, sgd.scheduler
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["lr"] == 1e-3 and sched is not None
    assert opt.param_groups[0]["momentum"] == 0.9
    adam = _adversary_optimizer(loss, AdversaryOptimConfig()).optimizer
    assert adam.param_groups[0]["betas"] == (0.9, 0.99) and adam.param_groups[0]["weight_decay"] == 0.0
    with pytest.raises(ConfigError, match="distill.adversary_optim.lr_d"):
        load_config(None, ["distill.adversary_optim.lr_d=1.0"])
    with pytest.raises(ConfigError, match="distill.adversary_optim.name"):
        load_config(None, ["distill.adversary_optim.name=rmsprop"])


def _adversary_optimizer(loss, overrides, iters: int = 100):
    """The discriminator's optimizer as the engine builds it (:mod:`segkd.engine.optim`)."""
    settings = adversary_settings(loss.adversary_optim_defaults(), overrides)
    return build_adversary_optimizer(loss.adversary_parameters(), settings, iters)


def test_self_attention_matches_its_three_convolutions():
    """The fused q/k/v matrix product equals the SAGAN formula with the three 1x1 convolutions."""
    from segkd.losses.discriminator import SelfAttention

    torch.manual_seed(0)
    attn = SelfAttention(16)
    with torch.no_grad():
        attn.gamma.fill_(0.7)
    x = torch.randn(3, 16, 5, 7, dtype=torch.float64)
    attn = attn.double()
    q, k, v = (conv(x).flatten(2) for conv in (attn.query, attn.key, attn.value))
    weights = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)  # (N, M, M)
    expected = attn.gamma * torch.bmm(v, weights.transpose(1, 2)).view_as(x) + x
    assert (attn(x) - expected).abs().max().item() < 1e-12


def test_adversary_step_scores_each_batch_in_its_own_pass():
    """D's input BatchNorm uses batch statistics: real and fake maps go through D separately, as in the
    references, so each batch's scores are those of D run on that batch alone (eval-mode spectral norm
    keeps u, v fixed between the passes; the BatchNorm is put back in training mode)."""
    _, _, _, _, spec = tiny_pair(batch=2)
    loss = LOSSES.build("skd_holistic", spec=spec, conv_dim=8).eval()
    loss.discriminator.preprocess.train()
    real, fake = torch.rand(2, NUM_CLASSES, 6, 6), 5 * torch.rand(2, NUM_CLASSES, 6, 6)
    d_real, d_fake = loss._score_pair(real, fake)
    assert torch.allclose(d_real, loss.discriminator(real), atol=1e-6)
    assert torch.allclose(d_fake, loss.discriminator(fake), atol=1e-6)
    joint = loss.discriminator(torch.cat([real, fake]))  # one pass would mix the two batches' statistics
    assert not torch.allclose(joint[:2], d_real, atol=1e-4)


def test_gram_method_zero_for_identical_features_and_auto_choice():
    f = torch.nn.functional.normalize(torch.randn(2, 8, 300), dim=1)
    assert affinity_sq_error_sum(f, f.clone(), method="gram").item() == 0.0  # a - 2a + a is exact
    wide, few_nodes = torch.randn(1, 64, 10), torch.randn(1, 64, 10)
    with MaxNumel() as probe:  # M = 10 < C: the blocked method is cheaper and auto takes it
        affinity_sq_error_sum(wide, few_nodes)
    assert probe.max_numel < 64 * 64  # no 64 x 64 Gram matrix was built


def test_gram_method_hand_value():
    # Same tiny case as test_pairwise_hand_value. After per-pixel normalisation Fs = I (2 channels x 2
    # pixels), Ft = all 1/sqrt(2): ||Fs Fs^T||^2 = 2, ||Fs Ft^T||^2 = 4 * 1/2 = 2, ||Ft Ft^T||^2 = 4,
    # so 2 - 2 * 2 + 4 = 2 (= the two off-diagonal unit errors of I vs all-ones), over M^2 = 4: 0.5.
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64).view(1, 2, 1, 2)
    t = torch.ones(1, 2, 1, 2, dtype=torch.float64)
    assert pairwise_affinity_loss(s, t, pool="none", method="gram").item() == pytest.approx(2 / 4, rel=1e-6)


def test_gram_method_float32_cancellation_is_bounded():
    """The precision figures quoted in affinity_sq_error_sum's docstring (128 channels, 2048 nodes)."""
    g = torch.Generator().manual_seed(0)
    fs = torch.nn.functional.normalize(torch.randn(2, 128, 2048, generator=g), dim=1)
    unrelated = torch.nn.functional.normalize(torch.randn(2, 256, 2048, generator=g), dim=1)
    close = torch.nn.functional.normalize(fs + 1e-3 * torch.randn(2, 128, 2048, generator=g), dim=1)
    for ft, bound in ((unrelated, 1e-6), (close, 1e-3)):
        exact = affinity_sq_error_sum(fs.double(), ft.double(), method="blocked", block_size=2048).item()
        gram = affinity_sq_error_sum(fs, ft, method="gram").item()
        assert abs(gram - exact) / exact < bound


# ---------------------------------------------------------------- exactness to the references (issue 10)


def cirkd_structural_kd(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """CIRKD ``CriterionStructuralKD`` written out: 2x2 max pool (ceil), F.normalize, mean squared error."""
    pool = torch.nn.MaxPool2d(2, 2, 0, ceil_mode=True)
    fs = torch.nn.functional.normalize(pool(fs), p=2, dim=1).flatten(2)
    ft = torch.nn.functional.normalize(pool(ft), p=2, dim=1).flatten(2)
    return ((fs.transpose(1, 2) @ fs - ft.transpose(1, 2) @ ft) ** 2).mean()


def skd_sim_dis(fs: torch.Tensor, ft: torch.Tensor, scale: float = 0.5) -> torch.Tensor:
    """Official SKD ``CriterionPairWiseforWholeFeatAfterPool`` + ``sim_dis_compute`` written out."""
    kernel = (int(ft.shape[2] * scale), int(ft.shape[3] * scale))
    pool = torch.nn.MaxPool2d(kernel, kernel, 0, ceil_mode=True)
    fs, ft = pool(fs), pool(ft)

    def sim(f):
        f = f / ((f ** 2).sum(1, keepdim=True) ** 0.5 + 1e-8).detach()
        f = f.flatten(2)
        return torch.einsum("icm,icn->imn", f, f)
    m = ft.shape[2] * ft.shape[3]
    return (((sim(ft) - sim(fs)) ** 2) / m**2 / ft.shape[0]).sum()


@pytest.mark.parametrize("pool,reference", [("cirkd", cirkd_structural_kd), ("skd", skd_sim_dis)])
def test_pairwise_default_matches_its_pool_reference_value_and_gradient(pool, reference):
    """The module's default (detach_norm follows the pool) equals the pool's reference code in value and
    gradient; the other detaching gives the same value but a different gradient."""
    torch.manual_seed(4)
    s = torch.randn(2, 6, 7, 9, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 6, 7, 9, dtype=torch.float64)
    _, _, _, _, spec = tiny_pair()
    loss = LOSSES.build("skd_pairwise", spec=spec, pool=pool)
    assert loss.detach_norm == (pool == "skd")
    ours = pairwise_affinity_loss(s, t, pool=pool, detach_norm=loss.detach_norm)
    ref = reference(s, t)
    (g_ours,), (g_ref,) = torch.autograd.grad(ours, s), torch.autograd.grad(ref, s)
    assert abs(ours.item() - ref.item()) < 1e-15
    assert torch.allclose(g_ours, g_ref, rtol=1e-12, atol=1e-16)
    other = pairwise_affinity_loss(s, t, pool=pool, detach_norm=pool != "skd")
    (g_other,) = torch.autograd.grad(other, s)
    assert other.item() == pytest.approx(ours.item(), rel=1e-7)
    assert (g_other - g_ref).norm() > 0.1 * g_ref.norm()  # the gradients differ by far more than rounding


def test_discriminator_parameter_count_matches_the_references():
    # references: 19-class input BatchNorm2d (38) + the SAGAN stack (3,191,683) at conv_dim 64
    assert sum(p.numel() for p in SAGANDiscriminator(19).parameters()) == 3_191_721
    assert sum(p.numel() for p in SAGANDiscriminator(19, preprocess="tanh").parameters()) == 3_191_683


def test_discriminator_sees_raw_logits_through_batchnorm():
    """Training-mode input BatchNorm: per-channel affine changes of the logits (which a softmax input
    would not ignore) leave D's scores unchanged up to BN's eps."""
    torch.manual_seed(5)
    d = SAGANDiscriminator(NUM_CLASSES, conv_dim=8).double()
    d.eval()
    d.preprocess.train()  # fixed spectral-norm vectors, batch statistics in the input layer
    x = torch.randn(4, NUM_CLASSES, 20, 20, dtype=torch.float64)
    scale = torch.tensor([3.0, 0.5, 7.0], dtype=torch.float64).view(1, -1, 1, 1)
    shift = torch.tensor([1.0, -2.0, 0.3], dtype=torch.float64).view(1, -1, 1, 1)
    assert torch.allclose(d(x), d(scale * x + shift), atol=1e-5)
    soft = torch.softmax(x, 1)
    assert not torch.allclose(soft, torch.softmax(scale * x + shift, 1), atol=1e-2)


class FixedMaps(torch.nn.Module):
    """A stand-in discriminator returning a fixed (N, 1, 1, 2) score map per input kind."""

    def __init__(self, real_map, fake_map):
        super().__init__()
        self.maps = {True: torch.tensor(real_map).view(1, 1, 1, 2),
                     False: torch.tensor(fake_map).view(1, 1, 1, 2)}
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.w * self.maps[bool(x.mean() > 0)]


def test_hinge_acts_per_location_of_a_1x2_score_map():
    # real map (2, -2): per location relu(1 - 2) + relu(1 + 2) -> mean 1.5 (hinge of the mean 0: 1)
    # fake map (-3, 1): per location relu(1 - 3) + relu(1 + 1) -> mean 1.0 (hinge of the mean -1: 0)
    real, fake = torch.tensor([2.0, -2.0]).view(1, 1, 1, 2), torch.tensor([-3.0, 1.0]).view(1, 1, 1, 2)
    assert adversarial_d_loss(real, fake, "hinge").item() == pytest.approx(2.5)
    hinge_of_mean = adversarial_d_loss(real.mean((1, 2, 3)), fake.mean((1, 2, 3)), "hinge")
    assert hinge_of_mean.item() == pytest.approx(1.0)
    _, _, _, _, spec = tiny_pair(batch=1)
    loss = LOSSES.build("skd_holistic", spec=spec, conv_dim=8, d_weight=0.1)
    loss.discriminator = FixedMaps([2.0, -2.0], [-3.0, 1.0])
    teacher = SegOutput(logits=torch.ones(1, NUM_CLASSES, 4, 4), feat=torch.zeros(1, 1, 4, 4))
    student = SegOutput(logits=-torch.ones(1, NUM_CLASSES, 4, 4), feat=torch.zeros(1, 1, 4, 4))
    batch = DistillBatch(images=torch.zeros(1, 3, 4, 4), labels=torch.zeros(1, 4, 4, dtype=torch.long))
    assert loss.adversary_step(student, teacher, batch)["loss"].item() == pytest.approx(0.1 * 2.5)
    assert loss(student, teacher, batch).item() == pytest.approx(1.0)  # G term: -mean(-3, 1)


def test_gradient_penalty_uses_the_score_map_sum():
    """D(x) = the first two positions of x as a 1x2 map: d(sum map)/dx has two ones -> norm sqrt2 and
    GP = (sqrt2 - 1)^2; a per-sample mean would give norm sqrt2 / 2."""
    real, fake = torch.randn(3, 1, 1, 4, dtype=torch.float64), torch.randn(3, 1, 1, 4, dtype=torch.float64)
    gp = gradient_penalty(lambda x: x[..., :2], real, fake)
    assert gp.item() == pytest.approx((math.sqrt(2) - 1) ** 2, rel=1e-12)
    gp_mean = gradient_penalty(lambda x: x[..., :2].mean((1, 2, 3)), real, fake)
    assert gp_mean.item() == pytest.approx((math.sqrt(2) / 2 - 1) ** 2, rel=1e-12)
    gp_eps = gradient_penalty(lambda x: x[..., :2], real, fake, eps=0.5)  # sqrt(2 + 0.5)
    assert gp_eps.item() == pytest.approx((math.sqrt(2.5) - 1) ** 2, rel=1e-12)


def test_spectral_norm_iterates_v_then_u():
    """W = diag(2, 1) with u = (1, 0), v = (0, 1): v-then-u (references) gives v = (1, 0), u = (1, 0),
    sigma = 2; u-then-v (torch's spectral_norm order) would give u = v = (0, 1), sigma = 1."""
    from segkd.losses.discriminator import SpectralNormVU

    w = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64).view(2, 1, 1, 2)
    sn = SpectralNormVU(w).double()
    sn.u.copy_(torch.tensor([1.0, 0.0]))
    sn.v.copy_(torch.tensor([0.0, 1.0]))
    out = sn(w)
    assert torch.allclose(sn.v, torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(sn.u, torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(out, w / 2)
    v0 = torch.tensor([0.0, 1.0], dtype=torch.float64)
    u_first = torch.nn.functional.normalize(w.flatten(1) @ v0, dim=0)
    v_after = torch.nn.functional.normalize(w.flatten(1).t() @ u_first, dim=0)
    assert (u_first @ w.flatten(1) @ v_after).item() == pytest.approx(1.0)  # the other order: sigma 1
    sn.eval()  # no update in eval mode; gradient through sigma with u, v constant
    u, v = sn.u.clone(), sn.v.clone()
    w_var = torch.randn(2, 1, 1, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sn, (w_var,))
    assert torch.equal(sn.u, u) and torch.equal(sn.v, v)


@pytest.mark.parametrize("adv_loss,expected", [("hinge", [False, True]), ("wgan-gp", [True, False])])
def test_holistic_d_passes_follow_the_reference_order(adv_loss, expected):
    """CIRKD (hinge) scores the student batch first, official SKD (wgan-gp) the teacher batch first."""
    _, _, _, _, spec = tiny_pair(batch=1)
    loss = LOSSES.build("skd_holistic", spec=spec, conv_dim=8, adv_loss=adv_loss)
    seen = []
    loss.discriminator.register_forward_pre_hook(lambda m, args: seen.append(bool(args[0].mean() > 0)))
    loss._score_pair(torch.ones(1, NUM_CLASSES, 8, 8), -torch.ones(1, NUM_CLASSES, 8, 8))
    assert seen == expected


def test_holistic_terms_gradcheck_through_the_discriminator():
    torch.manual_seed(6)
    d = SAGANDiscriminator(NUM_CLASSES, conv_dim=8).double().eval()
    d.preprocess.train()  # batch statistics as in training; spectral-norm vectors fixed in eval mode
    with torch.no_grad():
        d.attn1.gamma.fill_(0.5)
        d.attn2.gamma.fill_(0.5)
    x = torch.randn(2, NUM_CLASSES, 8, 8, dtype=torch.float64, requires_grad=True)
    real = torch.randn(2, NUM_CLASSES, 8, 8, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: adversarial_g_loss(d(z)), (x,))
    assert torch.autograd.gradcheck(lambda z: adversarial_d_loss(d(real), d(z), "hinge"), (x,))
