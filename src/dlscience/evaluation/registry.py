"""The scenario registry: a scenario is one file with one decorator (as HELM's and lm-evaluation-harness's
registries, and inspect_ai's ``@task``).

Write a file with a :class:`~dlscience.evaluation.scenario.Scenario` subclass decorated with
:func:`register_scenario` and either put it in ``dlscience/evaluation/scenarios/`` (found automatically) or pass
it to ``dlscience eval run --scenario-file my_scenario.py``::

    from dlscience.evaluation import Instance, Reference, Scenario, register_scenario, CORRECT_TAG

    @register_scenario("capitals")
    class Capitals(Scenario):
        description = "capital cities"
        def get_instances(self, seed=0):
            return [Instance("France", (Reference("Paris", (CORRECT_TAG,)),), split="test")]
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path

from dlscience.errors import UserError
from dlscience.evaluation.scenario import Scenario

__all__ = ["register_scenario", "get_scenario", "scenario_names", "load_scenario_file", "SCENARIOS"]

SCENARIOS: dict[str, type[Scenario]] = {}
_discovered = False


def register_scenario(name: str):
    """Class decorator: register a :class:`Scenario` subclass under ``name`` (sets its ``name``)."""

    def wrap(cls):
        if not (isinstance(cls, type) and issubclass(cls, Scenario)):
            raise TypeError(f"@register_scenario({name!r}) needs a Scenario subclass, got {cls!r}")
        if name in SCENARIOS and SCENARIOS[name].__qualname__ != cls.__qualname__:
            raise UserError(
                f"scenario {name!r} is registered twice ({SCENARIOS[name].__module__}, {cls.__module__})"
            )
        cls.name = name
        SCENARIOS[name] = cls
        return cls

    return wrap


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    from dlscience.evaluation import scenarios

    for mod in pkgutil.iter_modules(scenarios.__path__):
        importlib.import_module(f"{scenarios.__name__}.{mod.name}")
    _discovered = True


def load_scenario_file(path: str | Path) -> list[str]:
    """Import a user's scenario file; returns the names it registered.

    Raises
    ------
    UserError
        If the file does not exist, fails to import (the first line of the error is shown) or registers none.
    """
    _discover()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--scenario-file {path} does not exist")
    before = set(SCENARIOS)
    name = f"dlscience_user_scenario_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user's file: report its error in one line
        raise UserError(f"--scenario-file {path} failed to import: {type(exc).__name__}: {exc}") from None
    added = sorted(set(SCENARIOS) - before)
    if not added and not any(getattr(v, "__module__", None) == name for v in SCENARIOS.values()):
        raise UserError(
            f"--scenario-file {path} registers no scenario; decorate a Scenario with @register_scenario"
        )
    return added


def scenario_names() -> list[str]:
    _discover()
    return sorted(SCENARIOS)


def get_scenario(name: str, **args) -> Scenario:
    """A new instance of the scenario registered as ``name``.

    Raises
    ------
    UserError
        If no scenario has that name (the message lists the names).
    """
    _discover()
    if name not in SCENARIOS:
        raise UserError(f"unknown scenario {name!r}; choose from {', '.join(sorted(SCENARIOS))}")
    try:
        return SCENARIOS[name](**args)
    except TypeError as exc:
        raise UserError(f"scenario {name!r} does not take these arguments {args}: {exc}") from None
