"""``create_model(name, feature_dim=d)``: a linear bottleneck to d features, for every loss head."""

from __future__ import annotations

import pytest
import torch

from robustloss.errors import ConfigError
from robustloss.losses import LOSSES, create_loss
from robustloss.models import MODELS, create_model
from robustloss.models.bottleneck import BottleneckBackbone
from robustloss.models.registry import model_parameters
from robustloss.models.saved import HeadSpec, ModelSpec, load_model, save_model

# (name, constructor arguments): one gray net, the black-box substitute, and the CIFAR nets at a
# small input so the test stays fast (global pooling makes ResNet features independent of the size;
# cnn8 needs 8x8 for its three pools).
MODELS_UNDER_TEST = {
    "lenet5": {"in_channels": 1, "input_size": 28},
    "cnn3": {"in_channels": 1, "input_size": 28},
    "resnet20": {"in_channels": 1, "input_size": 8},
    "cnn8": {"in_channels": 3, "input_size": 8},
    # The pre-activation ResNet family at its shallowest (one bottleneck block a stage): the heads
    # only see the features, and the deep presets are slow on a busy CPU.
    "resnetv2": {"in_channels": 3, "input_size": 8, "depth": 11},
}
ALL_LOSSES = LOSSES.names()


def _loss_params(name: str) -> dict:
    # Center losses default to a 256-d embedding in front of their centers; embed_dim=None puts the
    # centers on the d-dim features themselves, which is what a low-dimensional feature layer is for.
    return {"embed_dim": None} if "embed_dim" in LOSSES.parameters(name) else {}


def _batch(params: dict, n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, params["in_channels"], params["input_size"], params["input_size"], generator=g)
    return x, torch.arange(n) % 10


@pytest.mark.parametrize("loss_name", ALL_LOSSES)
@pytest.mark.parametrize("feature_dim", [2, 3])
@pytest.mark.parametrize("model_name", sorted(MODELS_UNDER_TEST))
def test_every_loss_head_trains_on_low_dim_features(model_name, feature_dim, loss_name):
    params = MODELS_UNDER_TEST[model_name]
    torch.manual_seed(0)
    model = create_model(model_name, feature_dim=feature_dim, **params)
    loss = create_loss(loss_name, **_loss_params(loss_name))
    head = loss.make_head(model.feature_dim, model.num_classes)
    if head is not None:
        model.replace_head(head)
    loss.bind(model)
    model.train()

    x, y = _batch(params)
    logits, z = model.forward_with_features(x)
    assert z.shape == (len(x), feature_dim)
    assert logits.shape == (len(x), 10)
    value = loss(logits, y, z)
    value.backward()
    assert torch.isfinite(value)
    projection = model.backbone.project.weight
    assert projection.shape == (feature_dim, MODELS.create(model_name, **params).feature_dim)
    assert projection.grad is not None and torch.isfinite(projection.grad).all()
    assert projection.grad.abs().sum() > 0, "the loss must train the bottleneck"


@pytest.mark.parametrize("model_name", sorted(MODELS_UNDER_TEST))
def test_features_have_the_requested_dimension(model_name):
    params = MODELS_UNDER_TEST[model_name]
    model = create_model(model_name, feature_dim=3, **params).eval()
    x, _ = _batch(params, n=5)
    with torch.no_grad():
        z = model.features(x)
        assert z.shape == (5, 3) and model.feature_dim == 3
        assert torch.allclose(model(x), model.head(z))
    assert isinstance(model.backbone, BottleneckBackbone)
    assert (z < 0).any(), "the bottleneck is linear: features may be negative (no ReLU after it)"


def test_without_feature_dim_the_model_is_unchanged():
    torch.manual_seed(0)
    plain = create_model("lenet5")
    torch.manual_seed(0)
    explicit_none = create_model("lenet5", feature_dim=None)
    assert plain.feature_dim == explicit_none.feature_dim == 84
    assert plain.state_dict().keys() == explicit_none.state_dict().keys()
    assert not isinstance(plain.backbone, BottleneckBackbone)


@pytest.mark.parametrize("bad", [0, -2, 2.5, 2.0, "2", True])
def test_bad_feature_dim_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="feature_dim must be a positive integer"):
        create_model("lenet5", feature_dim=bad)


def test_unknown_parameter_lists_feature_dim_among_the_valid_ones():
    assert "feature_dim" in model_parameters("cnn3")
    with pytest.raises(ConfigError, match="valid parameters: .*feature_dim"):
        create_model("cnn3", feature_dims=2)


@pytest.mark.parametrize("feature_dim", [2, 3])
@pytest.mark.parametrize("model_name", sorted(MODELS_UNDER_TEST))
def test_saved_model_rebuilds_with_its_feature_dim(model_name, feature_dim, tmp_path):
    params = MODELS_UNDER_TEST[model_name] | {"num_classes": 10, "feature_dim": feature_dim}
    spec = ModelSpec(name=model_name, params=params, head=HeadSpec("mmc", {"embed_dim": None}), loss="mmc")
    torch.manual_seed(0)
    model = spec.build()
    x, _ = _batch(MODELS_UNDER_TEST[model_name], n=4)
    with torch.no_grad():
        model.train()(x)  # move BatchNorm running stats (ResNet) so the buffers matter
    model.eval()
    path = save_model(tmp_path / "model.pt", model, spec)

    torch.manual_seed(1)  # a different init: only the loaded weights can make the outputs match
    loaded, loaded_spec, _ = load_model(path)
    assert loaded_spec.params["feature_dim"] == feature_dim
    assert loaded.feature_dim == feature_dim
    assert loaded.head.centers.shape == (10, feature_dim)
    with torch.no_grad():
        assert loaded.features(x).shape == (4, feature_dim)
        assert torch.equal(loaded(x), model(x))
