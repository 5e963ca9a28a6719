"""Theory of learning dynamics (Ganguli group): exact lazy/rich solutions (Kunin et al. 2024, "Get rich quick").

* :mod:`~dlscience.learning_dynamics.lazy_rich` -- the single-neuron model: conserved delta, closed-form
  trajectories on whitened data, the low-rank limit, the NTK distance, gradient flow and gradient descent.
"""

from dlscience.learning_dynamics.lazy_rich import (
    SingleNeuron,
    Trajectory,
    conserved_delta,
    function_space_matrix,
    init_from_beta,
    kernel_distance,
    low_rank_limit,
)

__all__ = [
    "SingleNeuron",
    "Trajectory",
    "conserved_delta",
    "function_space_matrix",
    "init_from_beta",
    "kernel_distance",
    "low_rank_limit",
]
