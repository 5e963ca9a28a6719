"""HELM's seven metric groups (Liang et al. 2022, §4; definitions as in ``crfm-helm`` 0.5.16): accuracy,
calibration, robustness and fairness (worst case over perturbations), bias, toxicity and efficiency; plus the
statistics they are recorded in and the leaderboard's win rates."""
