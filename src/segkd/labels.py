"""Label conventions shared by datasets, losses, metrics and the engine."""

IGNORE_INDEX = 255
"""Label value of unlabelled pixels: ignored by the task loss, the metrics and every label-reading term."""
