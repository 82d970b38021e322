"""segkd: knowledge distillation for semantic segmentation."""

__version__ = "0.1.0"
