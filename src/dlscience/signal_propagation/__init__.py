"""Signal propagation in deep random transformers (Cowsik, Nebabu, Qi & Ganguli 2024, arXiv 2403.02579).

* :mod:`~dlscience.signal_propagation.model` -- the block family (pre-LN, residual strengths, sigma_A, sigma_w);
* :mod:`~dlscience.signal_propagation.maps` -- (q, rho) maps, fixed points, lambda_a and lambda_g;
* :mod:`~dlscience.signal_propagation.simulate` -- the same quantities measured in finite networks;
* :mod:`~dlscience.signal_propagation.phase_diagram` -- phase diagram and theory-vs-simulation tables;
* :mod:`~dlscience.signal_propagation.trainability` -- do the exponents predict the loss after training?
"""

from dlscience.signal_propagation.maps import (
    angle_exponent,
    attention_overlaps,
    block_map,
    collapsed_fixed_point,
    critical_sigma_w,
    gradient_exponent,
    iterate_maps,
    jacobian_growth,
    mlp_chi,
    mlp_kernel,
)
from dlscience.signal_propagation.model import RandomTransformer, SignalPropParams, rms_layer_norm

__all__ = [
    "SignalPropParams",
    "RandomTransformer",
    "rms_layer_norm",
    "attention_overlaps",
    "mlp_kernel",
    "mlp_chi",
    "block_map",
    "iterate_maps",
    "collapsed_fixed_point",
    "angle_exponent",
    "gradient_exponent",
    "jacobian_growth",
    "critical_sigma_w",
]
