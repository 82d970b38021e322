"""The student's strongly augmented view of the unlabelled images (``distill.strong_augment``).

Noisy Student (Xie et al., "Self-training with Noisy Student improves ImageNet classification", CVPR 2020)
trains the student on a noised input against the teacher's targets on the clean one; FixMatch (Sohn et al.,
NeurIPS 2020) does the same with a weak view for the teacher's pseudo-label and a strong view for the
student. For segmentation the noise must keep every pixel where it is, so this view is photometric only:
the strong pipeline of ST++ / UniMatch (Yang et al., CVPR 2022 / 2023, ``dataset/semi.py``) without its
CutMix: colour jitter (brightness 0.5, contrast 0.5, saturation 0.5, hue 0.25) with p = 0.8, grayscale
with p = 0.2, Gaussian blur (sigma in [0.1, 2]) with p = 0.5, each drawn per image from torch's global
generator (seeded runs repeat).

Only the unlabelled images (``labeled == False``) are changed; the teacher and every labelled image see the
batch as loaded. The transforms are torchvision's (``transforms.v2``), applied to RGB in [0, 1] recovered
from the student's input convention and converted back.
"""

from __future__ import annotations

import torchvision.transforms.v2 as T
from torch import Tensor

from segkd.config_schema import InputConfig
from segkd.input_convention import denormalize, to_input


class StrongAugment:
    """``view(images, labeled) -> images'``: (N, 3, H, W) network inputs, the unlabelled ones noised."""

    def __init__(self, convention: InputConfig, blur_kernel: int = 9) -> None:
        self.convention = convention
        self.transform = T.Compose([
            T.RandomApply([T.ColorJitter(0.5, 0.5, 0.5, 0.25)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([T.GaussianBlur(blur_kernel, sigma=(0.1, 2.0))], p=0.5),
        ])

    def __call__(self, images: Tensor, labeled: Tensor | None) -> Tensor:
        if labeled is None or bool(labeled.all()):
            return images
        out = images.clone()
        for i in (~labeled).nonzero().squeeze(1).tolist():
            rgb = denormalize(images[i].detach().float(), self.convention).clamp(0.0, 1.0)
            out[i] = to_input(self.transform(rgb), self.convention).to(images.dtype)
        return out
