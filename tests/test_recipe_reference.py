"""Every recipe against the reference training scripts it reproduces, one test per recipe family.

Each family's table below holds the reference value of every hyperparameter, with the file and line it was
read from in a comment. The commits read: CIRKD github.com/winycg/CIRKD 2d8ad0f (the CVPR'22 code with
``train_cirkd.py``), DIST github.com/hunto/DIST_KD 2418f18 (``segmentation/``), official SKD
github.com/irfanICMLL/structure_knowledge_distillation ce208e1 (and its README at f6e6565 for CamVid),
torchdistill github.com/yoshitomo-matsubara/torchdistill 3e4373c (``configs/sample/coco2017/ktaad/
lraspp_mobilenet_v3_large_from_deeplabv3_resnet50.yaml``, "ktaad.yaml" below) and, for Knowledge Adaptation,
which published no code, the paper (He et al., CVPR 2019, "KA paper" below: its implementation details).
docs/REFERENCES.md has the same tables.
A recipe is resolved (bases merged, every stage built) and compared key by key; loss terms are compared with
their effective options (the term's defaults in code, overridden by the recipe).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from segkd.config import load_config
from segkd.config_schema import ExperimentConfig
from segkd.engine.stages import stage_configs
from segkd.losses import LOSSES
from segkd.losses.skd import _OPTIM_DEFAULTS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml") if "_base" not in p.parts)
NOT_REPRODUCTIONS = {p for p in RECIPES if p.startswith(("bench/", "int8/"))}  # measurement configs

# The input every CIRKD / DIST / SKD network is trained on: OpenCV BGR, 0-255, minus the BGR mean.
# CIRKD dataset/cityscapes.py:69 (cv2.imread), :79 (mean); camvid.py:58,68; voc.py:58,69; DIST
# segmentation/dataset/datasets.py:69,79; SKD train_and_eval.py:10 (IMG_MEAN) + dataset/datasets.py:175,183.
OPENCV_BGR = {"channel_order": "bgr", "pixel_max": 255.0, "mean": [104.00698793, 116.66876762, 122.67891434],
              "std": [1.0, 1.0, 1.0]}
IMAGENET_RGB = {"channel_order": "rgb", "pixel_max": 1.0, "mean": [0.485, 0.456, 0.406],
                "std": [0.229, 0.224, 0.225]}  # timm / torchvision weights (torchdistill ktaad.yaml:43-44)

# ------------------------------------------------------------------------------------------ CIRKD setting
CIRKD_CITYSCAPES = {
    "dataset": "cityscapes",
    "crop": [512, 1024],  # train_cirkd.py:51, train_kd.py:52, train_baseline.py:45
    "global_batch": 16,  # train_cirkd.py:61 (split over the 8 processes of the scripts, :174)
    "iters": 40000,  # train_cirkd.py:65, train_kd.py:66, train_baseline.py:59
    "optimizer": "sgd",  # train_cirkd.py:251
    "lr": 0.02,  # train_cirkd.py:67, train_kd.py:68, train_baseline.py:61
    "momentum": 0.9,  # train_cirkd.py:69
    "weight_decay": 1e-4,  # train_cirkd.py:71, train_kd.py:72, train_baseline.py:65
    "poly": 0.9,  # train_cirkd.py:270,327 (per iteration, from iteration 0)
    "min_lr": 0.0,  # train_cirkd.py:270
    "warmup": 0,  # train_cirkd.py:327 (none)
    "scales": [0.5, 2.0],  # dataset/cityscapes.py:52: 0.5 + random.randint(0, 15) / 10
    "scale_step": 0.1,  # dataset/cityscapes.py:52
    "flip": True,  # dataset/cityscapes.py:100-103
    "train_split": "train",  # train_cirkd.py:149
    "val_split": "val",  # train_cirkd.py:152-154 (full 1024x2048 images)
    "score_split": "val",  # eval.py:91
    "val_interval": 800,  # train_cirkd.py:105-106, train_kd.py:108-109 (best checkpoint: :411-416)
    "student_input": OPENCV_BGR,
}
RESNET18 = {"student_aux": True, "aux_weight": 0.4,  # train_cirkd.py:131-132 (resnet: aux), :307 (0.4)
            "pretrained": "pretrained/resnet18-imagenet.pth"}  # train_scripts/train_cirkd/citys/*res18.sh:12
STUDENTS = {
    "deeplabv3_resnet18": {"student": "deeplabv3_resnet18", **RESNET18},
    "pspnet_resnet18": {"student": "pspnet_resnet18", **RESNET18},
    "deeplabv3_mobilenetv2": {
        "student": "deeplabv3_mobilenetv2", "student_aux": False,  # train_cirkd.py:133-134 (mobile: no aux)
        "pretrained": "pretrained/mobilenetv2-imagenet.pth"},  # train_cirkd/citys/deeplabv3_mbv2.sh:12
}
CITYSCAPES_TEACHER = {"teacher": "deeplabv3_resnet101", "teacher_input": OPENCV_BGR,
                      "teacher_checkpoint": "deeplabv3_resnet101_citys_best_model.pth"}  # citys/*.sh:11

KD = [("kd", 1.0, {"temperature": 1.0, "reduction": "mean", "mask_ignore": False})]  # train_kd.py:76-77,342
HINGE_GAN = ("skd_holistic", 0.001, {  # train_scripts/train_kd/train_{skd,ifvd,cwd}.sh: --lambda-adv 0.001
    "adv_loss": "hinge", "d_weight": 0.1,  # train_kd.py:240-241 ('hinge'); --lambda-d 0.1
    "preprocess": "bn", "condition_on_image": False,  # train_kd.py:221 (preprocess_GAN_mode=1: raw logits)
    "adversary": {"name": "adam", "lr": 4e-4, "betas": (0.9, 0.99),  # train_kd.py:261-263
                  "weight_decay": 0.0, "poly_power": 0.0}})
METHODS = {
    "baseline": [],
    "kd": KD,
    # train_scripts/train_kd/train_skd.sh:8-11; train_kd.py:242 (CriterionStructuralKD: 2x2 max-pool)
    "skd": [*KD, ("skd_pairwise", 10.0, {"pool": "cirkd", "normalize_first": False}), HINGE_GAN],
    # train_scripts/train_kd/train_ifvd.sh:8-11; train_kd.py:243
    "ifvd": [*KD, ("ifvd", 20.0, {"reduction": "all"}), HINGE_GAN],
    # train_scripts/train_kd/train_cwd.sh:8-12; train_kd.py:244 (norm_type channel, kl, T 4, student's C)
    "cwd": [*KD, ("cwd", 50.0, {"target": "feat", "temperature": 4.0, "normalize_by": "student"}),
            ("cwd", 3.0, {"target": "logits", "temperature": 4.0, "normalize_by": "student"}), HINGE_GAN],
}


def _cirkd_terms(memory_weight: float, enqueue: str = "reference") -> list[tuple[str, float, dict[str, Any]]]:
    """train_cirkd.py:74-86 (defaults; the Cityscapes / CamVid scripts keep them), :232-243, :311-325."""
    memory = {"temperature": 0.1, "kd_temperature": 1.0,  # :81, :80
              "pixel_memory_size": 20000, "region_memory_size": 2000,  # :74, :75
              "pixel_contrast_size": 4096, "region_contrast_size": 1024,  # :77, :76 (// K + 1 per class:
              # :237-238)
              "pixels_per_update": 16,  # losses/cirkd_memory.py:30
              "enqueue": enqueue}  # losses/cirkd_memory.py _dequeue_and_enqueue
    return [("kd", 1.0, {"temperature": 1.0, "reduction": "mean"}),  # :79, :83
            ("cirkd_batch_p2p", 1.0, {"temperature": 0.1, "pool": False, "gather": False}),  # :84, :233
            ("cirkd_memory_p2p", memory_weight, memory),  # :85
            ("cirkd_memory_p2r", memory_weight, memory)]  # :86


METHODS["cirkd"] = _cirkd_terms(0.1)

CAMVID = {**CIRKD_CITYSCAPES, "dataset": "camvid",
          "crop": [360, 360],  # train_scripts/train_cirkd/camvid/*.sh:9
          "val_split": "val",  # train_cirkd.py:162 (camvid_val_list, 101 images)
          "score_split": "test"}  # eval.py:93 (camvid_test_list, 233 images); paper Table 2 "Test mIoU"
CAMVID_TEACHER = {**CITYSCAPES_TEACHER,  # README.md:105 (69.84); the scripts' :13 names the Cityscapes file
                  "teacher_checkpoint": "deeplabv3_resnet101_camvid_best_model.pth"}
VOC = {**CIRKD_CITYSCAPES, "dataset": "voc",
       "crop": [512, 512],  # train_scripts/train_cirkd/voc/*.sh:9
       "train_split": "train_aug",  # train_cirkd.py:156 (train_aug.txt)
       "val_split": "val", "score_split": "val"}  # train_cirkd.py:158, eval.py:97
VOC_TEACHER = {**CITYSCAPES_TEACHER, "teacher_checkpoint": "deeplabv3_resnet101_pascal_aug_best_model.pth"}
VOC_METHODS = {**METHODS, "cirkd": _cirkd_terms(0.01)}  # train_scripts/train_cirkd/voc/*.sh:11-12

# -------------------------------------------------------------------------------------------------- DIST
DIST = {**CIRKD_CITYSCAPES,  # segmentation/train_kd.py: crop :47, batch :57, iters :61, lr :63, momentum :65
        "weight_decay": 5e-4,  # segmentation/train_kd.py:67
        "min_lr": 1e-4,  # segmentation/train_kd.py:218: lr = 1e-4 + (lr - 1e-4) * poly
        "val_interval": 400}  # segmentation/train_kd.py:92
DIST_TERMS = [("dist", 1.0, {"tau": 1.0, "beta": 1.0, "gamma": 1.0,  # losses/dist_kd.py:21 (no temperature)
                             "aux_weight": 0.4})]  # segmentation/train_kd.py:254, :258

# -------------------------------------------------------------------------------------------- official SKD
SKD_SETTING = {
    "dataset": "cityscapes",
    "crop": [512, 512],  # utils/train_options.py:34
    "global_batch": 8,  # run_train_val.sh:15 (one process)
    "iters": 40000,  # run_train_val.sh:16
    "optimizer": "sgd", "momentum": 0.9,  # networks/kd_model.py:74; utils/train_options.py:36
    "lr": 0.01,  # utils/train_options.py:61
    "weight_decay": 5e-4,  # run_train_val.sh:13
    "poly": 0.9, "min_lr": 0.0, "warmup": 0,  # utils/train_options.py:38; networks/kd_model.py:110-116
    "scales": [0.7, 2.1], "scale_step": 0.1,  # dataset/datasets.py:158: 0.7 + random.randint(0, 14) / 10
    "flip": True,  # run_train_val.sh:11
    "train_split": "train", "val_split": "val", "score_split": "val",  # train_and_eval.py:13,16
    "val_interval": 0,  # train_and_eval.py:27 validates in the last 1000 steps only: here at the end
    "student_input": OPENCV_BGR,
}
SKD_TERMS = [
    ("kd", 10.0, {"reduction": "skd"}),  # run_train_val.sh:4 (lambda_pi 10); utils/criterion.py:211-226
    ("skd_pairwise", 0.5, {"pool": "skd", "scale": 0.5}),  # run_train_val.sh:22-23
    ("skd_holistic", 0.1, {  # networks/kd_model.py:149 (G: lambda_d 0.1)
        "adv_loss": "wgan-gp", "d_weight": 0.1,  # train_options.py:52,56; kd_model.py:158
        "gp_weight": 10.0,  # train_options.py:55; kd_model.py:160-161
        "preprocess": "bn",  # train_options.py:60 (preprocess-GAN-mode 1)
        "adversary": {"name": "sgd", "lr": 4e-4, "momentum": 0.9, "weight_decay": 5e-4,  # :62; kd_model.py:75
                      "poly_power": 0.9}}),  # train_and_eval.py:23 (adjust_learning_rate of D_solver)
]
PSP18_SKD = {"student": "pspnet_resnet18", "student_aux": True, "aux_weight": 0.4,  # utils/criterion.py:188
             "pretrained": "pretrained/resnet18-imagenet.pth"}  # run_train_val.sh:18
SCRATCH = {"student_aux": False, "aux_weight": 0.0, "pretrained": False}  # ESPNet / LightNet: no aux head
SKD_TEACHER = {"teacher": "pspnet_resnet101", "teacher_input": None}  # segkd-trained: its checkpoint says

# ---------------------------------------------------------------------------------- Knowledge Adaptation
KA = {
    "global_batch": 16, "optimizer": "sgd", "momentum": 0.9,  # KA paper: SGD, batch 16, momentum 0.9
    "weight_decay": 4e-5, "poly": 0.9, "lr": 0.007,  # KA paper: "weight decay 4x10e-5", poly 0.9, lr 0.007
    "min_lr": 0.0, "warmup": 0, "aux_weight": 0.0, "flip": True,  # KA paper: flipping, scale jitter
    "student_input": IMAGENET_RGB,  # timm's ImageNet weights
}
KA_ITERS = {"cityscapes": 90000, "voc": 30000, "pascal_context": 30000}  # KA paper: 90K / 30K / 30k
KA_EPOCH_STEPS = {"cityscapes": 186, "voc": 662, "pascal_context": 313}  # one epoch: 2975 / 10582 / 4996 / 16
KA_STAGE1 = {  # KA paper: "within one epoch with a learning rate of 0.1"; ktaad.yaml:96-97 (one epoch)
    "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,  # ktaad.yaml:158-161
    "weight_decay": 1e-4,  # ktaad.yaml:162; KA paper: "large weight decay of 10e-4"
    "poly": 0.0,  # ktaad.yaml:157-162: no scheduler in stage 1 (constant LR)
}
KA_TERMS = [("ka_adapt", 50.0, {"reduction": "mean"}),  # ktaad.yaml:295-302 (KTALoss p 1, q 2, mean; 50)
            ("ka_affinity", 1.0, {"definition": "paper"})]  # paper Eq. 5, weight 1 (ktaad.yaml:312)


# ------------------------------------------------------------------------------------------- resolution
def _input(conv: Any) -> dict[str, Any] | None:
    if conv is None:
        return None
    return {"channel_order": conv.channel_order, "pixel_max": float(conv.pixel_max),
            "mean": [float(v) for v in conv.mean], "std": [float(v) for v in conv.std]}


def _term_options(term: Any, cfg: ExperimentConfig) -> dict[str, Any]:
    """The options a term runs with: its defaults in code, overridden by the recipe; for an adversarial
    term also its discriminator optimizer (the variant's published one, overridden by the recipe)."""
    params = inspect.signature(LOSSES.get(term.name)).parameters
    options = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    options.update(term.options)
    if term.name == "skd_holistic":
        adversary = dict(_OPTIM_DEFAULTS[options["adv_loss"]])
        overrides = {k: v for k, v in vars(cfg.distill.adversary_optim).items() if v is not None}
        options["adversary"] = {**adversary, **overrides}
    return options


def resolved(cfg: ExperimentConfig, processes: int) -> dict[str, Any]:
    """The hyperparameters of one (stage) config; ``processes``: of the recipe's README command."""
    d, o, t, teacher = cfg.data, cfg.optim, cfg.train, cfg.distill.teacher
    checkpoint = Path(teacher.checkpoint).name if teacher is not None and teacher.checkpoint else None
    return {
        "dataset": d.name, "crop": list(d.crop_size), "scales": list(d.scale_range),
        "scale_step": d.scale_step, "flip": d.flip, "global_batch": d.batch_size * processes * t.grad_accum,
        "train_split": d.train_split, "val_split": d.val_split, "score_split": cfg.eval.split or d.val_split,
        "optimizer": o.name, "lr": o.lr, "momentum": o.momentum, "weight_decay": o.weight_decay,
        "poly": o.poly_power, "min_lr": o.min_lr, "warmup": o.warmup_iters, "iters": t.iters,
        "val_interval": t.val_interval, "aux_weight": cfg.distill.aux_weight, "student": cfg.model.name,
        "student_aux": cfg.model.aux, "pretrained": cfg.model.pretrained,
        "student_input": _input(cfg.model.input),
        "teacher": teacher.name if teacher is not None else None, "teacher_checkpoint": checkpoint,
        "teacher_input": _input(teacher.input) if teacher is not None else None,
        "terms": [(term.name, term.weight, _term_options(term, cfg)) for term in cfg.distill.losses],
    }


def check(path: str, expected: dict[str, Any], terms: list[tuple[str, float, dict[str, Any]]] | None,
          processes: int = 8, stage: int = -1) -> ExperimentConfig:
    """Compare recipe ``path`` (its stage ``stage``) with ``expected``; ``terms``: the distillation terms
    (name, weight, reference options, each compared with the effective option)."""
    cfg = stage_configs(load_config(CONFIGS / path))[stage]
    got = resolved(cfg, processes)
    wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert not wrong, f"{path}: recipe value != reference value: {wrong}"
    if terms is not None:
        assert [(n, w) for n, w, _ in got["terms"]] == [(n, w) for n, w, _ in terms], path
        for (name, _, options), (_, _, reference) in zip(got["terms"], terms):
            differ = {k: (options.get(k), v) for k, v in reference.items() if not _matches(options.get(k), v)}
            assert not differ, f"{path}: {name} option != reference: {differ}"
    return cfg


def _matches(got: Any, reference: Any) -> bool:
    """``got == reference``; for a mapping, on the keys the reference lists."""
    if isinstance(reference, dict):
        return isinstance(got, dict) and all(_matches(got.get(k), v) for k, v in reference.items())
    return got == reference


def _family(prefix: str, names: tuple[str, ...] = ()) -> list[str]:
    return [p for p in RECIPES if p.startswith(prefix) and (not names or Path(p).stem in names)]


CIRKD_METHODS = ("baseline", "kd", "skd", "ifvd", "cwd", "cirkd")
CIRKD_CITYSCAPES_RECIPES = _family("cityscapes/", CIRKD_METHODS)
DIST_RECIPES = _family("cityscapes/", ("dist",))
OWN_CIRKD_SETTING = _family("cityscapes/", ("ka", "unlabeled", "cirkd_enqueue_segkd"))
TEACHER_RECIPES = ["cityscapes/teacher_deeplabv3_resnet101.yaml"]
FAMILIES = {
    "cirkd_cityscapes": CIRKD_CITYSCAPES_RECIPES + TEACHER_RECIPES,
    "cirkd_camvid": _family("camvid/"),
    "cirkd_voc": _family("voc/"),
    "dist": DIST_RECIPES,
    "segkd_on_cirkd_setting": OWN_CIRKD_SETTING,
    "skd_original": _family("skd_original/"),
    "ka": _family("ka/"),
}


def test_every_recipe_is_checked_by_exactly_one_family():
    listed = [p for recipes in FAMILIES.values() for p in recipes]
    assert len(listed) == len(set(listed))
    assert set(listed) | NOT_REPRODUCTIONS == set(RECIPES)
    assert len(listed) == 71


def _student_method(path: str) -> tuple[str, str]:
    parts = Path(path).parts
    return parts[1], Path(path).stem


@pytest.mark.parametrize("path", FAMILIES["cirkd_cityscapes"])
def test_cirkd_cityscapes_recipes_match_train_cirkd_and_train_kd(path: str):
    if path in TEACHER_RECIPES:  # train_baseline/citys/deeplabv3_res101.sh with train_baseline.py
        check(path, {**CIRKD_CITYSCAPES, "student": "deeplabv3_resnet101", "student_aux": True,
                     "aux_weight": 0.4,  # train_baseline.py:111-114, :249
                     "pretrained": "pretrained/resnet101-imagenet.pth",  # deeplabv3_res101.sh:8
                     "teacher": None}, [])
        return
    student, method = _student_method(path)
    teacher = CITYSCAPES_TEACHER if method != "baseline" else {"teacher": None}
    check(path, {**CIRKD_CITYSCAPES, **STUDENTS[student], **teacher}, METHODS[method])


@pytest.mark.parametrize("path", FAMILIES["cirkd_camvid"])
def test_cirkd_camvid_recipes_match_the_camvid_scripts_and_eval_py(path: str):
    student, method = _student_method(path)
    teacher = CAMVID_TEACHER if method != "baseline" else {"teacher": None}
    check(path, {**CAMVID, **STUDENTS[student], **teacher}, METHODS[method])


@pytest.mark.parametrize("path", FAMILIES["cirkd_voc"])
def test_cirkd_voc_recipes_match_the_voc_scripts(path: str):
    student, method = _student_method(path)
    teacher = VOC_TEACHER if method != "baseline" else {"teacher": None}
    check(path, {**VOC, **STUDENTS[student], **teacher}, VOC_METHODS[method])


@pytest.mark.parametrize("path", FAMILIES["dist"])
def test_dist_recipes_match_dist_train_kd(path: str):
    student, _ = _student_method(path)
    # DIST's scripts: train_scripts/train_kd/{deeplabv3,pspnet}_res18.sh (the MobileNetV2 one is segkd's)
    check(path, {**DIST, **STUDENTS[student], **CITYSCAPES_TEACHER}, DIST_TERMS)


@pytest.mark.parametrize("path", FAMILIES["segkd_on_cirkd_setting"])
def test_segkd_own_recipes_keep_the_cirkd_setting(path: str):
    """Not published rows: KA's terms, unlabelled images, segkd's enqueue, on the CIRKD Cityscapes setting."""
    student, method = _student_method(path)
    expected = {**CIRKD_CITYSCAPES, **STUDENTS[student], **CITYSCAPES_TEACHER}
    if method == "ka":
        stage1 = {**KA_STAGE1, "iters": KA_EPOCH_STEPS["cityscapes"], "teacher": "deeplabv3_resnet101"}
        check(path, stage1, [], stage=0)
        check(path, expected, KA_TERMS)
    elif method == "unlabeled":  # 2 labelled + 2 unlabelled crops per process: 16 labelled per step
        bundle = [("pseudo_label", 1.0, {"threshold": 0.0, "normalize": "labeled", "images": "unlabeled"}),
                  *DIST_TERMS]  # the bundle's DIST at its reference settings (issue 28)
        cfg = check(path, {**expected, "global_batch": 32}, bundle)
        assert cfg.data.unlabeled is not None and cfg.data.unlabeled.ratio == 0.5
        assert cfg.data.unlabeled.root.endswith("leftImg8bit/train_extra")
        assert cfg.data.batch_size - int(0.5 * cfg.data.batch_size) == 2  # the reference's labelled crops
    else:
        check(path, expected, _cirkd_terms(0.1, enqueue="segkd"))


@pytest.mark.parametrize("path", FAMILIES["skd_original"])
def test_skd_original_recipes_match_the_official_skd_code(path: str):
    stem = Path(path).stem
    net = stem.split("_baseline")[0].split("_skd")[0].removeprefix("teacher_")
    expected = dict(SKD_SETTING)
    if path.startswith("skd_original/camvid/"):
        # SKD f6e6565 README.md:26: "trained ... at a resolution of 480x360", "... on the CamVid test set"
        expected.update(dataset="camvid", crop=[360, 480], score_split="test")
    elif path.startswith("skd_original/ade20k/"):
        expected.update(dataset="ade20k")
    if net == "pspnet_resnet18":
        expected.update(PSP18_SKD)
    elif net == "pspnet_resnet101":
        expected.update(student="pspnet_resnet101", student_aux=True, aux_weight=0.4,
                        pretrained="pretrained/resnet101-imagenet.pth")
    else:
        expected.update(student=net, **SCRATCH)
    if stem.endswith("_skd"):
        expected.update(SKD_TEACHER)
    check(path, expected, SKD_TERMS if stem.endswith("_skd") else [], processes=1)


@pytest.mark.parametrize("path", FAMILIES["ka"])
def test_ka_recipes_match_the_paper_and_torchdistill(path: str):
    dataset = Path(path).parts[1]
    stem = Path(path).stem
    expected = {**KA, "iters": KA_ITERS[dataset]}
    if stem.startswith("teacher_"):
        check(path, {**expected, "student": "deeplabv3plus_resnet50", "teacher": None}, [])
    elif stem.endswith("_baseline"):
        check(path, {**expected, "student": "linear_mobilenetv2", "teacher": None}, [])
    else:
        teacher = {"teacher": "deeplabv3plus_resnet50"}
        check(path, {**KA_STAGE1, "iters": KA_EPOCH_STEPS[dataset], **teacher}, [], stage=0)
        check(path, {**expected, "student": "linear_mobilenetv2", **teacher}, KA_TERMS)
