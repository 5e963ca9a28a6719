"""Theory of learning dynamics (Ganguli group): exact lazy/rich solutions (Kunin et al. 2024, "Get rich quick").

* :mod:`~dlscience.learning_dynamics.lazy_rich` -- the single-neuron model: conserved delta, closed-form
  trajectories on whitened data, the low-rank limit, the NTK distance, gradient flow and gradient descent.
* :mod:`~dlscience.learning_dynamics.transfer` -- transfer learning in deep linear networks (Tahir et al. 2025,
  "Features are fate"): scratch, linear transfer and fine-tuning, theory and simulation behind one interface.
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
    "DeepLinear",
    "FineTune",
    "LinearTransfer",
    "Scratch",
    "TeacherPairs",
    "ft_boundary_theta",
    "gaussian_joint_distances",
    "lt_boundary_gamma",
    "pretrain",
    "ridgeless_risk",
    "SingleNeuron",
    "Trajectory",
    "conserved_delta",
    "function_space_matrix",
    "init_from_beta",
    "kernel_distance",
    "low_rank_limit",
]

_TRANSFER = {
    "DeepLinear",
    "FineTune",
    "LinearTransfer",
    "Scratch",
    "TeacherPairs",
    "ft_boundary_theta",
    "gaussian_joint_distances",
    "lt_boundary_gamma",
    "pretrain",
    "ridgeless_risk",
}


def __getattr__(name: str):
    """The transfer names load on first use, so the CLI does not import torch to parse its options."""
    if name in _TRANSFER:
        from dlscience.learning_dynamics import transfer

        return getattr(transfer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
