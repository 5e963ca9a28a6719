"""Holistic evaluation of language models, offline (HELM, Liang et al. 2022, arXiv 2211.09110).

Scenarios x adapters x models x seven metric groups (accuracy, calibration, robustness, fairness, bias,
toxicity, efficiency), with a request cache, per-run resume, HELM's output files and an HTML leaderboard.
Command line: ``dlscience eval run | summarize | report``.
"""

from dlscience.evaluation.adapter import Adapter
from dlscience.evaluation.adapter_spec import AdapterSpec
from dlscience.evaluation.cache import CachingClient, RequestCache
from dlscience.evaluation.client import Client
from dlscience.evaluation.mock_client import MockClient
from dlscience.evaluation.registry import get_scenario, register_scenario, scenario_names
from dlscience.evaluation.request import Request, RequestResult, RequestState
from dlscience.evaluation.run_spec import METRIC_GROUPS, RunSpec
from dlscience.evaluation.scenario import CORRECT_TAG, Instance, Reference, Scenario
from dlscience.evaluation.window_service import WindowService

__all__ = [
    "Adapter",
    "AdapterSpec",
    "CachingClient",
    "RequestCache",
    "Client",
    "MockClient",
    "get_scenario",
    "register_scenario",
    "scenario_names",
    "Request",
    "RequestResult",
    "RequestState",
    "METRIC_GROUPS",
    "RunSpec",
    "CORRECT_TAG",
    "Instance",
    "Reference",
    "Scenario",
    "WindowService",
]
