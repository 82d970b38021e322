"""``segkd bench distill|loss|infer|data``: benchmarks as commands (tables on stdout, JSON on disk)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from segkd.commands.export import parse_size


def _sizes(text: str) -> tuple[int, int, int]:
    """``BxHxW`` -> (batch, h, w) for ``bench loss --sizes``."""
    try:
        b, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        msg = f"loss sizes look like BxHxW (e.g. 8x64x128), got '{text}'"
        raise argparse.ArgumentTypeError(msg) from None
    return b, h, w


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks: distillation step, one loss, inference, data")
    sub = parser.add_subparsers(dest="bench", metavar="WHAT", required=True)

    distill = sub.add_parser("distill", help="time and peak memory of each method's training step")
    distill.add_argument("config", help="experiment YAML (student, teacher, data sizes)")
    distill.add_argument("overrides", nargs="*", metavar="key=value")
    distill.add_argument("--methods", nargs="+", default=None, help="loss names or bundles (default: all)")
    distill.add_argument("--iters", type=int, default=10)
    distill.add_argument("--warmup", type=int, default=2)
    distill.add_argument("--options", choices=("recipes", "demo"), default="recipes",
                         help="loss terms, weights and options: the recipes' (default) or the demo's")
    distill.set_defaults(func=run_distill)

    loss = sub.add_parser("loss", help="one loss's forward+backward vs the naive reference as size grows")
    loss.add_argument("name", help="registered loss name (e.g. skd_pairwise, cirkd_batch_p2p)")
    loss.add_argument("--sizes", nargs="+", type=_sizes, default=[(2, 32, 64), (8, 64, 128), (16, 128, 256)],
                      metavar="BxHxW", help="feature-map sizes (batch x h x w)")
    loss.add_argument("--channels", type=int, nargs=2, default=[128, 256], metavar=("CS", "CT"))
    loss.add_argument("--num-classes", type=int, default=19)
    loss.add_argument("--iters", type=int, default=3)
    loss.add_argument("--no-naive", action="store_true", help="skip the naive reference")
    loss.set_defaults(func=run_loss)

    infer = sub.add_parser("infer", help="inference latency: PyTorch eager / torch.compile / ONNX Runtime")
    infer.add_argument("model", nargs="+",
                       help="registered model name (random init) or checkpoint / run directory; or one "
                            "or more .onnx files (e.g. float then INT8), timed in interleaved --rounds")
    infer.add_argument("--size", type=parse_size, default=(512, 1024), help="input HxW (default 512x1024)")
    infer.add_argument("--num-classes", type=int, default=19)
    infer.add_argument("--batch", type=int, default=1)
    infer.add_argument("--iters", type=int, default=20)
    infer.add_argument("--warmup", type=int, default=3)
    infer.add_argument("--threads", type=int, default=None, help="CPU threads for every runtime")
    infer.add_argument("--device", action="append", default=None, help="cpu / cuda (default: all present)")
    infer.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    infer.add_argument("--rounds", type=int, default=5, help="interleaved rounds when timing .onnx files")
    infer.set_defaults(func=run_infer)

    cache = sub.add_parser("cache", help="teacher cache: replayed vs live targets, FKD, sizes, step cost")
    cache.add_argument("config", help="experiment YAML (teacher, data, augmentation)")
    cache.add_argument("overrides", nargs="*", metavar="key=value")
    cache.add_argument("--what", nargs="+", choices=("targets", "sizes", "step"),
                       default=["targets", "sizes"],
                       help="targets: KL of replayed / FKD targets to the live teacher's on augmented val "
                            "crops; sizes: Cityscapes-shaped entry files; step: training step plain / "
                            "cached / live")
    cache.add_argument("--images", type=int, default=8, help="validation images (targets)")
    cache.add_argument("--crops", type=int, default=8, help="augmented crops per image (targets)")
    cache.add_argument("--fkd-crops", type=int, default=4,
                       help="crops stored per image by the FKD alternative")
    cache.add_argument("--epochs", type=int, default=100, help="epochs for the augmentation-diversity count")
    cache.add_argument("--rounds", type=int, default=5, help="round-robin rounds (step)")
    cache.set_defaults(func=run_cache)

    data = sub.add_parser("data", help="input pipeline: loader images/s next to the training step's")
    data.add_argument("config", help="experiment YAML (dataset, loader settings, models)")
    data.add_argument("overrides", nargs="*", metavar="key=value")
    data.add_argument("--batches", type=int, default=10, help="batches timed per measurement")
    data.add_argument("--warmup", type=int, default=2)
    data.add_argument("--generate", type=int, default=0, metavar="N",
                      help="write N Cityscapes-sized (1024x2048) PNG pairs in the Cityscapes layout to a "
                           "temporary folder and read those (data.name becomes cityscapes)")
    data.add_argument("--loader-batches", type=int, default=None,
                      help="batches for the loader-alone rate (default --batches; use several times "
                           "workers x prefetch_factor)")
    data.add_argument("--no-step", action="store_true", help="measure the loader only")
    data.set_defaults(func=run_data)

    for p in (distill, loss, infer, cache, data):
        p.add_argument("--out", "--json", dest="json", default=None,
                       help="write results here (default: bench_<what>_<subject>.json, numbered when taken)")
        p.add_argument("--debug", action="store_true", help="show full tracebacks")


def output_path(what: str, subject: list[str], explicit: str | None = None) -> Path:
    """``--out`` as given, else ``bench_<what>_<subject>.json`` named by what was measured; an existing
    file is never replaced (``-2``, ``-3`` ... are appended) and the folder is checked writable, before
    anything is measured."""
    from segkd.outputs import new_output

    if explicit:
        path = Path(explicit)
    else:
        slug = re.sub(r"[^A-Za-z0-9_.+-]+", "-", "_".join(subject)).strip("-")[:80]
        path = Path(f"bench_{what}_{slug}.json")
    return new_output(path, f"bench {what}")


def _write(result: dict, table: str, path: Path) -> int:
    from segkd.outputs import write_text

    print(table)
    write_text(path, json.dumps(result, indent=2))
    print(f"\nwrote {path}")
    return 0


def run_infer(args: argparse.Namespace) -> int:
    from segkd.bench.infer import bench_infer, bench_onnx_files, infer_table, onnx_files_table

    if all(m.endswith(".onnx") for m in args.model):
        path = output_path(args.bench, [Path(m).stem for m in args.model], args.json)
        result = bench_onnx_files(args.model, args.iters, args.warmup, args.rounds, args.threads)
        return _write(result, onnx_files_table(result), path)
    if len(args.model) != 1:
        raise ValueError("bench infer: give one model name / checkpoint, or only .onnx files")
    size = f"{args.size[0]}x{args.size[1]}"
    path = output_path(args.bench, [Path(args.model[0]).name, size, f"b{args.batch}"], args.json)
    result = bench_infer(args.model[0], args.size, args.num_classes, args.batch, args.iters, args.warmup,
                         args.device, not args.no_compile, args.threads)
    return _write(result, infer_table(result), path)


def run_loss(args: argparse.Namespace) -> int:
    from segkd.bench.loss import bench_loss, loss_table

    sizes = ["x".join(map(str, size)) for size in args.sizes]
    path = output_path(args.bench, [args.name, *sizes], args.json)
    result = bench_loss(args.name, args.sizes, tuple(args.channels), args.num_classes, args.iters,
                        naive=not args.no_naive)
    return _write(result, loss_table(result), path)


def run_distill(args: argparse.Namespace) -> int:
    from segkd.bench.distill import bench_distill, distill_table
    from segkd.config import load_config

    cfg = load_config(args.config, args.overrides)
    subject = [Path(args.config).stem if args.config else "default", args.options, *(args.methods or ["all"])]
    path = output_path(args.bench, subject, args.json)
    result = bench_distill(cfg, args.methods, args.iters, args.warmup, options=args.options)
    return _write(result, distill_table(result), path)


def run_cache(args: argparse.Namespace) -> int:
    from segkd.bench.cache import bench_cache_step, bench_cache_targets, cityscapes_sizes
    from segkd.bench.table import markdown_table
    from segkd.config import load_config

    cfg = load_config(args.config, args.overrides)
    path = output_path(args.bench, [Path(args.config).stem, *args.what], args.json)
    result: dict = {}
    tables = []
    if "targets" in args.what:
        res = bench_cache_targets(cfg, args.images, args.crops, args.fkd_crops, args.epochs)
        result["targets"] = res
        head = (f"teacher {res['teacher']} ({res['checkpoint']}), {res['images']} val images x "
                f"{res['crops_per_image']} crops {res['crop_size']}, scale {res['scale_range']}, flip "
                f"{res['flip']}; live targets' mean entropy {res['live_entropy']:.3f} nats; diversity over "
                f"{res['epochs']} epochs\n\n")
        tables.append(head + markdown_table(
            ["target", "KL T=1", "KL T=1 p90", "KL T=4", "argmax agree", "stored KL T=1", "bytes/img",
             "distinct geometries", "coverage", "label acc"],
            [[r["target"], _sci(r["kl_t1"]), _sci(r["kl_t1_p90"]), _sci(r["kl_t4"]), r["argmax_agree"],
              _sci(r["stored_kl_t1"]),
              r["bytes_per_image"], r["distinct_geometries"], r["coverage"], r["label_acc"]]
             for r in res["rows"]]))
    if "sizes" in args.what:
        res = cityscapes_sizes(fkd_crops=args.fkd_crops)
        result["sizes"] = res
        tables.append(f"{res['images']} images, {res['classes']} classes, {res['image']}, maps at 1/"
                      f"{res['stride']}\n\n" + markdown_table(
                          ["layout", "map", "bytes/image", "split GiB"],
                          [[r["layout"], r["map"], r["bytes_per_image"], r["split_gib"]]
                           for r in res["rows"]]))
    if "step" in args.what:
        res = bench_cache_step(cfg, args.rounds)
        result["step"] = res
        tables.append(f"student {res['student']}, teacher {res['teacher']}, batch {res['batch']} x "
                      f"{res['crop_size']}, {res['device']}, {res['threads']} threads, "
                      f"{res['rounds']} rounds\n\n"
                      + markdown_table(["step", "median s", "min s", "max s", "ratio median", "ratio min",
                                        "ratio max"],
                                       [[r["step"], r["median_s"], r["min_s"], r["max_s"], r["ratio_median"],
                                         r["ratio_min"], r["ratio_max"]] for r in res["rows"]])
                      + "\n\nloader ms per sample (read + decode + replay): "
                      + ", ".join(f"{k}: {v:.2f}" for k, v in res["loader_ms_per_sample"].items()))
    return _write(result, "\n\n".join(tables), path)


def _sci(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2e}"


def run_data(args: argparse.Namespace) -> int:
    import tempfile

    from segkd.bench.data import bench_data, data_table, write_cityscapes_like
    from segkd.config import load_config

    cfg = load_config(args.config, args.overrides)
    path = output_path(args.bench, [Path(args.config).stem, f"w{cfg.data.workers}"], args.json)
    with tempfile.TemporaryDirectory(prefix="segkd_bench_data_") as tmp:
        if args.generate:
            root = write_cityscapes_like(tmp, args.generate)
            cfg.data.name, cfg.data.root, cfg.data.train_split = "cityscapes", str(root), "train"
            cfg.data.options = {}
        result = bench_data(cfg, args.batches, args.warmup, not args.no_step, args.loader_batches)
    result["generated"] = args.generate
    return _write(result, data_table(result), path)
