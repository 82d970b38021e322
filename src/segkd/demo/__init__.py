"""``segkd demo``: the built-in demonstration, built on segkd's public training and report APIs.

:mod:`.pipeline` trains the teacher, the baseline and every distilled student on the synthetic data;
:mod:`.report` turns their run directories into the comparison table and ``report.md``.
"""

from segkd.demo.pipeline import METHODS, DemoMethod, run_demo

__all__ = ["METHODS", "DemoMethod", "run_demo"]
