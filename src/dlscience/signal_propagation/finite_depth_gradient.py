"""The finite-depth gradient exponent lambda_g(L, n) and the token-space maps of the collapsed state, for
bidirectional and causal attention (Cowsik, Nebabu, Qi & Ganguli 2024, arXiv 2403.02579, Sec. 3.4 and 4.2;
issue 16).

**What the paper defines, and what could be read of it.** The body of arXiv 2403.02579 was not readable here:
every stored copy (arxiv.org/html/2403.02579v1, ar5iv, sciencestack) gives the abstract and the start of the
introduction only, so no equation number of the paper can be cited. What is attested:

* Sec. 3.4 ("Propagation of gradients"), quoted by Emergent Mind's open-problem page: the paper studies "the
  expected squared Frobenius norm of the end-to-end input-output Jacobian, which typically scales exponentially
  with depth", E|J|_F^2 ~ e^{lambda_g L}; lambda_g < 0 is vanishing, lambda_g > 0 exploding gradients, and
  "a natural conjecture for a good initialization is at the edge between these two phases in which
  lambda_g = 0".
* Sec. 4.2, as three independent third-party re-implementations cite it ("Sections 3.4 & 4.2"): the measured
  exponent is lambda_g ~ (1/L) log |grad_{X_0} (X_L . R)|_F^2 with R a standard Gaussian probe
  (E_R |grad_{X_0}(X_L . R)|^2 = |J|_F^2), for a network of L blocks (16 in two of them) acting on n tokens
  (256 or 10) drawn at cosine rho = 0.99 with E|x_i|^2 = d, i.e. from a nearly collapsed simplex with q0 = 1.

So the paper's gradient exponent is a finite-depth quantity. This module implements that definition as a
**reconstruction** (the normalisation is ours): with J = dX_L / dX_0 the (n d) x (n d) input-output Jacobian,

    lambda_g(L, n) = (1/L) log( E|J|_F^2 / (n d) ),

the growth per block of the squared Frobenius norm relative to the identity map (|I|_F^2 = n d). The
re-implementations omit the 1 / (n d); theirs is lambda_g(L, n) + log(n d) / L, and they average the log over
networks instead of taking the log of the average (the two agree at large width).

**Theory at the collapsed state** (width d -> infinity; the research note's Sec. a', extended to finite L and
to a general attention mask). With identical tokens of squared norm q_l d entering block l, every softmax row is
uniform over the tokens it may see, so the attention is the fixed token-space averaging matrix M (n x n):

    bidirectional  M_ij = 1/n;          causal  M_ij = 1/i for j <= i, else 0   (1-based i, j).

The derivative through the softmax weights vanishes (rows of A sum to 1 and all values are equal), so one block
acts on a perturbation dX (n x d) as (c_A I + alpha_A M (x) S_l) followed by the tokenwise I (x) D_l, where
S_l = W_V P_l sqrt(d)/|x_l| (P_l removes the token direction) and D_l is the MLP sublayer's Jacobian. Averaging
over the Gaussian weights (E S_l = 0, E S_l^T S_l -> a_l I, E D_l^T D_l -> m_l I):

    q_{l+1}   = c_M^2 q1_l + alpha_M^2 K(1),      q1_l = c_A^2 q_l + alpha_A^2 sigma_V^2    (collapsed norm map)
    a_l       = alpha_A^2 sigma_V^2 / q_l,        m_l  = c_M^2 + alpha_M^2 chi / q1_l
    Sigma_{l} = m_l (c_A^2 Sigma_{l+1} + a_l M^T Sigma_{l+1} M),   Sigma_L = I_n           (backward, Jacobian)
    C_{l+1}   = m_l (c_A^2 C_l + a_l M C_l M^T)                                           (forward, differences)

and E|J|_F^2 / (n d) = tr(Sigma_0) / n. chi and K(1) are those of :mod:`.maps`.

* Bidirectional: M = 11^T/n projects on the token mean, so the token-mean mode grows by
  g_l = (c_A^2 + a_l) m_l and the n - 1 difference modes by h_l = c_A^2 m_l:
  E|J|_F^2/(nd) = (1/n) prod g_l + (1 - 1/n) prod h_l. At q0 = q* this is ``maps.jacobian_growth``; the
  infinite-depth exponents are lambda_g(inf) = log g* > lambda_a = log h* (the identity tested in
  test_exponent_identity.py). The mean mode dominates the Frobenius norm only once
  L (lambda_g(inf) - lambda_a) > ln n. Started at the norm fixed point (q0 = q*), lambda_g(L, n) > 0
  wherever lambda_a >= 0, so the zero line lambda_g(L, n) = 0 lies strictly inside the ordered phase; it
  approaches the edge of chaos lambda_a = 0 only as n -> infinity at fixed L, and lambda_g(inf) = 0 only as
  alpha_A -> 0. Started elsewhere (the Sec. 4.2 protocol has q0 = 1) the norm relaxes to q* over about
  1 / (alpha_A^2 + alpha_M^2) blocks, and the gains (which fall with q) differ along the way: for small alpha
  and q0 > q* the zero line then moves into the chaotic phase (results/sigprop_phase: the lines cross once).
* Causal: M is lower triangular with eigenvalues 1, 1/2, ..., 1/n. Forward, the token differences (R^n modulo
  the all-ones vector, the eigenvector of eigenvalue 1) evolve under C -> m(c_A^2 C + a M C M^T), whose
  eigenvalues are m(c_A^2 + a mu_j mu_k) with mu_j = 1/j, j >= 2. The slowest-contracting difference is that
  of the first two tokens (token 1 sees itself only, token 2 averages tokens 1 and 2, so half their
  difference survives the attention branch):

      lambda_a(causal) = log(c_A^2 + alpha_A^2 sigma_V^2 / (4 q*)) + log(c_M^2 + alpha_M^2 chi / q1*)
                       = lambda_a(bidirectional) + log(1 + alpha_A^2 sigma_V^2 / (4 c_A^2 q*)),

  independent of n >= 2 and larger than the bidirectional exponent: causal attention collapses tokens more
  slowly, so its edge of chaos lies at smaller sigma_w. Backward, e_1 e_1^T is an eigenvector of
  Sigma -> M^T Sigma M with eigenvalue 1 (every output sees token 1), so lambda_g(inf) is the same as for
  bidirectional attention; the finite-(L, n) value differs and is computed from the recursion above.

Symbols: q_l = |x|^2/d entering block l, q1_l after its attention sublayer, c_A = sqrt(1 - alpha_A^2)
(complementary residual) or 1 (identity residual), chi = sigma_w^2 E[phi'(sigma_w z)^2], K(1) = E[phi(sigma_w z)^2].
Corrections at finite width are O(L/d) in E|J|_F^2 (checked against exact Jacobians in
tests/signal_propagation/test_finite_depth_gradient.py).
"""

from __future__ import annotations

import math

import numpy as np

from dlscience.errors import InputValidationError
from dlscience.signal_propagation.maps import mlp_chi, mlp_kernel_at_one
from dlscience.signal_propagation.model import SignalPropParams

__all__ = [
    "MASKS",
    "attention_average",
    "collapsed_norm_trajectory",
    "jacobian_token_covariance",
    "jacobian_norm",
    "finite_depth_gradient_exponent",
    "token_difference_covariance",
]

MASKS = ("bidirectional", "causal")


def _check(params, n: int, n_layers: int, q0: float, mask: str, func: str) -> None:
    if not isinstance(params, SignalPropParams):
        raise InputValidationError(f"{func}: params must be a SignalPropParams, got {type(params).__name__}")
    if mask not in MASKS:
        raise InputValidationError(f"{func}: mask must be one of {MASKS}, got {mask!r}")
    if int(n) != n or n < 1:
        raise InputValidationError(f"{func}: n (tokens) must be an integer >= 1, got {n}")
    if int(n_layers) != n_layers or n_layers < 1:
        raise InputValidationError(f"{func}: n_layers (L) must be an integer >= 1, got {n_layers}")
    if not (isinstance(q0, (int, float)) and math.isfinite(q0) and q0 > 0):
        raise InputValidationError(
            f"{func}: q0 (input squared norm / d) must be a finite float > 0, got {q0}"
        )


def attention_average(n: int, mask: str = "bidirectional") -> np.ndarray:
    """The attention matrix at the collapsed state (all logits equal): uniform over the visible tokens.

    Parameters
    ----------
    n : int
        Number of tokens, >= 1.
    mask : {"bidirectional", "causal"}
        Every token sees all n tokens (M_ij = 1/n), or token i sees tokens 1..i (M_ij = 1/i for j <= i).

    Returns
    -------
    M : ndarray of shape (n, n), float64
        Row-stochastic; symmetric (the projector on the token mean) for ``bidirectional``, lower triangular
        with diagonal 1, 1/2, ..., 1/n for ``causal``.

    Raises
    ------
    InputValidationError
        n < 1 or an unknown mask.
    """
    if mask not in MASKS:
        raise InputValidationError(f"attention_average: mask must be one of {MASKS}, got {mask!r}")
    if int(n) != n or n < 1:
        raise InputValidationError(f"attention_average: n must be an integer >= 1, got {n}")
    n = int(n)
    if mask == "bidirectional":
        return np.full((n, n), 1.0 / n)
    return np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]


def collapsed_norm_trajectory(params: SignalPropParams, n_layers: int, q0: float = 1.0) -> np.ndarray:
    """q_l = |x|^2 / d entering block l = 0..L for identical tokens (the norm map at rho = 1; any mask).

    q_{l+1} = c_M^2 (c_A^2 q_l + alpha_A^2 sigma_V^2) + alpha_M^2 K(1) (research note, Sec. a'; the cross terms
    x . branch vanish in expectation over W_V and W_2).

    Parameters
    ----------
    params : SignalPropParams
        Any residual (with ``identity`` residuals q grows without bound).
    n_layers : int
        L >= 1.
    q0 : float
        Input squared norm / d, > 0.

    Returns
    -------
    ndarray of shape (L + 1,), float64

    Raises
    ------
    InputValidationError
        A bad ``params``, L < 1 or q0 <= 0.
    """
    _check(params, 1, n_layers, q0, "bidirectional", "collapsed_norm_trajectory")
    k1 = mlp_kernel_at_one(params.sigma_w, params.nonlinearity)
    q = np.empty(n_layers + 1)
    q[0] = q0
    for layer in range(n_layers):
        q1 = params.c_A**2 * q[layer] + params.alpha_A**2 * params.sigma_V**2
        q[layer + 1] = params.c_M**2 * q1 + params.alpha_M**2 * k1
    return q


def _layer_gains(params: SignalPropParams, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a_l, m_l) for blocks l = 0..L-1 from the norms q_l entering them: attention branch and MLP gains."""
    chi = mlp_chi(params.sigma_w, params.nonlinearity)
    q_in = q[:-1]
    q1 = params.c_A**2 * q_in + params.alpha_A**2 * params.sigma_V**2
    a = params.alpha_A**2 * params.sigma_V**2 / q_in
    m = params.c_M**2 + params.alpha_M**2 * chi / q1
    return a, m


def jacobian_token_covariance(
    params: SignalPropParams, n: int, n_layers: int, *, q0: float = 1.0, mask: str = "bidirectional"
) -> np.ndarray:
    """Token part of E[J^T J] / d for the L-block input-output Jacobian at the collapsed state.

    Backward recursion Sigma_l = m_l (c_A^2 Sigma_{l+1} + a_l M^T Sigma_{l+1} M) from Sigma_L = I_n (module
    docstring); E[J^T J] = Sigma_0 (x) I_d at infinite width.

    Parameters
    ----------
    params : SignalPropParams
    n : int
        Number of tokens, >= 1.
    n_layers : int
        L >= 1.
    q0 : float
        Input squared norm / d (> 0); 1.0 for tokens with |x_i|^2 = d as in the paper's Sec. 4.2 estimator.
    mask : {"bidirectional", "causal"}

    Returns
    -------
    Sigma_0 : ndarray of shape (n, n), float64, symmetric positive semi-definite
        tr(Sigma_0) / n = E|J|_F^2 / (n d); Sigma_0[i, i] / 1 = E|dX_L / dx_i|_F^2 / d (sensitivity to token i).

    Raises
    ------
    InputValidationError
        A bad ``params``, n < 1, L < 1, q0 <= 0 or an unknown mask.
    """
    _check(params, n, n_layers, q0, mask, "jacobian_token_covariance")
    a, m = _layer_gains(params, collapsed_norm_trajectory(params, n_layers, q0))
    M = attention_average(n, mask)
    sigma = np.eye(int(n))
    for layer in reversed(range(n_layers)):
        sigma = m[layer] * (params.c_A**2 * sigma + a[layer] * (M.T @ sigma @ M))
    return sigma


def jacobian_norm(
    params: SignalPropParams, n: int, n_layers: int, *, q0: float = 1.0, mask: str = "bidirectional"
) -> float:
    """E|J|_F^2 / (n d) for L blocks from identical tokens of squared norm q0 d (infinite width).

    Parameters and errors as :func:`jacobian_token_covariance`. For ``bidirectional`` this is the closed form
    (1/n) prod_l (c_A^2 + a_l) m_l + (1 - 1/n) prod_l c_A^2 m_l.

    Returns
    -------
    float, >= 0
    """
    _check(params, n, n_layers, q0, mask, "jacobian_norm")
    if mask == "bidirectional":  # the two modes in closed form (no n x n algebra)
        a, m = _layer_gains(params, collapsed_norm_trajectory(params, n_layers, q0))
        mean_mode = float(np.prod((params.c_A**2 + a) * m))
        difference_modes = float(np.prod(params.c_A**2 * m))
        return mean_mode / n + (1 - 1 / n) * difference_modes
    return float(np.trace(jacobian_token_covariance(params, n, n_layers, q0=q0, mask=mask))) / n


def finite_depth_gradient_exponent(
    params: SignalPropParams, n: int, n_layers: int, *, q0: float = 1.0, mask: str = "bidirectional"
) -> float:
    """lambda_g(L, n) = (1/L) log(E|J|_F^2 / (n d)): the gradient exponent at finite depth L and n tokens, from
    a collapsed input (the limit rho0 -> 1 of the paper's Sec. 4.2 protocol; see the module docstring for what
    is reconstructed).

    Parameters
    ----------
    params : SignalPropParams
        Complementary or identity residuals, any nonlinearity.
    n : int
        Number of tokens, >= 1.
    n_layers : int
        L >= 1.
    q0 : float
        Input squared norm / d, > 0 (1.0: |x_i|^2 = d).
    mask : {"bidirectional", "causal"}

    Returns
    -------
    float
        Finite (every block has m_l > 0 and the mean mode a gain (c_A^2 + a_l) m_l > 0); -inf is returned only
        if E|J|_F^2 underflows to 0.

    Raises
    ------
    InputValidationError
        As :func:`jacobian_token_covariance`.
    """
    norm = jacobian_norm(params, n, n_layers, q0=q0, mask=mask)
    return math.log(norm) / n_layers if norm > 0 else -math.inf


def token_difference_covariance(
    params: SignalPropParams,
    n: int,
    n_layers: int,
    *,
    q0: float = 1.0,
    mask: str = "bidirectional",
    C0=None,
) -> np.ndarray:
    """Second moments of small token differences through L blocks, linearised at the collapsed state.

    Forward recursion C_{l+1} = m_l (c_A^2 C_l + a_l M C_l M^T) (module docstring), with q_l the collapsed norm
    map. Mean squared distance between tokens i and j after block l: (C_l[i,i] + C_l[j,j] - 2 C_l[i,j]) d,
    so 1 - rho between them is that over 2 q_l d. Its asymptotic growth rate per block is lambda_a for the
    mask (:func:`~dlscience.signal_propagation.maps.angle_exponent`).

    Parameters
    ----------
    params : SignalPropParams
    n : int
        Number of tokens, >= 2.
    n_layers : int
        L >= 1.
    q0 : float
        Input squared norm / d, > 0.
    mask : {"bidirectional", "causal"}
    C0 : array-like of shape (n, n), optional
        Initial second moments of the differences per unit width (default: the identity, i.i.d. tokens about
        the common direction). Only C0 modulo the all-ones direction affects the distances.

    Returns
    -------
    ndarray of shape (L + 1, n, n), float64
        C_l. The common modes (all-ones directions), invisible in the distances, may grow faster than the
        differences, so over long recursions (tens of blocks and more) the distances lose precision to
        cancellation; use :func:`~dlscience.signal_propagation.maps.angle_exponent` for the asymptotic rate.

    Raises
    ------
    InputValidationError
        As :func:`jacobian_token_covariance`, n < 2, or C0 not of shape (n, n).
    """
    _check(params, n, n_layers, q0, mask, "token_difference_covariance")
    if n < 2:
        raise InputValidationError(f"token_difference_covariance: need n >= 2 tokens, got {n}")
    C = np.eye(int(n)) if C0 is None else np.array(C0, dtype=np.float64)
    if C.shape != (n, n):
        raise InputValidationError(
            f"token_difference_covariance: C0 must have shape ({n}, {n}), got {C.shape}"
        )
    a, m = _layer_gains(params, collapsed_norm_trajectory(params, n_layers, q0))
    M = attention_average(n, mask)
    out = np.empty((n_layers + 1, n, n))
    out[0] = C
    for layer in range(n_layers):
        C = m[layer] * (params.c_A**2 * C + a[layer] * (M @ C @ M.T))
        out[layer + 1] = C
    return out
