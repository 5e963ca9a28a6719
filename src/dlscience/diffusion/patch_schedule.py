"""Patch-size schedules: the locality scale P_t of the LS/ELS machines as a function of diffusion time.

Kamb & Ganguli 2024, Sec. 5 and App. C.2: the patch size grows with the noise level and is calibrated per
trained network. The presets below are the calibrated schedules shipped with the authors' code
(research note els.md Sec. 1), listed for the grid t = 0.05, 0.10, ..., 1.00 (20 entries).

Mapping a time to an entry: entry k is calibrated at t_k = (k + 1) / 20, and a time t uses the entry of the
nearest grid point (rounded up between points). ``offset=1`` reproduces the reference code, whose machine at
t = i/20 uses the size calibrated at (i + 1)/20 (research note Sec. 1, "off-by-one").
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dlscience.errors import InputValidationError

__all__ = ["PatchSchedule", "PRESETS", "resolve_patch_size"]

PRESETS: dict[str, tuple[int, ...]] = {
    "fashion-mnist-resnet": (3, 3, 5, 5, 7, 7, 9, 9, 9, 11, 11, 11, 13, 13, 13, 15, 15, 15, 17, 17),
    "fashion-mnist-unet": (3, 3, 5, 5, 7, 7, 7, 9, 11, 11, 11, 13, 15, 15, 21, 23, 25, 25, 25, 25),
    "mnist-resnet": (3, 3, 5, 5, 5, 7, 7, 7, 9, 9, 11, 11, 11, 11, 13, 15, 15, 15, 15, 15),
    "mnist-unet": (3, 3, 3, 5, 5, 7, 7, 7, 9, 9, 9, 11, 13, 15, 17, 21, 23, 23, 25, 27),
    "cifar10-resnet": (3, 3, 3, 3, 5, 5, 5, 7, 7, 7, 7, 9, 9, 11, 11, 13, 15, 17, 17, 17),
    "cifar10-unet": (3, 3, 3, 3, 5, 5, 5, 5, 7, 7, 7, 7, 9, 9, 11, 13, 13, 15, 17, 25),
}


def _check_odd(p, where: str) -> int:
    if isinstance(p, bool) or not isinstance(p, (int,)) and not (isinstance(p, float) and p.is_integer()):
        raise InputValidationError(f"{where}: patch size {p!r} must be an odd positive integer")
    p = int(p)
    if p < 1 or p % 2 == 0:
        raise InputValidationError(f"{where}: patch size {p} must be an odd positive integer (1, 3, 5, ...)")
    return p


@dataclass(frozen=True)
class PatchSchedule:
    """A patch size per time-grid point.

    Parameters
    ----------
    sizes : tuple of odd int
        Patch sizes for t = 1/n, 2/n, ..., 1 (n = len(sizes), 20 for the presets).
    offset : int, default 0
        Use entry k + offset at grid point k (clipped); 1 reproduces the reference code's off-by-one.
    name : str
        A label for reports (preset name or file).

    Raises
    ------
    InputValidationError
        Empty schedule or a size that is not an odd positive integer.
    """

    sizes: tuple[int, ...]
    offset: int = 0
    name: str = "custom"

    def __post_init__(self):
        if len(self.sizes) == 0:
            raise InputValidationError("a patch-size schedule needs at least one size")
        object.__setattr__(self, "sizes", tuple(_check_odd(p, f"schedule {self.name!r}") for p in self.sizes))

    def index(self, t: float) -> int:
        """Entry used at time t in (0, 1]: the nearest grid point at or above t, plus ``offset``, clipped."""
        n = len(self.sizes)
        k = math.ceil(round(float(t) * n, 6)) - 1
        return min(max(k + self.offset, 0), n - 1)

    def at(self, t: float) -> int:
        """Patch size at time t in (0, 1]."""
        return self.sizes[self.index(t)]

    @property
    def max_size(self) -> int:
        """The largest patch size in the schedule."""
        return max(self.sizes)

    @classmethod
    def constant(cls, p: int, n: int = 20) -> PatchSchedule:
        """The same odd patch size ``p`` at every time."""
        return cls((p,) * n, name=f"P={p}")

    @classmethod
    def preset(cls, name: str, offset: int = 0) -> PatchSchedule:
        """A calibrated schedule from :data:`PRESETS` (raises InputValidationError for an unknown name)."""
        if name not in PRESETS:
            raise InputValidationError(
                f"unknown patch-size preset {name!r}; choose one of: {', '.join(PRESETS)}"
            )
        return cls(PRESETS[name], offset=offset, name=name)

    @classmethod
    def from_file(cls, path: str | Path, offset: int = 0) -> PatchSchedule:
        """Read a schedule from JSON: a list of sizes, or an object with a ``"sizes"`` list."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputValidationError(f"schedule file {path} does not exist") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise InputValidationError(f"schedule file {path} is not valid JSON: {exc}") from None
        sizes = data.get("sizes") if isinstance(data, dict) else data
        if not isinstance(sizes, list):
            raise InputValidationError(
                f'schedule file {path} must hold a list of odd sizes or {{"sizes": [...]}}'
            )
        return cls(tuple(sizes), offset=offset, name=str(path))

    def to_json(self) -> dict:
        """JSON-ready description: ``{"name", "sizes", "offset"}``."""
        return {"name": self.name, "sizes": list(self.sizes), "offset": self.offset}


def resolve_patch_size(
    patch_size: int | str | Sequence[int] | PatchSchedule, max_size: int | None = None
) -> PatchSchedule:
    """Turn the ``patch_size`` argument of a machine into a :class:`PatchSchedule`.

    Parameters
    ----------
    patch_size : int, str, sequence of int or PatchSchedule
        An odd size (same at every time), a preset name (:data:`PRESETS`), a path to a JSON schedule file, or
        a sequence of odd sizes over the time grid.
    max_size : int, optional
        Largest allowed size (the machine's limit, e.g. 2 * max(H, W) - 1).

    Raises
    ------
    InputValidationError
        Even, non-positive or oversized sizes, an unknown preset, an unreadable file.
    """
    if isinstance(patch_size, PatchSchedule):
        schedule = patch_size
    elif isinstance(patch_size, str):
        if patch_size in PRESETS:
            schedule = PatchSchedule.preset(patch_size)
        elif patch_size.endswith(".json") or Path(patch_size).exists():
            schedule = PatchSchedule.from_file(patch_size)
        else:
            raise InputValidationError(
                f"unknown patch-size preset {patch_size!r}; choose one of: {', '.join(PRESETS)}, "
                "or give an odd integer or a JSON schedule file"
            )
    elif isinstance(patch_size, Sequence):
        schedule = PatchSchedule(tuple(patch_size))
    else:
        schedule = PatchSchedule.constant(_check_odd(patch_size, "patch_size"))
    if max_size is not None and schedule.max_size > max_size:
        raise InputValidationError(
            f"patch size {schedule.max_size} is too large for these images: the largest allowed "
            f"size for this machine is {max_size}; choose a smaller odd size"
        )
    return schedule
