"""Signal propagation in deep random transformers (Cowsik, Nebabu, Qi & Ganguli 2024, arXiv 2403.02579).

* :mod:`~dlscience.signal_propagation.nonlinearities` -- phi and phi', one definition for theory and networks;
* :mod:`~dlscience.signal_propagation.model` -- the block family (pre-LN, residual strengths, sigma_A, sigma_w);
* :mod:`~dlscience.signal_propagation.maps` -- (q, rho) maps, fixed points, lambda_a and lambda_g;
* :mod:`~dlscience.signal_propagation.finite_depth_gradient` -- the finite-depth gradient exponent lambda_g(L, n)
  and the token-space maps of the collapsed state, bidirectional and causal;
* :mod:`~dlscience.signal_propagation.simulate` -- the same quantities measured in finite networks;
* :mod:`~dlscience.signal_propagation.phase_diagram` -- phase diagram and theory-vs-simulation tables;
* :mod:`~dlscience.signal_propagation.trainability` -- do the exponents predict the loss after training?
* :mod:`~dlscience.signal_propagation.jobs` -- the ``dlscience sigprop`` jobs (run folders, tables).
"""

from dlscience.signal_propagation import maps as _maps

# the theory's public names, listed once in maps.__all__
from dlscience.signal_propagation.maps import *  # noqa: F403
from dlscience.signal_propagation.model import RandomTransformer, SignalPropParams, rms_layer_norm
from dlscience.signal_propagation.nonlinearities import NONLINEARITIES, phi, phi_prime

__all__ = [
    "SignalPropParams",
    "RandomTransformer",
    "rms_layer_norm",
    "NONLINEARITIES",
    "phi",
    "phi_prime",
    *_maps.__all__,
]
