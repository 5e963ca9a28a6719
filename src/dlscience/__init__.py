"""dlscience: analytic machines from deep-learning theory, and the experiments that check them."""

__version__ = "0.1.0"
