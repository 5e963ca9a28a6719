"""Theory of learning dynamics (Ganguli group): exact lazy/rich solutions (Kunin et al. 2024, "Get rich quick").

* :mod:`~dlscience.learning_dynamics.lazy_rich` -- the single-neuron model: conserved delta, closed-form
  trajectories on whitened data, the low-rank limit, the NTK distance, gradient flow and gradient descent.
* :mod:`~dlscience.learning_dynamics.transfer` -- transfer learning in deep linear networks (Tahir et al. 2025,
  "Features are fate"): scratch, linear transfer and fine-tuning, theory and simulation behind one interface.
* :mod:`~dlscience.learning_dynamics.collapse` -- stochastic collapse (Chen et al. 2023): vanishing and identical
  units, independent-neuron fraction and effective rank per layer of any torch model (``collapse_report``).
* :mod:`~dlscience.learning_dynamics.collapse_theory` -- the attractivity condition L''(0) + D''(0)/2 > 0, the
  quartic well, the tanh neuron and the diagonal linear teacher-student, each with its simulation.
* :mod:`~dlscience.learning_dynamics.collapse_cnn` -- the CNN experiment on Fashion-MNIST.
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

#: Names loaded on first use (module of each), so the CLI does not import torch to parse its options.
_LAZY = {
    **dict.fromkeys(
        (
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
        ),
        "transfer",
    ),
    "collapse_report": "collapse",
    "load_model": "collapse",
    "DiagonalTeacherStudent": "collapse_theory",
    "QuarticWell": "collapse_theory",
    "TanhNeuron": "collapse_theory",
    "attractivity_margin": "collapse_theory",
}

__all__ = [
    "SingleNeuron",
    "Trajectory",
    "conserved_delta",
    "function_space_matrix",
    "init_from_beta",
    "kernel_distance",
    "low_rank_limit",
    *_LAZY,
]


def __getattr__(name: str):
    """Load a transfer or collapse name (:data:`_LAZY`) from its module on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"dlscience.learning_dynamics.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
