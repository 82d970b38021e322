"""What every external teacher shares: safe weight loading, the feature hook, class mapping, the adapter.

An external network (an mmsegmentation, Hugging Face or torchvision model) becomes a segkd teacher through
:class:`TeacherAdapter`, which returns the same named outputs as a segkd :class:`Segmentor`:

* ``logits`` (N, K, h, w): the network's class scores, mapped to the dataset's K classes
  (:class:`ClassMap`) and bilinearly resized (``align_corners=False``) to the student's grid
  h, w = ceil(H / s), ceil(W / s), s the student's output stride;
* ``feat`` (N, C, h, w): the output (or, with ``NAME:input``, the input) of one module of the network,
  captured by a forward hook (:class:`FeatureHook`) and resized the same way; feature terms then align
  C to the student with their usual channel adapters.

The adapter also converts the student's input convention into the teacher's
(:class:`segkd.models.input_adapter.InputConverter`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segkd.checkpoint_io import UnsafeCheckpointError, read_checkpoint
from segkd.models.checkpoints import CheckpointError
from segkd.models.outputs import SegOutput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ClassMismatchError(ValueError):
    """The teacher's classes are not the dataset's and no ``distill.teacher.class_map`` says how to map."""


def load_weights_only(path: str | Path) -> Any:
    """The teacher's weights file through segkd's one checkpoint reader (``weights_only=True``).

    A file that needs the full unpickler (it may run code) is refused with the way out in the message.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher weights not found: {path}")
    try:
        return read_checkpoint(path)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(
            f"{err}. Re-save only the weights where you trust the file, e.g. "
            "torch.save({'state_dict': ckpt['state_dict'], 'meta': {'CLASSES': [...]}}, 'weights.pth')"
        ) from None


# ------------------------------------------------------------------------------------------ feature hook
class FeatureHook:
    """Keeps the last output (``"path"``) or first input (``"path:input"``) of the module at ``path``.

    ``path`` is a dotted name as in ``model.named_modules()``. The captured tensor must be (N, C, h, w).
    """

    def __init__(self, model: nn.Module, spec: str) -> None:
        path, _, which = spec.partition(":")
        if which not in ("", "input", "output"):
            raise ValueError(f"feat_module '{spec}': the suffix must be ':input' or ':output'")
        try:
            module = model.get_submodule(path)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n][-12:]
            raise ValueError(
                f"feat_module '{path}' is not a module of the teacher; its last modules are: "
                f"{', '.join(names)}"
            ) from None
        self.spec, self.value = spec, None
        if which == "input":
            self._handle = module.register_forward_pre_hook(self._keep_input)
        else:
            self._handle = module.register_forward_hook(self._keep_output)

    def _keep_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.value = args[0] if args else None

    def _keep_output(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.value = output[0] if isinstance(output, (tuple, list)) else output

    def pop(self) -> Tensor:
        """The tensor captured by the last forward (an error naming the module when it is not 4-d)."""
        value, self.value = self.value, None
        if not isinstance(value, Tensor) or value.dim() != 4:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"feat_module '{self.spec}' gave {shape}; feat must be an (N, C, h, w) map")
        return value


# ---------------------------------------------------------------------------------------- class mapping
def _norm(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def same_classes(teacher: Sequence[str] | None, teacher_k: int, dataset: Sequence[str] | None,
                 dataset_k: int) -> bool:
    """Equal counts and, where both lists are known, equal names (case, '_', '-' and spaces ignored)."""
    if teacher_k != dataset_k:
        return False
    if teacher is None or dataset is None:
        return True
    return [_norm(n) for n in teacher] == [_norm(n) for n in dataset]


def class_groups(teacher: Sequence[str] | None, teacher_k: int, dataset: Sequence[str] | None,
                 dataset_k: int, class_map: Mapping[str, Any] | None, who: str) -> list[list[int]] | None:
    """For each dataset class the teacher channels it takes, or None when the class lists are the same.

    ``class_map`` maps a dataset class name to a teacher class (name or index) or a list of them; every
    dataset class must be mapped. Without it, differing class lists raise :class:`ClassMismatchError`.
    """
    if class_map is None:
        if same_classes(teacher, teacher_k, dataset, dataset_k):
            return None
        raise ClassMismatchError(
            f"{who}: its classes ({teacher_k}: {_preview(teacher)}) differ from the dataset's ({dataset_k}: "
            f"{_preview(dataset)}); refusing to distill from it. Give distill.teacher.class_map "
            "{dataset class: teacher class or [teacher classes]} to map them."
        )
    dataset = list(dataset) if dataset is not None else [str(i) for i in range(dataset_k)]
    lookup = {_norm(n): i for i, n in enumerate(teacher or [])}
    by_name = {_norm(k): v for k, v in class_map.items()}
    unmapped = [n for n in dataset if _norm(n) not in by_name]
    if unmapped:
        raise ClassMismatchError(f"{who}: class_map leaves dataset classes unmapped: {', '.join(unmapped)}")
    groups = []
    for name in dataset:
        targets = by_name[_norm(name)]
        targets = targets if isinstance(targets, (list, tuple)) else [targets]
        groups.append([_teacher_index(t, lookup, teacher_k, who) for t in targets])
    return groups


def _teacher_index(target: Any, lookup: dict[str, int], teacher_k: int, who: str) -> int:
    if isinstance(target, int) and not isinstance(target, bool):
        if not 0 <= target < teacher_k:
            raise ClassMismatchError(
                f"{who}: class_map index {target} outside the teacher's 0..{teacher_k - 1}")
        return target
    if _norm(target) not in lookup:
        raise ClassMismatchError(f"{who}: class_map names '{target}', not a teacher class "
                                 f"({_preview(list(lookup))})")
    return lookup[_norm(target)]


def _preview(names: Sequence[str] | None, limit: int = 6) -> str:
    if names is None:
        return "names unknown"
    names = list(names)
    if not names:
        return "none"
    more = f", ... (+{len(names) - limit})" if len(names) > limit else ""
    return ", ".join(map(str, names[:limit])) + more


class ClassMap(nn.Module):
    """Teacher scores (N, K_t, h, w) -> dataset scores (N, K, h, w).

    Output channel i is ``logsumexp_{j in G_i} t_j`` (just t_j for one teacher class), so that
    softmax over the K outputs gives p_i = sum_{j in G_i} exp(t_j) / sum_k sum_{j in G_k} exp(t_j): the
    teacher's probabilities of the kept classes, merged per group and renormalised.
    """

    def __init__(self, groups: list[list[int]]) -> None:
        super().__init__()
        self.groups = [list(g) for g in groups]

    def forward(self, logits: Tensor) -> Tensor:
        return torch.stack([torch.logsumexp(logits[:, g], dim=1) for g in self.groups], dim=1)


# ------------------------------------------------------------------------------------------- the adapter
class TeacherAdapter(nn.Module):
    """An external network as a segkd teacher: ``forward(images) -> SegOutput(logits, feat)``.

    Args:
        network: the wrapped model (kept as ``self.network``; frozen and in eval mode by the builder).
        scores: ``scores(network, images) -> (N, K_t, h', w')`` class scores of the network (or a
            :class:`SegOutput`, whose ``logits`` and backbone ``stages`` are used).
        feat_module: module spec for :class:`FeatureHook` (``"path"`` or ``"path:input"``).
        groups: :func:`class_groups` result (None: the teacher's classes are the dataset's).
        output_stride: the student's output stride s; logits and feat are resized to ceil(H/s) x ceil(W/s).
        convert: the student-to-teacher input conversion (None: the same input convention).
        name: shown in messages and profiles.
    """

    def __init__(self, network: nn.Module, scores: Callable[[nn.Module, Tensor], Tensor], feat_module: str,
                 num_classes: int, groups: list[list[int]] | None = None, output_stride: int = 8,
                 convert: nn.Module | None = None, name: str = "") -> None:
        super().__init__()
        self.network = network
        self._scores = scores
        self.hook = FeatureHook(network, feat_module)
        self.class_map = ClassMap(groups) if groups is not None else None
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.name = name
        self.stage_channels: list[int] = list(getattr(network, "stage_channels", []))
        self.convert = convert
        self.feat_channels = self._probe_feat_channels()

    @torch.no_grad()
    def _probe_feat_channels(self, size: int = 64) -> int:
        was_training = self.training
        self.eval()
        param = next(self.network.parameters(), None)
        out = self(torch.zeros(1, 3, size, size, device=param.device if param is not None else "cpu"))
        self.train(was_training)
        if out.logits.shape[1] != self.num_classes:
            raise ValueError(f"{self.name}: teacher gives {out.logits.shape[1]} class scores after class "
                             f"mapping, the dataset has {self.num_classes} classes")
        return int(out.feat.shape[1])

    def forward(self, images: Tensor) -> SegOutput:
        x = images if self.convert is None else self.convert(images)
        raw = self._scores(self.network, x)
        feat = self.hook.pop()
        logits, stages = (raw.logits, raw.stages) if isinstance(raw, SegOutput) else (raw, [])
        if self.class_map is not None:
            logits = self.class_map(logits)
        s = self.output_stride
        size = (math.ceil(images.shape[-2] / s), math.ceil(images.shape[-1] / s))
        return SegOutput(logits=_resize(logits, size), feat=_resize(feat, size), stages=stages)


def load_exact(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """``model.load_state_dict(state)`` requiring every key on both sides and every shape to match."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{source} does not fit the teacher: missing {_preview(missing, 8)}; unexpected "
            f"{_preview(unexpected, 8)}; shape mismatch {_preview(shapes, 8)}")
    model.load_state_dict(dict(state), strict=True)


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of a (N, C, H, W) map to ``size`` (no-op at that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
