"""``segkd predict MODEL_OR_CHECKPOINT IMAGES... [--out DIR]``."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="segment image files with a checkpoint or an exported model",
        description="Writes OUT/labels/<name>.png (palette PNG, pixel value = class id) and "
                    "OUT/overlays/<name>.png (colour overlay) for every image; an image found in a folder "
                    "keeps its path relative to that folder. Files that are not readable images are skipped "
                    "with a warning and listed at the end (exit code 1). An OUT that holds earlier "
                    "predictions is kept: the new ones go to OUT-2 (OUT-3 ...), and the command says so.")
    parser.add_argument("model", help="segkd checkpoint, run directory, .onnx or TorchScript (.ts) file")
    parser.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    parser.add_argument("--out", default="predictions",
                        help="output folder (default: predictions; OUT-2 ... when it holds earlier output)")
    parser.add_argument("--device", default="cpu", help="torch device for checkpoints/TorchScript")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the labels")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segkd.export import load_model
    from segkd.export.predict import collect_images, predict_files
    from segkd.outputs import new_output

    out = new_output(args.out, "predict", folder=True)
    model = load_model(args.model, args.device)
    images = collect_images(args.images)
    result = predict_files(model, images, out, progress=not args.no_progress, alpha=args.alpha)
    print(f"wrote {len(result.written)} label PNGs and overlays to {out} ({model.kind} model)")
    if result.skipped:
        print(f"segkd predict: skipped {len(result.skipped)} of {len(images)} file(s) that are not readable "
              "images:", file=sys.stderr)
        for path, _ in result.skipped:
            print(f"  - {path}", file=sys.stderr)
        return 1
    return 0
