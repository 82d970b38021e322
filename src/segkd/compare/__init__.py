"""``segkd compare``: the baseline and each distillation method over several seeds, at equal iterations
and/or at equal compute, with mean ± std and the gain's confidence interval (see :mod:`.plan`,
:mod:`.runner`, :mod:`.stats`, :mod:`.report`).

``run_compare(plan)`` is the entry point (the ``segkd compare`` command and the demo call it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from segkd.compare.plan import BASELINE, ComparePlan, MethodSpec, plan_from_files
from segkd.compare.report import print_tables, write_outputs
from segkd.compare.runner import DataCache, RunResult, run_plan
from segkd.distributed import barrier, is_main_process
from segkd.outputs import check_writable

__all__ = ["BASELINE", "ComparePlan", "MethodSpec", "RunResult", "plan_from_files", "run_compare"]


def run_compare(
    plan: ComparePlan,
    header: dict[str, Any] | None = None,
    notes: Callable[[list[RunResult]], list[str]] | None = None,
    data: DataCache | None = None,
) -> dict[str, Any]:
    """Train (or reuse) every run of ``plan`` and write ``compare.json`` / ``compare.md`` / plots into
    ``plan.output`` (updated after every run, so a long comparison can be read while it runs).

    ``header``: extra entries of ``compare.json`` (e.g. ``title``, ``command``); ``notes``: lines for
    ``compare.md`` computed from the results. Returns the ``compare.json`` data.
    """
    check_writable(plan.output, "the comparison's output folder", "choose a writable --output")
    header = {
        "seeds": plan.seeds,
        "matches": plan.matches,
        "budget": plan.budget,
        "methods": [m.key for m in plan.methods],
        "search": plan.searches(),
        **(header or {}),
    }
    written: dict[str, Any] = {}

    def write(results: list[RunResult]) -> None:
        if is_main_process():
            written.update(write_outputs(results, plan.output, header, notes(results) if notes else None))

    run_plan(plan, data, on_result=write)
    barrier()
    if is_main_process():
        print_tables(written["results"])
        print(f"segkd compare: wrote {plan.output / 'compare.md'}")
    return written
