"""``segkd bench cache``: what a teacher cache costs and how far its targets are from the live teacher's.

:func:`bench_cache_targets` (on the config's teacher and validation images, with the config's training
augmentation): per image, the full-image teacher logits are stored as float32 / float16 / top-k, replayed
through M augmented crops (:mod:`segkd.cache.replay`) and compared with the live teacher run on each crop:
mean per-pixel ``KL(live || replayed)`` at T = 1 and T = 4 and the argmax agreement; the same for the FKD
alternative (R crops per image stored in advance, :mod:`segkd.cache.fkd`), with storage and augmentation
diversity over E epochs. :func:`cityscapes_sizes`: the bytes of real entry files of Cityscapes shapes
(2975 images, 19 classes, 1024x2048, logits at 1/8). :func:`bench_cache_step`: the training step with
cached targets against the plain student step and the live-teacher step (round-robin, per-round ratios).
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkd.cache.codec import decode, encode, pixel_kl
from segkd.cache.fkd import coverage, crop_window, distinct
from segkd.cache.replay import replay
from segkd.cache.store import write_entry
from segkd.cache.writer import teacher_maps
from segkd.config_schema import ExperimentConfig


def _variants(topks: list[int]) -> list[tuple[str, str, int]]:
    return [("float32", "float32", 0), ("float16", "float16", 0)] + [(f"top{k}", "topk", k) for k in topks]


@torch.no_grad()
def bench_cache_targets(cfg: ExperimentConfig, images: int = 8, crops: int = 8, fkd_crops: int = 4,
                        epochs: int = 100, topks: list[int] | None = None) -> dict[str, Any]:
    """Replay and compression error against the live teacher, and the FKD alternative (module doc)."""
    from segkd.data import build_dataset_from_config
    from segkd.data.transforms import TrainTransform, build_transforms
    from segkd.engine import builder

    topks = topks or [1, 2, 4, 8]
    val = build_dataset_from_config(cfg.data, cfg.data.val_split, train=False, convention=cfg.model.input)
    train_tf = build_transforms(cfg.data, train=True, convention=cfg.model.input)
    assert isinstance(train_tf, TrainTransform)
    teacher = builder.build_teacher(cfg, cfg.model.num_classes or val.num_classes, list(val.class_names))
    n = min(images, len(val))
    variants = _variants(topks)
    rows: dict[str, dict[str, list[float]]] = {v[0]: {"kl_t1": [], "kl_t4": [], "agree": [], "full_kl_t1": [],
                                                      "bytes": [], "label_acc": []} for v in variants}
    live_acc: list[float] = []
    fkd: dict[str, list[float]] = {"kl_t1": [], "bytes": [], "coverage": [], "distinct": []}
    replay_cov, replay_distinct, entropy = [], [], []
    control: dict[str, list[float]] = {"kl_t1": [], "kl_t4": [], "agree": []}  # geometry ignored
    for i in range(n):
        image, label, _ = val.load(i)
        full = teacher_maps(teacher, val[i]["image"][None], ["logits"])["logits"][0].float()
        stored = {}
        for name, codec, k in variants:
            enc = encode(full, codec, "logits", k)
            stored[name] = decode(enc)
            rows[name]["bytes"].append(sum(t.numel() * t.element_size() for t in enc.values()
                                           if isinstance(t, torch.Tensor)))
            rows[name]["full_kl_t1"].append(float(pixel_kl(full, stored[name])))
        for j in range(crops):
            torch.manual_seed(1_000_003 * i + j)
            img, lbl, params = train_tf.sample(image, label)
            live = teacher(img[None]).logits[0].float()
            live_acc.append(_label_accuracy(live, lbl))
            probs = live.softmax(0)
            entropy.append(float(-(probs * probs.clamp_min(1e-12).log()).sum(0).mean()))
            naive = torch.nn.functional.interpolate(full[None], size=tuple(live.shape[-2:]), mode="bilinear",
                                                    align_corners=False)[0]
            control["kl_t1"].append(float(pixel_kl(live, naive, 1.0)))
            control["kl_t4"].append(float(pixel_kl(live, naive, 4.0)))
            control["agree"].append(float((naive.argmax(0) == live.argmax(0)).float().mean()))
            for name in stored:
                rep = replay(stored[name], params, tuple(live.shape[-2:]))
                rows[name]["kl_t1"].append(float(pixel_kl(live, rep, 1.0)))
                rows[name]["kl_t4"].append(float(pixel_kl(live, rep, 4.0)))
                rows[name]["agree"].append(float((rep.argmax(0) == live.argmax(0)).float().mean()))
                rows[name]["label_acc"].append(_label_accuracy(rep, lbl))
        # FKD: R crops drawn once, their live targets stored (float16); every epoch picks one of them.
        fixed = []
        for r in range(fkd_crops):
            torch.manual_seed(7_000_001 * (i + 1) + r)
            img, _, params = train_tf.sample(image, label)
            live = teacher(img[None]).logits[0].float()
            fkd["kl_t1"].append(float(pixel_kl(live, decode(encode(live, "float16", "logits")))))
            fixed.append(params)
        fkd["bytes"].append(fkd_crops * live.numel() * 2)
        epochs_params = []
        for e in range(epochs):
            torch.manual_seed(9_000_011 * (i + 1) + e)
            epochs_params.append(train_tf.sample(image, label)[2])
        size = tuple(image.shape[:2])
        replay_cov.append(coverage([crop_window(p) for p in epochs_params], size))
        replay_distinct.append(distinct(epochs_params))
        fkd["coverage"].append(coverage([crop_window(p) for p in fixed], size))
        fkd["distinct"].append(min(distinct(fixed), epochs))
    mean = lambda v: float(np.mean(v)) if v else None  # noqa: E731
    out_rows = [{"target": f"replay {name}", "kl_t1": mean(r["kl_t1"]), "kl_t1_p90": float(np.percentile(
                    r["kl_t1"], 90)), "kl_t4": mean(r["kl_t4"]), "argmax_agree": mean(r["agree"]),
                 "stored_kl_t1": mean(r["full_kl_t1"]), "bytes_per_image": mean(r["bytes"]),
                 "distinct_geometries": mean(replay_distinct), "coverage": mean(replay_cov),
                 "label_acc": mean(r["label_acc"])}
                for name, r in rows.items()]
    out_rows.append({"target": "control: full map resized to the crop (no replay)",
                     "kl_t1": mean(control["kl_t1"]),
                     "kl_t1_p90": float(np.percentile(control["kl_t1"], 90)), "kl_t4": mean(control["kl_t4"]),
                     "argmax_agree": mean(control["agree"]), "stored_kl_t1": 0.0,
                     "bytes_per_image": rows["float32"]["bytes"][0], "distinct_geometries": None,
                     "coverage": None, "label_acc": None})
    out_rows.append({"target": f"FKD {fkd_crops} crops float16", "kl_t1": mean(fkd["kl_t1"]),
                     "kl_t1_p90": float(np.percentile(fkd["kl_t1"], 90)), "kl_t4": None, "argmax_agree": 1.0,
                     "stored_kl_t1": mean(fkd["kl_t1"]), "bytes_per_image": mean(fkd["bytes"]),
                     "distinct_geometries": mean(fkd["distinct"]), "coverage": mean(fkd["coverage"]),
                     "label_acc": mean(live_acc)})
    t = cfg.distill.teacher
    return {"teacher": t.name if t else None, "checkpoint": t.checkpoint if t else None, "images": n,
            "crops_per_image": crops, "epochs": epochs, "crop_size": list(cfg.data.crop_size),
            "scale_range": list(cfg.data.scale_range), "flip": cfg.data.flip,
            "live_entropy": mean(entropy), "rows": out_rows}


def _label_accuracy(logits: torch.Tensor, label: torch.Tensor, ignore_index: int = 255) -> float:
    """Pixel accuracy of a (K, h, w) target's argmax, nearest-upsampled to the (H, W) label."""
    pred = torch.nn.functional.interpolate(logits[None], size=tuple(label.shape), mode="bilinear",
                                           align_corners=False)[0].argmax(0)
    valid = label != ignore_index
    return float((pred[valid] == label[valid]).float().mean()) if valid.any() else float("nan")


def cityscapes_sizes(num_images: int = 2975, classes: int = 19, image: tuple[int, int] = (1024, 2048),
                     stride: int = 8, feat_channels: int = 256, crop: tuple[int, int] = (512, 1024),
                     fkd_crops: int = 4, topks: tuple[int, ...] = (2, 4, 8)) -> dict[str, Any]:
    """Bytes of real entry files (written with :func:`segkd.cache.store.write_entry`) of Cityscapes
    shapes, per image and for the split."""
    h, w = -(-image[0] // stride), -(-image[1] // stride)
    ch, cw = -(-crop[0] // stride), -(-crop[1] // stride)
    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(classes, h, w, generator=g)
    layouts = {"logits float32": {"logits": encode(logits, "float32", "logits")},
               "logits float16": {"logits": encode(logits, "float16", "logits")}}
    for k in topks:
        layouts[f"logits top-{k}"] = {"logits": encode(logits, "topk", "logits", k)}
    layouts[f"feat float16 ({feat_channels} ch)"] = {
        "feat": encode(torch.randn(feat_channels, h, w, generator=g), "float16", "feat")}
    crop_logits = encode(4 * torch.randn(classes, ch, cw, generator=g), "float16", "logits")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, maps in layouts.items():
            path = write_entry(Path(tmp), "train", 0, {"name": "x", "size": list(image), "maps": maps})
            per_image = path.stat().st_size
            rows.append({"layout": name, "map": f"{h}x{w}", "bytes_per_image": per_image,
                         "split_gib": per_image * num_images / 2**30})
            path.unlink()
        entry = {"name": "x", "size": list(crop), "maps": {"logits": crop_logits}}
        path = write_entry(Path(tmp), "train", 0, entry)
        per_image = fkd_crops * path.stat().st_size
        rows.append({"layout": f"FKD {fkd_crops} crops {crop[0]}x{crop[1]} float16", "map": f"{ch}x{cw}",
                     "bytes_per_image": per_image, "split_gib": per_image * num_images / 2**30})
    return {"images": num_images, "classes": classes, "image": list(image), "stride": stride, "rows": rows}


def _loader_cost(classes: int, map_size: tuple[int, int], crop: tuple[int, int], reps: int = 20) -> float:
    """Median ms per sample of reading a float16 logits entry of ``map_size``, decoding and replaying it
    (paid in the data loader, once per sample)."""
    from segkd.cache.store import entry_path
    from segkd.checkpoint_io import read_checkpoint
    from segkd.data.transforms import AugmentParams

    maps = {"logits": encode(torch.randn(classes, *map_size), "float16", "logits")}
    image = (map_size[0] * 8, map_size[1] * 8)
    params = AugmentParams(image, image, (0, 0), crop, True)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        write_entry(Path(tmp), "train", 0, {"name": "x", "size": list(image), "maps": maps})
        for _ in range(reps):
            tic = time.perf_counter()
            entry = read_checkpoint(entry_path(Path(tmp), "train", 0))
            replay(decode(entry["maps"]["logits"]), params, (-(-crop[0] // 8), -(-crop[1] // 8)))
            times.append(time.perf_counter() - tic)
    return 1e3 * float(np.median(times))


def bench_cache_step(cfg: ExperimentConfig, rounds: int = 5, warmup: int = 1,
                     num_classes: int = 19) -> dict[str, Any]:
    """Per-step time of the plain student, pixel KD on cached (replayed) targets and pixel KD with the live
    teacher, all with :meth:`Distiller.train_step` and the engine's optimizers, timed round-robin (one
    step of each per round) on one random batch; ratios to the plain step per round (median, min, max)."""
    from segkd.bench.timing import time_calls
    from segkd.engine.distiller import Distiller, StepSettings, distill_spec
    from segkd.engine.optim import build_optimizers
    from segkd.losses import build_loss
    from segkd.models import build_model_from_config

    device = "cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu"
    k = cfg.model.num_classes or num_classes
    clean = lambda m: dataclasses.replace(m, checkpoint=None, pretrained=False)  # noqa: E731
    student0 = build_model_from_config(clean(cfg.model), k).to(device)
    assert cfg.distill.teacher is not None
    teacher = build_model_from_config(clean(cfg.distill.teacher), k, key="distill.teacher")
    teacher = teacher.to(device).eval().requires_grad_(False)
    h, w = cfg.data.crop_size
    g = torch.Generator().manual_seed(0)
    images = torch.randn(cfg.data.batch_size, 3, h, w, generator=g).to(device)
    labels = torch.randint(0, k, (cfg.data.batch_size, h, w), generator=g).to(device)
    with torch.no_grad():
        cached = teacher(images).logits.float()
    spec = distill_spec(student0, teacher, k)
    settings = StepSettings(cfg.train.amp, cfg.train.grad_clip, device)

    def make(kind: str):
        losses = {} if kind == "student" else {"kd": build_loss("kd", spec)}
        t = teacher if kind == "live" else (None if kind == "student" else teacher)
        distiller = Distiller(copy.deepcopy(student0), t, losses, {"kd": 1.0} if losses else {},
                              cfg.distill.aux_weight, settings=settings).to(device).train()
        batch = {"image": images, "label": labels}
        if kind == "cached":
            distiller.cache_terms = frozenset({"kd"})
            distiller.teacher = None
            batch["teacher.logits"] = cached
        optimizers = build_optimizers(distiller, cfg)
        return lambda: distiller.train_step([batch], optimizers)

    steps = {kind: make(kind) for kind in ("student", "cached", "live")}
    for step in steps.values():
        time_calls(step, 0, warmup, device)
    times: dict[str, list[float]] = {kind: [] for kind in steps}
    for _ in range(rounds):
        for kind, step in steps.items():
            times[kind] += time_calls(step, 1, 0, device)
    plain = np.asarray(times["student"])
    rows = []
    for kind, values in times.items():
        arr = np.asarray(values)
        ratio = arr / plain
        rows.append({"step": kind, "median_s": float(np.median(arr)), "min_s": float(arr.min()),
                     "max_s": float(arr.max()), "ratio_median": float(np.median(ratio)),
                     "ratio_min": float(ratio.min()), "ratio_max": float(ratio.max()), "times_s": values})
    crop = (int(h), int(w))
    return {"student": cfg.model.name, "teacher": cfg.distill.teacher.name, "batch": cfg.data.batch_size,
            "crop_size": [h, w], "device": device, "threads": torch.get_num_threads(), "rounds": rounds,
            "rows": rows,
            "loader_ms_per_sample": {
                "crop map from a Cityscapes entry (19x128x256 float16)": _loader_cost(19, (128, 256), crop),
                f"crop map from a {h}x{w} entry": _loader_cost(k, (-(-h // 8), -(-w // 8)), crop)}}
