"""Statistics of a seeded comparison: per-method mean ± std and the gain over the baseline, paired by seed.

For ``n`` seeds with baseline mIoU ``b_s`` and method mIoU ``m_s`` (same seed ``s``: same student
initialisation and data order), the gain is summarised from the paired differences ``d_s = m_s - b_s``:

    mean  d̄ = (1/n) Σ_s d_s
    std   s_d = sqrt( Σ_s (d_s - d̄)² / (n - 1) )                      (sample std, ddof = 1)
    95 % CI   d̄ ± t_{0.975, n-1} · s_d / sqrt(n)                       (Student's t, two-sided)

Pairing removes the seed-to-seed variation both runs share, so the interval is narrower than the one of
the two unpaired means. The t quantile comes from ``scipy.stats.t``. With one seed there is no spread and
no interval (``None``): one seed is an anecdote.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and count of a list of values (std None for fewer than 2)."""

    mean: float
    std: float | None
    n: int


@dataclass(frozen=True)
class PairedGain:
    """The gain over the baseline paired by seed, with its two-sided confidence interval."""

    mean: float
    std: float | None
    n: int
    ci_low: float | None
    ci_high: float | None
    level: float = 0.95

    @property
    def significant(self) -> bool:
        """True when the whole interval lies above zero (the method helps at this level)."""
        return self.ci_low is not None and self.ci_low > 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}


def summarize(values: list[float]) -> Summary:
    """:class:`Summary` of ``values`` (at least one)."""
    if not values:
        raise ValueError("summarize: no values")
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return Summary(mean, None, n)
    return Summary(mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)), n)


def t_quantile(level: float, dof: int) -> float:
    """Two-sided Student-t critical value: ``t_{(1+level)/2, dof}`` (e.g. 4.303 for 95 %, 2 dof)."""
    from scipy.stats import t

    return float(t.ppf((1.0 + level) / 2.0, dof))


def paired_gain(method: dict[int, float], baseline: dict[int, float], level: float = 0.95) -> PairedGain:
    """Gain of ``method`` over ``baseline`` on the seeds both have (``{seed: mIoU}``)."""
    seeds = sorted(set(method) & set(baseline))
    if not seeds:
        raise ValueError("paired_gain: the method and the baseline share no seed")
    diffs = [method[s] - baseline[s] for s in seeds]
    s = summarize(diffs)
    if s.std is None:
        return PairedGain(s.mean, None, s.n, None, None, level)
    half = t_quantile(level, s.n - 1) * s.std / math.sqrt(s.n)
    return PairedGain(s.mean, s.std, s.n, s.mean - half, s.mean + half, level)
