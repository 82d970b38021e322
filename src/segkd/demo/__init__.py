"""``segkd demo``: the built-in demonstration, a :mod:`segkd.compare` comparison on the synthetic data.

:mod:`.pipeline` builds the plan (teacher, baseline, methods, seeds, equal compute) and runs it through
the public comparison API; :mod:`.report` adds the demo's setting and a plain reading to ``compare.md``.
"""

from segkd.demo.pipeline import METHODS, SETTINGS, DemoSetting, demo_plan, run_demo

__all__ = ["METHODS", "SETTINGS", "DemoSetting", "demo_plan", "run_demo"]
