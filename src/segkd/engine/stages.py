"""Multi-stage recipes: one config, several trainings in order (torchdistill's ``stage1`` / ``stage2``).

Knowledge Adaptation (He et al., CVPR 2019) is the case in the seeds: stage 1 fits the auto-encoder on
the frozen teacher's features with its own optimizer and schedule, stage 2 distils through it. Every
stage is built and validated before the first one starts; stage ``k`` runs in ``output_dir/<name>``
with its ``data`` / ``train`` / ``optim`` / ``distill`` sections merged over the recipe's (e.g. stage 1's
own batch size). A finished stage (its
``summary.json``, or its ``autoencoder.pt``) is reused when the recipe is run again with
``train.resume=auto``, and an unfinished one resumes from its own checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segkd.config import ConfigError, deep_merge, from_dict, to_dict
from segkd.config_schema import ExperimentConfig
from segkd.distributed import is_main_process
from segkd.rundir import RunDir

AUTOENCODER = "AUTOENCODER"  # loss-option placeholder for the auto-encoder file of the stage-1 run


def _resolve_placeholders(raw: dict[str, Any], autoencoder: str | None, stage: str) -> None:
    for index, term in enumerate(raw["distill"].get("losses") or []):
        for key, value in (term.get("options") or {}).items():
            if value == AUTOENCODER:
                if autoencoder is None:
                    raise ConfigError(
                        f"stages: stage '{stage}' reads the auto-encoder "
                        f"(distill.losses.{index}.options.{key}) "
                        "but no earlier stage trains one (train.stage: ka_autoencoder)"
                    )
                term["options"][key] = autoencoder


def stage_configs(cfg: ExperimentConfig) -> list[ExperimentConfig]:
    """The validated config of every stage of ``cfg``, in order (``[cfg]`` when it has no stages)."""
    if not cfg.stages:
        return [cfg]
    base = to_dict(cfg)
    base.pop("stages")
    names = [stage.name for stage in cfg.stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"stages: stage names must be unique, got {names}")
    configs, autoencoder = [], None
    for stage in cfg.stages:
        sections = {k: v for k, v in (("data", stage.data), ("train", stage.train), ("optim", stage.optim),
                                      ("distill", stage.distill)) if v}
        raw = deep_merge(base, sections)
        raw["name"] = f"{cfg.name}_{stage.name}"
        raw["output_dir"] = str(Path(cfg.output_dir) / stage.name)
        _resolve_placeholders(raw, autoencoder, stage.name)
        try:
            stage_cfg = from_dict(ExperimentConfig, raw)
        except ConfigError as err:
            raise ConfigError(f"stages: stage '{stage.name}': {err}") from None
        if stage_cfg.train.stage == "ka_autoencoder":
            autoencoder = str(RunDir(stage_cfg.output_dir).autoencoder)
        configs.append(stage_cfg)
    return configs


def finished(stage_cfg: ExperimentConfig) -> bool:
    """True when the stage's run directory holds its final output."""
    run = RunDir(stage_cfg.output_dir)
    return run.autoencoder.is_file() if stage_cfg.train.stage == "ka_autoencoder" else run.summary.is_file()


def run_stages(cfg: ExperimentConfig, data: Any = None) -> Path:
    """Train every stage of ``cfg`` in order; returns the run directory of the last one."""
    from segkd.engine.trainer import train

    configs = stage_configs(cfg)
    last = Path(configs[-1].output_dir)
    for index, stage_cfg in enumerate(configs, start=1):
        if cfg.train.resume == "auto" and finished(stage_cfg):
            if is_main_process():
                print(f"segkd train: stage {index}/{len(configs)} ({stage_cfg.name}) already finished in "
                      f"{stage_cfg.output_dir}; reused")
            continue
        if is_main_process():
            print(f"segkd train: stage {index}/{len(configs)}: {stage_cfg.name} -> {stage_cfg.output_dir}")
        last = train(stage_cfg, data)
    return last
