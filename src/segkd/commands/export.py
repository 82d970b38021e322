"""``segkd export CHECKPOINT [--format onnx|torchscript] [--size HxW] [--dynamic] [--quantize int8]``.

``--quantize int8 [--calib N]`` also writes ``FILE.int8.onnx`` (:mod:`segkd.export.quantize`) and prints
its parity with the float graph on val images.
"""

from __future__ import annotations

import argparse


def parse_size(text: str) -> tuple[int, int]:
    """``"512x1024"`` -> (512, 1024); a clear error otherwise."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HxW (e.g. 512x1024), got '{text}'") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got '{text}'")
    return h, w


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export the student to ONNX / TorchScript and check parity",
        description="Export only the student's inference graph. Input 'images' (N,3,H,W) normalised RGB; "
                    "output 'logits' (N,K,H,W) bilinearly upsampled to the input size. Class names, palette "
                    "and mean/std are stored as metadata. Parity with PyTorch is checked right after export.")
    parser.add_argument("checkpoint", help="segkd checkpoint (.pt) or run directory")
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    parser.add_argument("--size", type=parse_size, default=None,
                        help="example input HxW (default: crop size)")
    parser.add_argument("--dynamic", action="store_true", help="symbolic batch, height and width")
    parser.add_argument("--out", default=None,
                        help="output file (default: next to the checkpoint); an existing file is kept and "
                             "the export numbered (best-2.onnx)")
    parser.add_argument("--atol", type=float, default=1e-3, help="max allowed |logit diff| (default 1e-3)")
    parser.add_argument("--min-agreement", type=float, default=99.0,
                        help="min argmax agreement %% (default 99)")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="also write FILE.int8.onnx: ONNX Runtime static INT8 (QDQ, per-channel weights)")
    parser.add_argument("--calib", type=int, default=64,
                        help="calibration images from the run's training split (default 64)")
    parser.add_argument("--parity-images", type=int, default=16,
                        help="val images on which INT8 is compared with float (default 16)")
    parser.add_argument("--reduce-range", action="store_true",
                        help="7-bit weights (ORT's remedy for U8S8 saturation on CPUs without VNNI)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segkd.export import export_student

    if args.quantize and args.format != "onnx":
        raise ValueError("--quantize int8 needs --format onnx")
    result = export_student(args.checkpoint, args.out, args.format, args.size, args.dynamic,
                            atol=args.atol, min_agreement=args.min_agreement)
    print(f"exported {result.format} ({result.exporter} exporter) -> {result.path}")
    print(result.parity)
    if args.quantize:
        from segkd.export.quantize import quantize_student

        q = quantize_student(args.checkpoint, result.path, args.calib, args.parity_images,
                             reduce_range=args.reduce_range)
        print(f"quantized INT8 (QDQ, per-channel, {q.calib_images} calibration images) -> {q.path}")
        p = q.parity
        print(f"INT8 vs float ONNX on {len(p.shapes)} val images: max |logit diff| = {p.max_abs_diff:.3g}, "
              f"argmax agreement = {p.argmax_agreement:.3f}%")
    return 0
