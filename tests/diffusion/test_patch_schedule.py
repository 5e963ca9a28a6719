"""Tests for dlscience.diffusion.patch_schedule: presets, time -> entry mapping, files and
errors."""

from __future__ import annotations

import json

import pytest
import torch

from dlscience.diffusion import PRESETS, ELSDenoiser, LocalDenoiser, PatchSchedule
from dlscience.diffusion.patch_schedule import resolve_patch_size
from dlscience.diffusion.reference import reference_els
from dlscience.errors import InputValidationError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_twenty_odd_sizes(name):
    """Every preset lists 20 odd sizes >= 3 (t = 0.05 ... 1.00), starting at 3 (els.md Sec. 1)."""
    sizes = PRESETS[name]
    assert len(sizes) == 20
    assert all(isinstance(p, int) and p >= 3 and p % 2 == 1 for p in sizes)
    assert sizes[0] == 3
    assert PatchSchedule.preset(name).sizes == sizes


def test_fashion_mnist_resnet_preset_is_the_calibrated_monotone_schedule():
    """FMNIST ResNet preset equals the note's list and is non-decreasing, 3 -> 17."""
    note = "3,3,5,5,7,7,9,9,9,11,11,11,13,13,13,15,15,15,17,17"
    sizes = PRESETS["fashion-mnist-resnet"]
    assert sizes == tuple(int(v) for v in note.split(","))
    assert all(b >= a for a, b in zip(sizes, sizes[1:], strict=False))
    assert sizes[-1] == 17


def test_index_mapping_and_offset():
    """t = k/20 uses entry k - 1 (0.05 -> 0, 1.0 -> 19); off-grid times round up; offset shifts and
    clips."""
    s = PatchSchedule(tuple(range(1, 41, 2)))  # entry k holds 2k + 1, so at() reveals the index
    assert s.index(0.05) == 0 and s.index(1.0) == 19 and s.index(0.5) == 9
    assert [s.index(i / 20) for i in range(1, 21)] == list(range(20))
    assert s.index(0.06) == 1 and s.index(0.0999999) == 1 and s.index(0.001) == 0
    assert s.at(0.05) == 1 and s.at(1.0) == 39
    shifted = PatchSchedule(s.sizes, offset=1)
    assert shifted.index(0.05) == 1 and shifted.index(0.95) == 19 and shifted.index(1.0) == 19  # clipped
    assert shifted.at(0.5) == s.at(0.55)
    assert PatchSchedule.preset("fashion-mnist-resnet", offset=1).at(0.05) == 3
    assert PatchSchedule.preset("fashion-mnist-resnet", offset=1).at(0.1) == 5


def test_constant_and_max_size():
    """constant(p) is p everywhere; max_size is the largest entry."""
    c = PatchSchedule.constant(5)
    assert len(c.sizes) == 20 and {c.at(i / 20) for i in range(1, 21)} == {5}
    assert PatchSchedule.preset("fashion-mnist-unet").max_size == 25


def test_from_file_round_trip(tmp_path):
    """to_json -> file -> from_file keeps sizes and offset; a bare JSON list also works."""
    s = PatchSchedule.preset("mnist-unet", offset=1)
    f = tmp_path / "sched.json"
    f.write_text(json.dumps(s.to_json()))
    back = PatchSchedule.from_file(f, offset=s.to_json()["offset"])
    assert back.sizes == s.sizes and back.offset == 1
    g = tmp_path / "list.json"
    g.write_text(json.dumps([1, 3, 5]))
    assert PatchSchedule.from_file(g).sizes == (1, 3, 5)
    assert resolve_patch_size(str(g)).sizes == (1, 3, 5)


def test_from_file_errors(tmp_path):
    """Missing file, invalid JSON, wrong structure and even sizes raise InputValidationError."""
    with pytest.raises(InputValidationError, match="does not exist"):
        PatchSchedule.from_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputValidationError, match="not valid JSON"):
        PatchSchedule.from_file(bad)
    bad.write_text(json.dumps({"scales": [3, 5]}))
    with pytest.raises(InputValidationError, match="list of odd sizes"):
        PatchSchedule.from_file(bad)
    bad.write_text(json.dumps([3, 4]))
    with pytest.raises(InputValidationError, match="odd positive integer"):
        PatchSchedule.from_file(bad)


@pytest.mark.parametrize(
    "arg, pattern",
    [
        ("no-such-preset", "unknown patch-size preset"),
        (4, "odd positive integer"),
        (0, "odd positive integer"),
        (-3, "odd positive integer"),
        (2.5, "odd positive integer"),
        (True, "odd positive integer"),
        ([3, 5, 6], "odd positive integer"),
        ([], "at least one size"),
    ],
)
def test_bad_patch_sizes_raise(arg, pattern):
    """Unknown presets, even, zero, negative, fractional and boolean sizes are refused with a clear
    message."""
    with pytest.raises(InputValidationError, match=pattern):
        resolve_patch_size(arg)


def test_unknown_preset_lists_choices():
    """The message names the bad preset and lists the valid ones."""
    with pytest.raises(InputValidationError, match="cifar10-resnet") as info:
        PatchSchedule.preset("cifar-11")
    assert "cifar-11" in str(info.value)


def test_oversized_patch_sizes_raise_in_machines():
    """LS/ELS-zeros accept up to 2 * side - 1, circular ELS up to the side; larger sizes name the
    limit."""
    imgs = torch.zeros(2, 1, 6, 6)
    LocalDenoiser(imgs, 11)
    ELSDenoiser(imgs, 11, "zeros")
    ELSDenoiser(imgs, 5, "circular")
    with pytest.raises(InputValidationError, match="too large.*is 11;"):
        LocalDenoiser(imgs, 13)
    with pytest.raises(InputValidationError, match="too large"):
        ELSDenoiser(imgs, 13, "zeros")
    with pytest.raises(InputValidationError, match="too large.*allowed size for this machine is 6;"):
        ELSDenoiser(imgs, 7, "circular")
    with pytest.raises(InputValidationError, match="too large"):
        ELSDenoiser(imgs, "fashion-mnist-resnet", "zeros")  # needs up to 17 > 11


def test_machine_follows_its_schedule(gen):
    """A machine built with a schedule uses P_t at time t: compare with the reference at that P."""
    sizes = (1,) * 5 + (3,) * 5 + (5,) * 10
    imgs = torch.rand(3, 1, 7, 7, generator=gen) * 2 - 1
    x = torch.randn(2, 1, 7, 7, generator=gen)
    m = ELSDenoiser(imgs, sizes, "zeros", precision="float64")
    for t, P in ((0.2, 1), (0.45, 3), (0.5, 3), (0.55, 5), (1.0, 5)):
        assert m.patch_size_at(t) == P
        ref = reference_els(imgs, x, t, P, "zeros")
        torch.testing.assert_close(m.denoise(x.double(), t), ref, rtol=0, atol=1e-10)
