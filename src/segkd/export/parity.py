"""Parity check between the PyTorch model and its exported copy, run right after export."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from segkd.export.runners import Runner


class ParityError(ValueError):
    """The exported model disagrees with PyTorch beyond the tolerance."""


@dataclass
class ParityReport:
    """Max absolute logit difference and argmax agreement (% of pixels) over the checked inputs."""

    max_abs_diff: float
    argmax_agreement: float
    shapes: list[list[int]]

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        sizes = ", ".join("x".join(map(str, s)) for s in self.shapes)
        return (f"parity on inputs {sizes}: max |logit diff| = {self.max_abs_diff:.3g}, "
                f"argmax agreement = {self.argmax_agreement:.3f}%")


def compare(reference: Runner, exported: Runner, inputs: list[np.ndarray]) -> ParityReport:
    """Run both on every input (N,3,H,W) and aggregate the max |diff| and the argmax agreement."""
    max_diff, agree, total = 0.0, 0, 0
    for images in inputs:
        ref = reference(images)
        try:
            out = exported(images)
        except Exception as err:  # noqa: BLE001 - any runtime failure is a parity failure
            raise ParityError(
                f"the exported model fails on input shape {list(images.shape)}: "
                f"{str(err).splitlines()[0][:300]}"
                " (graphs with size-dependent ops such as PSPNet's adaptive pooling cannot be exported with "
                "dynamic shapes; export at a fixed --size)") from err
        if ref.shape != out.shape:
            raise ParityError(f"exported model returns shape {out.shape}, PyTorch {ref.shape}")
        max_diff = max(max_diff, float(np.abs(ref - out).max()))
        agree += int((ref.argmax(1) == out.argmax(1)).sum())
        total += ref.shape[0] * ref.shape[2] * ref.shape[3]
    return ParityReport(max_diff, 100.0 * agree / max(total, 1), [list(x.shape) for x in inputs])


def check(report: ParityReport, atol: float, min_agreement: float, path: str) -> None:
    """Raise :class:`ParityError` with both numbers when the report breaks a tolerance."""
    if not np.isfinite(report.max_abs_diff) or report.max_abs_diff > atol:
        raise ParityError(f"{path}: parity check failed: max |logit diff| {report.max_abs_diff:.3g} > "
                          f"tolerance {atol:g} (argmax agreement {report.argmax_agreement:.3f}%)")
    if report.argmax_agreement < min_agreement:
        raise ParityError(f"{path}: parity check failed: argmax agreement {report.argmax_agreement:.3f}% < "
                          f"{min_agreement}% (max |logit diff| {report.max_abs_diff:.3g})")


def parity_inputs(size: tuple[int, int], dynamic: bool, seed: int = 0) -> list[np.ndarray]:
    """Random normalised inputs: two single images at the export size; with ``dynamic`` a batch of 2 at
    that size and one image at another size instead."""
    rng = np.random.default_rng(seed)
    h, w = size
    if not dynamic:
        return [rng.standard_normal((1, 3, h, w), dtype=np.float32) for _ in range(2)]
    return [rng.standard_normal((2, 3, h, w), dtype=np.float32),
            rng.standard_normal((1, 3, h + h // 2, w // 2 + 8), dtype=np.float32)]
