"""``segkd profile MODEL``: params and MACs in the paper's and the deployment convention, optional latency."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``profile`` sub-command."""
    parser = subparsers.add_parser(
        "profile", help="count params and MACs (paper and deployment conventions), optional CPU latency"
    )
    parser.add_argument("model", help="model name, e.g. deeplabv3_resnet18 or pspnet_<timm name>")
    parser.add_argument("--size", default="1024x2048", help="input size HxW (default 1024x2048)")
    parser.add_argument("--num-classes", type=int, default=19, help="number of classes (default 19)")
    parser.add_argument("--output-stride", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--latency", action="store_true", help="also measure median CPU forward time")
    parser.add_argument(
        "--runs", type=int, default=10, help="timed runs for --latency (after 2 warm-up runs)"
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.set_defaults(func=run)


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' (or a single 'S' for SxS) -> (H, W)."""
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--size must look like 512x1024, got {text!r}") from None
    if len(sizes) == 1:
        sizes *= 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise ValueError(f"--size must look like 512x1024, got {text!r}")
    return sizes[0], sizes[1]


def run(args: argparse.Namespace) -> int:
    import torch

    from segkd.models import build_model
    from segkd.models.profile import profile_model

    size = parse_size(args.size)
    if args.latency:  # real weights are needed to time the forward
        model = build_model(args.model, args.num_classes, output_stride=args.output_stride)
    else:  # shapes only: instant and memory-free even for ResNet-101 at 1024x2048
        with torch.device("meta"):
            model = build_model(args.model, args.num_classes, output_stride=args.output_stride)
    result = profile_model(model, size, latency=args.latency, latency_runs=args.runs)
    result["model"] = args.model
    result["num_classes"] = args.num_classes
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def format_table(result: dict[str, Any]) -> str:
    """Human-readable side-by-side table of the two conventions."""
    h, w = result["input_size"]
    paper, deploy = result["paper"], result["deploy"]
    rows = [
        f"{result['model']}  ({result['num_classes']} classes, input 1x3x{h}x{w})",
        f"{'':28s}{'(a) paper table':>18s}{'(b) deployment':>18s}",
        f"{'params (M)':28s}{paper['params'] / 1e6:18.2f}{deploy['params'] / 1e6:18.2f}",
        f"{'GMACs':28s}{_g(paper['macs']):>18s}{_g(deploy['macs']):>18s}",
    ]
    rows += [f"{'  (b) ' + k:28s}{'':18s}{_g(v):>18s}" for k, v in deploy["breakdown"].items()]
    rows += [
        "(a) CIRKD table rule: Conv2d+Linear MACs only, output size ignoring dilation, aux head included.",
        "(b) no aux head, true output sizes, convs+linear+norm+activations+pooling+interpolation.",
        "MACs = multiply-accumulates; FLOPs = 2 x MACs.",
    ]
    if result.get("latency"):
        lat = result["latency"]
        rows.append(
            f"CPU latency: median {lat['median_ms']:.1f} ms, min {lat['min_ms']:.1f} ms over "
            f"{lat['runs']} runs ({lat['threads']} threads)"
        )
    return "\n".join(rows)


def _g(macs: float) -> str:
    """GMACs with one decimal, or four for small models."""
    return f"{macs / 1e9:.1f}" if macs >= 1e10 else f"{macs / 1e9:.4f}"
