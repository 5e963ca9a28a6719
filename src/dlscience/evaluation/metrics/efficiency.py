"""Efficiency (HELM's ``EfficiencyMetric``; Liang et al. 2022, §4.9).

* ``inference_runtime``: the observed wall time of the model call(s) of an instance, in seconds (for a cached
  result, the time measured when it was computed);
* ``num_prompt_tokens``, ``num_output_tokens``: tokens sent and generated;
* ``inference_runtime_per_output_token``: ``inference_runtime / max(1, num_output_tokens)``, the per-token cost
  that HELM's idealized runtime is built from (its fitted per-model tables of runtime against prompt length are
  not reproduced: they are profiles of specific hosted models);
* ``fitted_runtime_per_prompt_token``, ``fitted_runtime_per_output_token``, ``fitted_runtime_overhead``
  (per run): least-squares fit ``runtime ~ a + b n_prompt + c n_output`` over the run's requests, a local
  analogue of HELM's profiled runtime tables (at least 3 requests; slopes constrained to be >= 0);
* ``idealized_inference_runtime``: HELM's formula (:func:`idealized_runtime`) on a :class:`RuntimeProfile`
  (HELM ships measured profiles of hosted models; here the run's own fit provides one, so the value is the
  run's runtime with request-to-request noise removed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["efficiency_metrics", "fit_runtime", "RuntimeProfile", "idealized_runtime", "profile_from_fit"]


def efficiency_metrics(
    request_time: float, num_prompt_tokens: int, num_output_tokens: int
) -> dict[str, float]:
    return {
        "inference_runtime": float(request_time),
        "num_prompt_tokens": float(num_prompt_tokens),
        "num_output_tokens": float(num_output_tokens),
        "inference_runtime_per_output_token": float(request_time) / max(1, num_output_tokens),
    }


def fit_runtime(times: Sequence[float], n_prompt: Sequence[int], n_output: Sequence[int]) -> dict[str, float]:
    """Least-squares ``runtime ~ a + b n_prompt + c n_output`` with ``b, c >= 0`` ({} when underdetermined).

    A slope that comes out negative (timing noise on a busy machine, or lengths that hardly vary) is set to 0
    and the fit is redone without it, so the fitted costs stay physical."""
    t = np.asarray(times, dtype=np.float64)
    cols = {"prompt": np.asarray(n_prompt, float), "output": np.asarray(n_output, float)}
    if len(t) < 3:
        return {}
    keep = [k for k in cols if np.ptp(cols[k]) > 0]
    while True:
        X = np.column_stack([np.ones_like(t)] + [cols[k] for k in keep])
        coef, *_ = np.linalg.lstsq(X, t, rcond=None)
        negative = [k for k, c in zip(keep, coef[1:], strict=True) if c < 0]
        if not negative:
            break
        keep = [k for k in keep if k not in negative]
    slopes = dict(zip(keep, coef[1:], strict=True))
    return {
        "fitted_runtime_overhead": float(coef[0]),
        "fitted_runtime_per_prompt_token": float(slopes.get("prompt", 0.0)),
        "fitted_runtime_per_output_token": float(slopes.get("output", 0.0)),
    }


@dataclass(frozen=True)
class RuntimeProfile:
    """A model's runtime profile, as in HELM's efficiency tables: seconds to encode prompts of given token
    counts, seconds per output token after the first, and a fixed overhead."""

    runtime_for_prompt_tokens: dict[int, float]
    runtime_per_output_token: float
    overhead: float | None = None


def idealized_runtime(profile: RuntimeProfile, num_prompt_tokens: int, num_output_tokens: int) -> float:
    """HELM's idealized runtime (``_compute_estimated_time_from_prompt_size_and_num_output_tokens``).

    1. Prompt term: the runtime of the smallest profiled prompt length ``key >= num_prompt_tokens``, scaled by
       ``num_prompt_tokens / key``; beyond the largest key, that key's runtime scaled linearly.
    2. Plus ``runtime_per_output_token * (num_output_tokens - 1)`` when ``num_output_tokens > 0``.
    3. Plus the overhead, if any.
    """
    table = profile.runtime_for_prompt_tokens
    keys = sorted(table)
    prompt = None
    for key in keys:
        if num_prompt_tokens <= key:
            prompt = table[key] * (num_prompt_tokens / key)
            break
    if prompt is None:
        prompt = table[keys[-1]] * (num_prompt_tokens / keys[-1])
    runtime = prompt
    if num_output_tokens > 0:
        runtime += profile.runtime_per_output_token * (num_output_tokens - 1)
    if profile.overhead is not None:
        runtime += profile.overhead
    return runtime


def profile_from_fit(fit: dict[str, float], max_prompt_tokens: int = 8192) -> RuntimeProfile | None:
    """A :class:`RuntimeProfile` from :func:`fit_runtime`'s coefficients (prompt keys at powers of 2), or None
    without a fit. The first output token's time is part of the fitted per-token slope,
    so the overhead absorbs one token's time."""
    if not fit:
        return None
    per_prompt = fit["fitted_runtime_per_prompt_token"]
    per_output = fit["fitted_runtime_per_output_token"]
    keys = [2**k for k in range(0, max(1, max_prompt_tokens).bit_length() + 1)]
    return RuntimeProfile(
        {k: per_prompt * k for k in keys}, per_output, fit["fitted_runtime_overhead"] + per_output
    )
