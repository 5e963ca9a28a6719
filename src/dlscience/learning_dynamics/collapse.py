"""Measuring stochastic collapse in any torch model: vanishing and identical units, independent-neuron fraction
and effective rank per layer (Chen, Kunin, Yamamura & Ganguli, "Stochastic collapse: how gradient noise
attracts SGD dynamics towards simpler subnetworks", NeurIPS 2023, arXiv 2306.04251, Sec. 5 / Figs. 3-4;
research note theory_dynamics.md, paper 3 Sec. a "Measuring collapse", check 8).

Symbols (paper / reference notebook ``nbs/FIG3_FIG4.ipynb`` -> here)
--------------------------------------------------------------------
* theta_i (``w_cat[i]``) -> ``vectors[i]``: unit i's flattened incoming kernel, its bias, then its outgoing
  weights (the column i of the consuming layer, flattened over the consumer's outputs and kernel positions).
* *vanishing*: |theta_i| / max_j |theta_j| < ``vanish_threshold`` (0.1 in the paper).
* *identical*: 2 |theta_i - theta_j|^2 / (|theta_i|^2 + |theta_j|^2) < ``identical_threshold`` (0.1), among
  the units that do not vanish, grouped greedily.
* fraction of independent neurons = (number of groups of non-vanishing units) / layer width.
* effective rank = exp(H(p)), p_k = s_k / sum(s) over the singular values of the (width, dim) matrix of theta_i
  (Roy & Vetterli 2007); the notebook reports the entropy H itself, given here as ``rank_entropy``.

Grouping: units are visited in order; each unit not yet grouped starts a group and takes in every later
ungrouped unit within the threshold of it. (The notebook's loop can also make an already-grouped unit the head
of a second group; that quirk is not copied.)

Which layer consumes a unit's output. The invariant sets of the paper are defined for a unit between two
weight layers. For a :class:`torch.nn.Module` the weight layers are the :class:`~torch.nn.Linear`,
:class:`~torch.nn.Conv2d` and :class:`~torch.nn.ConvTranspose2d` modules in registration order; a layer's
consumer is the first later one whose input size equals its output size (for a Linear after a Conv2d, an input
size that is a multiple of the channel count: a flattened feature map, channel-major). This is exact for
feed-forward stacks (MLPs, VGG-like CNNs) and a heuristic for residual, concatenating and attention networks
(a residual stream feeds every later layer; a UNet skip feeds a decoder layer too): pass ``consumers`` to fix
the pairing, or ``outgoing=False`` to use incoming weights only. A layer without a consumer is measured on its
incoming weights and bias (``consumer`` None in the table). A bare state_dict is read the same way, with 2-D
weights taken as Linear and 4-D weights as Conv2d.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dlscience.errors import InputValidationError, UserError

__all__ = [
    "VANISH_THRESHOLD",
    "IDENTICAL_THRESHOLD",
    "WeightLayer",
    "LayerCollapse",
    "weight_layers",
    "unit_vectors",
    "vanishing_units",
    "identical_groups",
    "effective_rank",
    "layer_collapse",
    "collapse_report",
    "format_report",
    "load_model",
    "layer_figure",
    "report_figure",
]

VANISH_THRESHOLD = 0.1
IDENTICAL_THRESHOLD = 0.1


@dataclass(frozen=True)
class WeightLayer:
    """One weight layer: ``name``, ``kind`` ("linear", "conv2d", "conv_transpose2d"), ``weight`` and ``bias``.

    Shapes: linear (out, in); conv2d (out, in / groups, kh, kw); conv_transpose2d (in, out / groups, kh, kw).
    ``groups`` > 1 layers are measured on their incoming weights only.
    """

    name: str
    kind: str
    weight: torch.Tensor
    bias: torch.Tensor | None
    groups: int = 1

    @property
    def width(self) -> int:
        """Number of units (output features or channels)."""
        if self.kind == "conv_transpose2d":
            return self.weight.shape[1] * self.groups
        return self.weight.shape[0]

    @property
    def fan_in(self) -> int:
        """Input features (linear) or channels (convolutions)."""
        if self.kind == "linear":
            return self.weight.shape[1]
        if self.kind == "conv2d":
            return self.weight.shape[1] * self.groups
        return self.weight.shape[0]

    def incoming(self) -> torch.Tensor:
        """(width, fan_in * kernel) float64: each unit's flattened incoming kernel."""
        w = self.weight.detach().to("cpu", torch.float64)
        if self.kind == "conv_transpose2d":
            if self.groups != 1:
                return w.reshape(self.groups, -1, *w.shape[1:]).transpose(1, 2).reshape(self.width, -1)
            return w.transpose(0, 1).reshape(self.width, -1)
        return w.reshape(w.shape[0], -1)

    def outgoing_of(self, producer: WeightLayer) -> torch.Tensor | None:
        """(producer.width, k) float64: the weights by which this layer reads each unit of ``producer``, or
        None when this layer does not consume it (sizes do not match, or grouped)."""
        w = self.weight.detach().to("cpu", torch.float64)
        n = producer.width
        if self.groups != 1:
            return None
        if self.kind == "conv2d" and w.shape[1] == n:
            return w.transpose(0, 1).reshape(n, -1)
        if self.kind == "conv_transpose2d" and w.shape[0] == n:
            return w.reshape(n, -1)
        if self.kind == "linear":
            if w.shape[1] == n:
                return w.T.contiguous()
            if producer.kind != "linear" and w.shape[1] % n == 0:  # flattened (C, H, W) feature map
                return w.reshape(w.shape[0], n, -1).transpose(0, 1).reshape(n, -1)
        return None


def weight_layers(model: nn.Module | Mapping[str, torch.Tensor]) -> list[WeightLayer]:
    """The weight layers of a module (Linear, Conv2d, ConvTranspose2d, in registration order) or of a
    state_dict (``*.weight`` of 2 dimensions: linear; 4: conv2d; with ``*.bias`` beside them).

    Raises
    ------
    InputValidationError
        If ``model`` is neither a module nor a mapping of tensors.
    """
    layers = []
    if isinstance(model, nn.Module):
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear):
                layers.append(WeightLayer(name, "linear", m.weight, m.bias))
            elif isinstance(m, nn.Conv2d):
                layers.append(WeightLayer(name, "conv2d", m.weight, m.bias, m.groups))
            elif isinstance(m, nn.ConvTranspose2d):
                layers.append(WeightLayer(name, "conv_transpose2d", m.weight, m.bias, m.groups))
        return layers
    if not isinstance(model, Mapping) or not all(torch.is_tensor(v) for v in model.values()):
        raise InputValidationError(
            "expected a torch.nn.Module or a state_dict (a mapping of names to tensors)"
        )
    for key, w in model.items():
        if not key.endswith("weight") or w.ndim not in (2, 4) or not w.is_floating_point():
            continue
        name = key[: -len("weight")].rstrip(".")
        bias = model.get(key[: -len("weight")] + "bias")
        layers.append(WeightLayer(name, "linear" if w.ndim == 2 else "conv2d", w, bias))
    return layers


def unit_vectors(
    model: nn.Module | Mapping[str, torch.Tensor],
    *,
    outgoing: bool = True,
    consumers: Mapping[str, str | None] | None = None,
) -> list[tuple[WeightLayer, str | None, torch.Tensor]]:
    """theta_i for every unit of every weight layer: ``[(layer, consumer name or None, vectors)]`` with
    ``vectors`` (width, dim) float64 = [incoming kernel | bias | outgoing weights] (module docstring).

    Parameters
    ----------
    model : nn.Module or state_dict
    outgoing : bool
        Append the consumer's outgoing weights (the paper's definition); False: incoming kernel and bias only.
    consumers : mapping layer name -> consumer name (or None), optional
        Overrides the automatic pairing for the layers named.

    Raises
    ------
    InputValidationError
        A consumer named in ``consumers`` is not a weight layer, or does not read the layer's output.
    """
    layers = weight_layers(model)
    by_name = {layer.name: layer for layer in layers}
    consumers = dict(consumers or {})
    out = []
    for k, layer in enumerate(layers):
        parts = [layer.incoming()]
        if layer.bias is not None:
            parts.append(layer.bias.detach().to("cpu", torch.float64).reshape(-1, 1))
        consumer = None
        if outgoing and layer.groups == 1:
            if layer.name in consumers:
                cname = consumers[layer.name]
                if cname is not None:
                    if cname not in by_name:
                        raise InputValidationError(
                            f"consumer {cname!r} of {layer.name!r} is not a weight layer"
                        )
                    w_out = by_name[cname].outgoing_of(layer)
                    if w_out is None:
                        raise InputValidationError(
                            f"{cname!r} ({by_name[cname].fan_in} inputs) cannot read the {layer.width} units "
                            f"of {layer.name!r}"
                        )
                    consumer, parts = cname, [*parts, w_out]
            else:
                for later in layers[k + 1 :]:
                    w_out = later.outgoing_of(layer)
                    if w_out is not None:
                        consumer, parts = later.name, [*parts, w_out]
                        break
        out.append((layer, consumer, torch.cat(parts, 1)))
    return out


def vanishing_units(vectors: torch.Tensor, threshold: float = VANISH_THRESHOLD) -> torch.Tensor:
    """Boolean (width,): |theta_i| / max_j |theta_j| < ``threshold`` (all True for an all-zero layer).

    Parameters
    ----------
    vectors : Tensor (width, dim)
    threshold : float in [0, 1]
    """
    norms = vectors.double().norm(dim=1)
    top = norms.max() if len(norms) else torch.tensor(0.0)
    if top == 0:
        return torch.ones(len(norms), dtype=torch.bool)
    return norms / top < threshold


def _normalised_distances(vectors: torch.Tensor) -> torch.Tensor:
    """(n, n): 2 |theta_i - theta_j|^2 / (|theta_i|^2 + |theta_j|^2) (0 on the diagonal)."""
    v = vectors.double()
    sq = (v * v).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * v @ v.T).clamp_min(0)
    d = 2 * d2 / (sq[:, None] + sq[None, :]).clamp_min(1e-300)
    d.fill_diagonal_(0.0)
    return d


def identical_groups(vectors: torch.Tensor, threshold: float = IDENTICAL_THRESHOLD) -> list[list[int]]:
    """Greedy groups of identical units: 2 |theta_i - theta_j|^2 / (|theta_i|^2 + |theta_j|^2) < ``threshold``
    to the group's first unit (module docstring). Pass the non-vanishing units only.

    Parameters
    ----------
    vectors : Tensor (n, dim)

    Returns
    -------
    list of lists of row indices, in order of their first unit; every row is in exactly one group.
    """
    v = vectors.double()
    n = len(v)
    sq = (v * v).sum(1)
    free = torch.ones(n, dtype=torch.bool)
    groups = []
    for i in range(n):  # one row of distances at a time: memory O(n), not O(n^2)
        if not free[i]:
            continue
        d = 2 * (sq + sq[i] - 2 * (v @ v[i])).clamp_min(0) / (sq + sq[i]).clamp_min(1e-300)
        members = free & (d < threshold)
        members[i] = True
        free &= ~members
        groups.append([int(j) for j in torch.nonzero(members).flatten()])
    return groups


def effective_rank(vectors: torch.Tensor, eps: float = 1e-12) -> tuple[float, float]:
    """Entropy effective rank of a (width, dim) matrix: p_k = s_k / sum s, H = -sum p log p; returns
    ``(exp(H), H)``. A zero matrix has rank 0 (H = -inf is returned as nan)."""
    s = torch.linalg.svdvals(vectors.double())
    if s.sum() <= 0:
        return 0.0, float("nan")
    p = s / s.sum()
    h = float(-(p * torch.log(p + eps)).sum())
    return math.exp(h), h


@dataclass(frozen=True)
class LayerCollapse:
    """One row of the collapse report (see :func:`collapse_report`)."""

    layer: str
    kind: str
    width: int
    consumer: str | None
    dim: int
    vanishing: int
    groups: int
    largest_group: int
    independent_fraction: float
    effective_rank: float
    rank_entropy: float


def layer_collapse(
    name: str,
    vectors: torch.Tensor,
    *,
    kind: str = "linear",
    consumer: str | None = None,
    vanish_threshold: float = VANISH_THRESHOLD,
    identical_threshold: float = IDENTICAL_THRESHOLD,
) -> tuple[LayerCollapse, dict]:
    """Measure one layer from its unit vectors (width, dim).

    Returns
    -------
    LayerCollapse
        The table row.
    dict
        Details for figures: ``relative_norms`` (width,), ``vanishing`` (width,) bool, ``groups`` (lists of
        unit indices of the layer), ``distances`` (n, n) among non-vanishing units.
    """
    vectors = vectors.double()
    norms = vectors.norm(dim=1)
    rel = norms / norms.max() if len(norms) and norms.max() > 0 else torch.zeros_like(norms)
    van = vanishing_units(vectors, vanish_threshold)
    keep = torch.nonzero(~van).flatten()
    local = identical_groups(vectors[keep], identical_threshold)
    groups = [[int(keep[j]) for j in g] for g in local]
    erank, h = effective_rank(vectors)
    width = len(vectors)
    row = LayerCollapse(
        layer=name,
        kind=kind,
        width=width,
        consumer=consumer,
        dim=vectors.shape[1],
        vanishing=int(van.sum()),
        groups=len(groups),
        largest_group=max((len(g) for g in groups), default=0),
        independent_fraction=len(groups) / width if width else float("nan"),
        effective_rank=erank,
        rank_entropy=h,
    )
    detail = {
        "relative_norms": rel.numpy(),
        "vanishing": van.numpy(),
        "groups": groups,
        "distances": _normalised_distances(vectors[keep]).numpy() if len(keep) <= 2048 else None,
    }
    return row, detail


def collapse_report(
    model: nn.Module | Mapping[str, torch.Tensor],
    *,
    vanish_threshold: float = VANISH_THRESHOLD,
    identical_threshold: float = IDENTICAL_THRESHOLD,
    outgoing: bool = True,
    consumers: Mapping[str, str | None] | None = None,
    min_width: int = 2,
    details: bool = False,
):
    """The per-layer collapse table of ``model`` (paper Sec. 5, Figs. 3-4 measurements).

    Parameters
    ----------
    model : nn.Module or state_dict
    vanish_threshold, identical_threshold : float in (0, 1]
        The paper's relative thresholds (0.1 and 0.1).
    outgoing, consumers : see :func:`unit_vectors`
    min_width : int
        Layers with fewer units (e.g. a scalar read-out) are left out.
    details : bool
        Also return the per-layer details of :func:`layer_collapse` (for figures).

    Returns
    -------
    list of dict
        One row per layer: ``layer, kind, width, consumer, dim, vanishing, groups, largest_group,
        independent_fraction, effective_rank, rank_entropy``; with ``details``, ``(rows, details)``.

    Raises
    ------
    InputValidationError
        A threshold outside (0, 1], or a model without weight layers.
    """
    for what, value in (("vanish_threshold", vanish_threshold), ("identical_threshold", identical_threshold)):
        if not 0 < value <= 1:
            raise InputValidationError(f"{what} must be in (0, 1], got {value}")
    rows, extra = [], []
    for layer, consumer, vectors in unit_vectors(model, outgoing=outgoing, consumers=consumers):
        if layer.width < min_width:
            continue
        row, detail = layer_collapse(
            layer.name,
            vectors,
            kind=layer.kind,
            consumer=consumer,
            vanish_threshold=vanish_threshold,
            identical_threshold=identical_threshold,
        )
        rows.append(asdict(row))
        extra.append(detail)
    if not rows:
        raise InputValidationError("the model has no Linear or Conv2d layer with at least min_width units")
    return (rows, extra) if details else rows


def format_report(rows: list[dict]) -> str:
    """The report as an aligned text table (one line per layer)."""
    w = max(12, *(len(r["layer"]) for r in rows))
    head = f"{'layer':<{w}} {'kind':<8} {'width':>6} {'vanish':>6} {'groups':>6} {'indep':>6} {'eff.rank':>8}  consumer"
    lines = [head]
    for r in rows:
        kind = {"linear": "linear", "conv2d": "conv2d", "conv_transpose2d": "convT2d"}[r["kind"]]
        lines.append(
            f"{r['layer']:<{w}} {kind:<8} {r['width']:>6} {r['vanishing']:>6} {r['groups']:>6} "
            f"{r['independent_fraction']:>6.3f} {r['effective_rank']:>8.1f}  {r['consumer'] or '-'}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ loading models
def load_model(path: str | Path, *, trust_pickle: bool = False) -> tuple[nn.Module | dict, str]:
    """Load a model to report on: a project model file or any torch checkpoint.

    Recognised, in order: a diffusion network of ``dlscience diffusion train`` (``model.pt``: ResNet or UNet,
    via :func:`dlscience.diffusion.training.load_network`); an ICL transformer of ``dlscience icl train``
    (:func:`dlscience.icl.training.load_transformer`); a whole pickled ``nn.Module`` (only with
    ``trust_pickle``: unpickling runs code from the file); a state_dict, bare or under a ``"model"``,
    ``"state_dict"`` or ``"model_state_dict"`` key (a dlscience training checkpoint, for instance). A folder
    is read as its ``model.pt``.

    Returns
    -------
    model : nn.Module or state_dict
    kind : str
        What was recognised ("diffusion resnet", "icl transformer", "module", "state_dict").

    Raises
    ------
    UserError
        No file there; a damaged or non-torch file; a pickled object without ``trust_pickle``; a file holding
        no weights (one line naming the file and the fix).
    """
    import pickle
    import zipfile

    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise UserError(f"no checkpoint at {path}; give a model file (.pt) or a folder holding model.pt")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc) and "Unsupported class" not in str(exc):
            raise UserError(f"{path} is damaged or not a torch file ({_first_line(exc)})") from None
        if not trust_pickle:
            raise UserError(
                f"{path} holds pickled Python objects (a whole nn.Module?); loading it runs code from the file: "
                "pass --trust-pickle if you trust it"
            ) from None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any failure of an untrusted pickle is the file's fault
            raise UserError(f"{path} could not be unpickled ({_first_line(exc)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, OSError) as exc:
        if isinstance(exc, OSError) and exc.filename is not None:
            raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
        raise UserError(f"{path} is damaged or not a torch file ({_first_line(exc)})") from None
    if isinstance(saved, nn.Module):
        return saved.cpu(), "module"
    if isinstance(saved, dict):
        cfg = saved.get("config")
        if isinstance(cfg, dict) and "arch" in cfg and "image_shape" in saved:
            from dlscience.diffusion.training import load_network

            return load_network(path).model, f"diffusion {cfg['arch']}"
        if isinstance(cfg, dict) and "n_embd" in cfg and "model" in saved:
            from dlscience.icl.training import load_transformer

            return load_transformer(path)[0], "icl transformer"
        for key in ("model", "state_dict", "model_state_dict"):
            inner = saved.get(key)
            if isinstance(inner, nn.Module):
                return inner.cpu(), "module"
            if _is_state_dict(inner):
                return dict(inner), "state_dict"
        if _is_state_dict(saved):
            return dict(saved), "state_dict"
    raise UserError(
        f"{path} holds no model weights (expected an nn.Module, a state_dict, or a dict with a 'model' or "
        "'state_dict' entry)"
    )


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


# ------------------------------------------------------------------------------------------ figures
def layer_figure(
    row: dict,
    detail: dict,
    *,
    vanish_threshold: float = VANISH_THRESHOLD,
    identical_threshold: float = IDENTICAL_THRESHOLD,
):
    """One layer's figure: sorted relative norms |theta_i| / max |theta| with the vanishing threshold, and each
    non-vanishing unit's normalised squared distance to its nearest other unit, sorted, with the identical
    threshold (units below it have a duplicate). Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    from dlscience import plotting  # noqa: F401  (headless backend)

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(7.5, 2.8))
    rel = np.sort(detail["relative_norms"])[::-1]
    ax0.plot(np.arange(len(rel)), rel, ".", ms=3)
    ax0.axhline(vanish_threshold, color="C3", lw=0.8, label=f"vanishing < {vanish_threshold:g}")
    ax0.set(xlabel="unit (sorted)", ylabel="|theta_i| / max |theta|", ylim=(0, 1.05))
    ax0.legend(fontsize=7)
    ax0.set_title(f"{row['vanishing']} of {row['width']} units vanish", fontsize=9)
    d = detail["distances"]
    if d is not None and len(d) > 1:
        nearest = np.sort(np.where(np.eye(len(d), dtype=bool), np.inf, d).min(1))
        ax1.semilogy(np.arange(len(nearest)), np.maximum(nearest, 1e-12), ".", ms=3)
        ax1.axhline(identical_threshold, color="C3", lw=0.8, label=f"identical < {identical_threshold:g}")
        ax1.legend(fontsize=7)
    ax1.set(xlabel="non-vanishing unit (sorted)", ylabel="distance to nearest unit")
    ax1.set_title(
        f"{row['groups']} groups: independent fraction {row['independent_fraction']:.3f}", fontsize=9
    )
    fig.suptitle(
        f"{row['layer']} ({row['kind']}, width {row['width']}, consumer {row['consumer'] or '-'}); "
        f"effective rank {row['effective_rank']:.1f}",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def report_figure(rows: list[dict], title: str = ""):
    """All layers at once: the independent fraction, the vanishing fraction and the effective rank over its
    largest possible value min(width, dim), per layer. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    from dlscience import plotting  # noqa: F401

    n = len(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * n + 2), 3.4))
    x = np.arange(n)
    ax.bar(x - 0.27, [r["independent_fraction"] for r in rows], 0.27, label="independent fraction")
    ax.bar(x, [r["vanishing"] / r["width"] for r in rows], 0.27, label="vanishing fraction")
    ax.bar(
        x + 0.27,
        [r["effective_rank"] / min(r["width"], r["dim"]) for r in rows],
        0.27,
        label="effective rank / min(width, dim)",
    )
    ax.set_xticks(x, [r["layer"] for r in rows], rotation=70, fontsize=7)
    ax.set(ylim=(0, 1.05), title=title)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig
