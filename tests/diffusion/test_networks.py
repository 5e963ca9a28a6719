"""The paper's diffusion networks (ResNet, UNet) as denoisers, and their training with exact resume."""

from __future__ import annotations

import pytest
import torch

from dlscience.diffusion.networks import NetworkDenoiser, ResNet, UNet, build_network, timestep_embedding
from dlscience.diffusion.schedule import alpha_bar
from dlscience.diffusion.training import TrainConfig, load_network, train
from dlscience.errors import InputValidationError, UserError


@pytest.mark.parametrize("arch", ["resnet", "unet"])
@pytest.mark.parametrize("num_classes", [None, 3])
def test_shapes(gen, arch, num_classes):
    net = build_network(arch, 2, width=8, num_classes=num_classes)
    x = torch.randn(4, 2, 8, 12, generator=gen)
    labels = None if num_classes is None else torch.tensor([0, 1, 2, 0])
    assert net(x, torch.rand(4, generator=gen), labels).shape == x.shape


def test_circular_resnet_is_translation_equivariant(gen):
    """With circular padding every layer commutes with circular shifts (the time bias is spatially constant)."""
    net = ResNet(1, width=8, depth=3, padding="circular")
    x, t = torch.randn(2, 1, 10, 10, generator=gen), torch.tensor([0.3, 0.8])
    with torch.no_grad():
        shifted = net(torch.roll(x, (3, -2), (2, 3)), t)
        torch.testing.assert_close(shifted, torch.roll(net(x, t), (3, -2), (2, 3)), rtol=0, atol=1e-5)
        zero = ResNet(1, width=8, depth=3, padding="zeros")
        zero.load_state_dict(net.state_dict())
        assert (
            zero(torch.roll(x, (3, -2), (2, 3)), t) - torch.roll(zero(x, t), (3, -2), (2, 3))
        ).abs().max() > 1e-3


def test_resnet_receptive_field_is_17_at_depth_6(gen):
    """Up-projection, depth residual layers and down-projection, all 3x3: the output at a pixel depends on a
    (2 (depth + 2) + 1)-wide window -- 17 x 17 for the paper's depth 6."""
    torch.manual_seed(0)
    net = ResNet(1, width=8, depth=6)
    x = torch.randn(1, 1, 33, 33, generator=gen).requires_grad_()
    net(x, torch.tensor([0.5]))[0, 0, 16, 16].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    assert rows.min() == 16 - 8 and rows.max() == 16 + 8


def test_network_denoiser_inverts_the_forward_process():
    """x0_hat = (x_t - sigma eps) / a: with a network that outputs the true noise, x0_hat is the clean image."""
    x0 = torch.rand(3, 1, 8, 8) * 2 - 1
    eps = torch.randn(3, 1, 8, 8)
    t = 0.4
    ab = float(alpha_bar(t))
    x_t = ab**0.5 * x0 + (1 - ab) ** 0.5 * eps

    class Oracle(torch.nn.Module):
        def forward(self, x, t, labels=None):
            return eps

    d = NetworkDenoiser(Oracle(), (1, 8, 8))
    torch.testing.assert_close(d.denoise(x_t, t), x0, rtol=0, atol=1e-5)
    torch.testing.assert_close(d.eps(x_t, t), eps)
    torch.testing.assert_close(d.score(x_t, t), -eps / (1 - ab) ** 0.5)


def test_timestep_embedding_and_bad_input():
    e = timestep_embedding(torch.tensor([0.0, 0.5]), 8)
    assert e.shape == (2, 8) and torch.allclose(e[0, :4], torch.ones(4))
    with pytest.raises(InputValidationError, match="padding"):
        ResNet(1, padding="reflect")
    with pytest.raises(InputValidationError, match="divisible by 4"):
        UNet(1, (4, 8, 16))(torch.zeros(1, 1, 6, 6), torch.tensor([0.5]))
    with pytest.raises(InputValidationError, match="class-conditional"):
        ResNet(1, width=4, num_classes=3)(torch.zeros(1, 1, 6, 6), torch.tensor([0.5]))


TINY = TrainConfig(
    arch="resnet",
    dataset="digits",
    n_train=64,
    width=8,
    batch_size=8,
    steps=6,
    checkpoint_every=3,
    conditional=True,
)


def _weights(folder):
    return torch.load(folder / "model.pt", weights_only=True)["model"]


@pytest.mark.parametrize("arch", ["resnet", "unet"])
def test_training_resumes_to_the_identical_state(tmp_path, arch):
    """6 steps in one go equal 3 steps, a stop, and 3 more from the checkpoint (weights bit for bit)."""
    cfg = TrainConfig(**{**TINY.__dict__, "arch": arch})
    train(cfg, tmp_path / "straight", progress=False)
    train(TrainConfig(**{**cfg.__dict__, "steps": 3}), tmp_path / "resumed", progress=False)
    train(cfg, tmp_path / "resumed", progress=False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_trained_model_loads_as_a_denoiser_and_other_settings_are_refused(tmp_path):
    summary = train(TINY, tmp_path, progress=False)
    assert summary["steps"] == 6 and len(summary["loss_curve"]) == 1
    d = load_network(tmp_path)
    x = torch.randn(2, 1, 8, 8)
    assert d.denoise(x, 0.5, torch.tensor([1, 2])).shape == x.shape
    with pytest.raises(UserError, match="other settings"):
        train(TrainConfig(**{**TINY.__dict__, "seed": 3}), tmp_path, progress=False)
    with pytest.raises(UserError, match="no model"):
        load_network(tmp_path / "missing")


def test_linear_up_projection_keeps_an_affine_path_and_relu_does_not(gen):
    """With no residual layers the linear-up ResNet is down(up(x) + b): affine in x. The ReLU variant is not."""
    torch.manual_seed(0)
    linear = ResNet(1, width=8, depth=0, up_projection="linear")
    relu = ResNet(1, width=8, depth=0)
    relu.load_state_dict(linear.state_dict())
    x1, x2 = torch.randn(2, 1, 1, 6, 6, generator=gen)
    t = torch.tensor([0.5])
    with torch.no_grad():
        for net, affine in ((linear, True), (relu, False)):
            gap = (net(x1 + x2, t) + net(torch.zeros_like(x1), t) - net(x1, t) - net(x2, t)).abs().max()
            assert (gap < 1e-5) == affine
    with pytest.raises(InputValidationError, match="up_projection"):
        ResNet(1, up_projection="gelu")
    with pytest.raises(InputValidationError, match="up-projection"):
        TrainConfig(up_projection="gelu").resolved()


def test_runs_from_before_the_up_projection_option_resume_and_load_as_relu(tmp_path):
    """Checkpoints and models written before ``up_projection`` existed carry no such setting and had the ReLU:
    they resume with the default ``up_projection="relu"`` (bit for bit) and load as a ReLU network."""
    relu = TINY
    linear = TrainConfig(**{**TINY.__dict__, "up_projection": "linear"})
    train(relu, tmp_path / "straight", progress=False)
    train(TrainConfig(**{**relu.__dict__, "steps": 3}), tmp_path / "old", progress=False)
    ckpt = torch.load(tmp_path / "old" / "checkpoint.pt", weights_only=False)
    assert "up_projection" not in ckpt["settings"]  # the layout of an old checkpoint
    with pytest.raises(UserError, match="other settings"):
        train(linear, tmp_path / "old", progress=False)  # another network
    train(relu, tmp_path / "old", progress=False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "old")
    assert all(torch.equal(a[k], b[k]) for k in a)

    saved = torch.load(tmp_path / "old" / "model.pt", weights_only=False)
    del saved["config"]["up_projection"]  # a model.pt written before the option
    torch.save(saved, tmp_path / "legacy.pt")
    assert load_network(tmp_path / "legacy.pt").model.up_projection == "relu"
    assert load_network(tmp_path / "straight").model.up_projection == "relu"
    assert load_network(tmp_path / "old").model.up_projection == "relu"
    train(linear, tmp_path / "linear", progress=False)
    assert load_network(tmp_path / "linear").model.up_projection == "linear"


def test_weight_average_is_the_ema_of_the_iterates_and_resumes_exactly(tmp_path):
    """With ``ema_decay`` d the saved model is e_k = d e_(k-1) + (1 - d) w_k over the iterates w_k (e_1 = w_1),
    computed here from the iterates of a run without an average; the iterates themselves are unchanged
    (``model_raw``), the average resumes bit for bit, and switching it on when extending a run starts it there."""
    d = 0.7
    cfg = TrainConfig(**{**TINY.__dict__, "checkpoint_every": 1, "ema_decay": 0.0})
    iterates = []
    for k in range(1, 7):  # the plain run's weights after every step (resumes are exact, tested above)
        train(TrainConfig(**{**cfg.__dict__, "steps": k}), tmp_path / "plain", progress=False)
        iterates.append(_weights(tmp_path / "plain"))

    def ema(ws):
        e = {k: v.clone() for k, v in ws[0].items()}
        for w in ws[1:]:
            e = {k: d * e[k] + (1 - d) * w[k] for k in e}
        return e

    averaged = TrainConfig(**{**cfg.__dict__, "ema_decay": d})
    summary = train(averaged, tmp_path / "ema", progress=False)
    saved = torch.load(tmp_path / "ema" / "model.pt", weights_only=True)
    expected = ema(iterates)
    for k in expected:
        assert torch.equal(saved["model_raw"][k], iterates[-1][k]), k
        torch.testing.assert_close(saved["model"][k], expected[k], rtol=1e-5, atol=1e-6)
    assert summary["ema"] == {"decay": d, "start_step": 0}
    assert not torch.equal(saved["model"]["down.weight"], saved["model_raw"]["down.weight"])

    train(TrainConfig(**{**averaged.__dict__, "steps": 3}), tmp_path / "resumed", progress=False)
    train(averaged, tmp_path / "resumed", progress=False)
    resumed = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)
    assert all(torch.equal(resumed["model"][k], saved["model"][k]) for k in expected)

    train(TrainConfig(**{**cfg.__dict__, "steps": 3}), tmp_path / "late", progress=False)
    late = train(averaged, tmp_path / "late", progress=False)  # an average switched on at step 3
    assert late["ema"]["start_step"] == 3
    late_model = torch.load(tmp_path / "late" / "model.pt", weights_only=True)["model"]
    for k in expected:
        torch.testing.assert_close(late_model[k], ema(iterates[3:])[k], rtol=1e-5, atol=1e-6)
    raw = load_network(tmp_path / "late", raw=True).model.state_dict()
    assert torch.equal(raw["down.weight"], iterates[-1]["down.weight"])
    with pytest.raises(InputValidationError, match="ema-decay"):
        TrainConfig(ema_decay=1.0).resolved()
