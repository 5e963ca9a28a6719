"""The infinite-depth identity between the two exponents as implemented (issue 16): at the collapsed fixed
point lambda_a = lambda_g + ln(c_A^2 q* / q1*), so lambda_g > lambda_a wherever attention has weight
(alpha_A sigma_V > 0), on any grid; "lambda_g > 0 over the ordered phase" restates this identity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dlscience.signal_propagation import SignalPropParams, angle_exponent, gradient_exponent
from dlscience.signal_propagation.maps import collapsed_fixed_point


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "gelu"])
def test_lambda_a_equals_lambda_g_plus_log_attention_gain(nonlinearity):
    rng = np.random.default_rng(0)
    for _ in range(40):
        alpha_A, alpha_M = rng.uniform(0.05, 0.95, 2)
        p = SignalPropParams(
            alpha_A, alpha_M, rng.uniform(0.3, 3.0), rng.uniform(0.2, 5.0), nonlinearity=nonlinearity
        )
        q_star, q1_star = collapsed_fixed_point(p)
        la, lg = angle_exponent(p), gradient_exponent(p)
        assert la == pytest.approx(lg + math.log(p.c_A**2 * q_star / q1_star), abs=1e-12)
        assert lg > la  # q1* > c_A^2 q*: the token-mean mode always grows faster at infinite depth
