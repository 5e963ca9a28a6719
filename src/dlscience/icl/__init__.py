"""In-context learning of linear regression and pretraining task diversity (Raventos, Paul, Chen & Ganguli,
NeurIPS 2023, arXiv 2306.15063).

* :mod:`~dlscience.icl.tasks` -- the data process and its task pool;
* :mod:`~dlscience.icl.estimators` -- the one interface ``predict(xs, ys) -> (B, K)``;
* :mod:`~dlscience.icl.ridge` (Eq. 3), :mod:`~dlscience.icl.dmmse` (Eq. 2),
  :mod:`~dlscience.icl.transformer` (the paper's GPT-2 model) -- the estimators;
* :mod:`~dlscience.icl.metrics` -- per-position error and Delta (Eq. 4), for any estimators;
* :mod:`~dlscience.icl.baselines` -- the Bayes estimators' errors without training (``icl baselines``);
* :mod:`~dlscience.icl.training`, :mod:`~dlscience.icl.sweep` -- pretraining and the task-diversity sweep.
"""

from dlscience.icl.baselines import baseline_errors
from dlscience.icl.dmmse import DiscreteMMSE
from dlscience.icl.estimators import ICLEstimator
from dlscience.icl.metrics import delta, evaluate, per_position_error
from dlscience.icl.ridge import Ridge, ridge_risk
from dlscience.icl.tasks import NoisyLinearRegression
from dlscience.icl.training import ICLConfig, load_transformer, train
from dlscience.icl.transformer import TransformerICL

__all__ = [
    "NoisyLinearRegression",
    "ICLEstimator",
    "Ridge",
    "DiscreteMMSE",
    "TransformerICL",
    "ridge_risk",
    "per_position_error",
    "delta",
    "evaluate",
    "ICLConfig",
    "train",
    "load_transformer",
    "baseline_errors",
]
