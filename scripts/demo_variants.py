"""The demo's comparison with other rows: how the unlabelled-image recipe was chosen (issue 28).

Usage::

    python scripts/demo_variants.py SETTING OUT MATCH VARIANTS.json [SEEDS] [BUDGET]

``SETTING`` is a ``segkd demo --setting`` name (the recipe was chosen on ``default`` only), ``MATCH``
``iters`` (every row ``BUDGET`` iterations; default the setting's) or ``time`` (equal compute, ``--time-by
clock``), ``VARIANTS.json`` maps row names to ``{"losses": [...], "ratio": share of the batch from the
unlabelled pool (default the setting's), "cached": bool, "strong_augment": bool}`` (the files in
``scripts/unlabeled_variants/``). The teacher, baseline and data are the demo's (``segkd.demo.pipeline``);
everything runs through the public ``segkd.compare`` API and writes ``OUT/compare.md``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from segkd.compare import BASELINE, ComparePlan, MethodSpec, run_compare
from segkd.compare.plan import resolve
from segkd.demo import pipeline as demo
from segkd.engine.allocator import fix_malloc_thresholds


def main(argv: list[str]) -> None:
    setting_name, out, match, variants_file = argv[:4]
    setting = demo.SETTINGS[setting_name]
    seeds = int(argv[4]) if len(argv) > 4 else setting.seeds
    if len(argv) > 5:
        setting = dataclasses.replace(setting, budget=int(argv[5]))
    variants = json.loads(Path(variants_file).read_text())
    plain = demo.data_section(setting, setting.labeled, False)
    baseline = demo.run_config(setting, demo.STUDENT_MODEL, plain, setting.budget)
    specs = [MethodSpec(BASELINE, resolve(baseline))]
    for key, row in variants.items():
        data = demo.data_section(setting, setting.labeled, True, row.get("ratio"))
        raw = demo.run_config(setting, demo.STUDENT_MODEL, data, setting.budget)
        raw["distill"] = {"teacher": dict(demo.TEACHER_MODEL), "losses": row["losses"],
                          "strong_augment": row.get("strong_augment", False)}
        specs.append(MethodSpec(key, resolve(raw), cached=row.get("cached", False)))
    teacher_data = demo.data_section(setting, setting.teacher_images, False)
    teacher = demo.run_config(setting, demo.TEACHER_MODEL, teacher_data, setting.teacher_iters)
    teacher["name"] = "teacher"
    plan = ComparePlan(Path(out), specs, list(range(seeds)), [match], float(setting.budget), resolve(teacher),
                       "amortize", time_by="clock")
    run_compare(plan)
    print(Path(out, "compare.md").read_text())


if __name__ == "__main__":
    fix_malloc_thresholds()
    main(sys.argv[1:])
