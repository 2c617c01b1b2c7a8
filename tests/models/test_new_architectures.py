"""cnn8 (I-SCE's shallow CIFAR net) and the pre-activation ResNets (resnet32v2, resnet110v2, resnetv2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustloss.errors import ConfigError
from robustloss.losses import LOSSES, create_loss
from robustloss.models import create_model
from robustloss.models.resnet_v2 import blocks_per_stage

# Small inputs keep the tests fast: ResNet features are globally pooled, cnn8 needs 8x8 for its pools.
# The loss heads only see the features, so the full loss grid runs on the shallowest member of the
# pre-activation family (same blocks and dense layer); the deep presets get a few heads below. A
# 164-layer net is hundreds of small ops, which crawl when other jobs share the 2 CPU cores.
NEW_MODELS = {
    "cnn8": {"input_size": 8},
    "resnetv2": {"input_size": 8, "depth": 11},  # one bottleneck block a stage
    "resnetv2-basic": {"input_size": 8, "depth": 8, "block": "basic"},  # one basic block a stage
}
PRESET_HEAD_LOSSES = ["ce", "mmc", "isce"]


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _weighted_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# ---- shapes ----


@pytest.mark.parametrize(
    "name, params, feature_dim",
    [
        ("cnn8", {"input_size": 32}, 256),
        ("cnn8", {"input_size": 28, "in_channels": 1}, 256),
        ("resnet32v2", {"input_size": 16}, 256),
        ("resnet32v2", {"input_size": 16, "block": "basic", "in_channels": 1}, 256),
        ("resnet110v2", {"input_size": 16}, 256),
    ],
)
def test_output_shapes(name, params, feature_dim):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, **params).eval()
    x = torch.rand(3, params.get("in_channels", 3), params["input_size"], params["input_size"])
    with torch.no_grad():
        logits, z = model.forward_with_features(x)
    assert model.feature_dim == feature_dim
    assert logits.shape == (3, 7) and z.shape == (3, feature_dim)


def test_cnn8_rejects_inputs_too_small_for_three_pools():
    with pytest.raises(ConfigError, match="input_size >= 8"):
        create_model("cnn8", input_size=7)


# ---- architecture and parameter counts (10 classes, 3 input channels, 32x32) ----


def test_cnn8_has_six_convs_and_two_fc_layers_and_pinned_parameter_count():
    # convs (no bias): 9*(3*64 + 64*64 + 64*128 + 128*128 + 128*256 + 256*256) = 9 * 127,168 = 1,144,512
    # BN: 2*(2*64 + 2*128 + 2*256) = 1,792
    # fc 256*4*4 = 4096 -> 256: 4096*256 + 256 = 1,048,832;  head 256 -> 10: 2,570
    # total 1,144,512 + 1,792 + 1,048,832 + 2,570 = 2,197,706
    model = create_model("cnn8")
    layers = _weighted_layers(model)
    assert [type(m) for m in layers] == [nn.Conv2d] * 6 + [nn.Linear] * 2
    assert _n_params(model) == 2_197_706


# (name, block) -> (blocks a stage, layers He et al. count: convs on the main path + stem + head).
RESNET_V2_DEPTHS = {
    ("resnet32v2", "bottleneck"): (5, 47),
    ("resnet32v2", "basic"): (5, 32),
    ("resnet110v2", "bottleneck"): (18, 164),
    ("resnet110v2", "basic"): (18, 110),
}


@pytest.mark.parametrize("name, block", sorted(RESNET_V2_DEPTHS))
def test_resnet_v2_depth(name, block):
    n, depth = RESNET_V2_DEPTHS[name, block]
    assert blocks_per_stage(depth, block) == n
    model = create_model(name, block=block, dense_dim=None)
    projections = [m for m in model.modules() if getattr(m, "projection", None) is not None]
    # He et al.'s depth leaves out the 1x1 projection shortcuts (3 with bottlenecks, 2 with basic
    # blocks, whose first stage keeps 16 channels).
    assert len(_weighted_layers(model)) == depth + len(projections)
    assert len(projections) == (3 if block == "bottleneck" else 2)


# Reference: He et al. 2016 ("Identity mappings", Table on CIFAR-10) give 1.7M parameters for both
# the pre-activation ResNet-110 (basic blocks) and ResNet-164 (bottlenecks) - our resnet110v2 with
# basic / bottleneck blocks. Our counts include BN, the 10-class head and the 1x1 projections.
@pytest.mark.parametrize("block, expected", [("bottleneck", 1_703_258), ("basic", 1_730_522)])
def test_resnet110v2_has_about_1_7m_parameters_like_he_et_al(block, expected):
    model = create_model("resnet110v2", block=block, dense_dim=None)
    assert _n_params(model) == expected
    assert 1.6e6 < expected < 1.8e6


def test_resnet32v2_parameter_count_is_plausible():
    # 5 blocks a stage: a bit over a quarter of the 18-block net (the stem and head do not scale).
    bottleneck = _n_params(create_model("resnet32v2", dense_dim=None))
    basic = _n_params(create_model("resnet32v2", block="basic", dense_dim=None))
    assert bottleneck == 497_690
    assert 0.4e6 < basic < 0.5e6  # the post-activation resnet32 has 0.46M; + BN and projections


@pytest.mark.parametrize("block, pooled", [("bottleneck", 256), ("basic", 64)])
def test_dense_layer_adds_exactly_a_linear_map(block, pooled):
    without = create_model("resnet32v2", block=block, dense_dim=None)
    with_dense = create_model("resnet32v2", block=block)  # default dense_dim=256
    assert without.feature_dim == pooled
    assert with_dense.feature_dim == 256
    # dense pooled -> 256 (+bias), and the head grows from pooled*10 to 256*10 weights
    assert _n_params(with_dense) - _n_params(without) == pooled * 256 + 256 + (256 - pooled) * 10


def test_dense_layer_is_linear_so_features_can_be_negative():
    torch.manual_seed(0)
    model = create_model("resnet32v2", input_size=8).eval()
    with torch.no_grad():
        z = model.features(torch.rand(4, 3, 8, 8))
    assert (z < 0).any(), "MM centers have negative coordinates: no ReLU after the dense layer"


@pytest.mark.parametrize("block, pooled", [("bottleneck", 256), ("basic", 64)])
def test_dense_dim_none_gives_the_pooled_width(block, pooled):
    model = create_model("resnet110v2", block=block, dense_dim=None, input_size=8).eval()
    assert model.feature_dim == pooled
    with torch.no_grad():
        assert model.features(torch.rand(2, 3, 8, 8)).shape == (2, pooled)


def test_dense_dim_sets_the_feature_width():
    assert create_model("resnet32v2", dense_dim=128).feature_dim == 128


# ---- invalid configurations ----


@pytest.mark.parametrize(
    "depth, block, message",
    [(32, "bottleneck", "9n \\+ 2"), (47, "basic", "6n \\+ 2"), (2, "basic", "6n \\+ 2"), (10, "bottleneck", "9n")],
)
def test_invalid_depth_is_a_clear_error(depth, block, message):
    with pytest.raises(ConfigError, match=message):
        create_model("resnetv2", depth=depth, block=block)


@pytest.mark.parametrize("name", ["resnet32v2", "resnet110v2", "resnetv2"])
def test_unknown_block_is_a_clear_error(name):
    with pytest.raises(ConfigError, match="basic, bottleneck"):
        create_model(name, block="wide")


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_dense_dim_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="dense_dim"):
        create_model("resnet32v2", dense_dim=bad)


def test_resnetv2_by_true_depth_matches_the_named_preset():
    torch.manual_seed(0)
    by_depth = create_model("resnetv2", depth=47)
    torch.manual_seed(0)
    preset = create_model("resnet32v2")
    assert by_depth.state_dict().keys() == preset.state_dict().keys()
    assert _n_params(by_depth) == _n_params(preset)


# ---- every loss head, and the feature_dim option ----


def _loss_params(loss_name: str, model_feature_dim: int) -> dict:
    # Center losses default to a 256-d embedding; with 2-d features there is nothing to embed into.
    return {"embed_dim": None} if model_feature_dim < 10 and "embed_dim" in LOSSES.parameters(loss_name) else {}


@pytest.mark.parametrize("feature_dim", [None, 2])
@pytest.mark.parametrize("loss_name", LOSSES.names())
@pytest.mark.parametrize("model_name", sorted(NEW_MODELS))
def test_every_loss_head_trains_the_new_models(model_name, loss_name, feature_dim):
    _check_loss_head_trains(model_name.split("-")[0], NEW_MODELS[model_name], loss_name, feature_dim)


@pytest.mark.parametrize("loss_name", PRESET_HEAD_LOSSES)
@pytest.mark.parametrize("model_name", ["resnet32v2", "resnet110v2"])
def test_loss_heads_train_the_resnet_v2_presets(model_name, loss_name):
    _check_loss_head_trains(model_name, {"input_size": 8}, loss_name, None)


def _check_loss_head_trains(model_name: str, params: dict, loss_name: str, feature_dim: int | None) -> None:
    torch.manual_seed(0)
    model = create_model(model_name, feature_dim=feature_dim, **params)
    loss = create_loss(loss_name, **_loss_params(loss_name, model.feature_dim))
    head = loss.make_head(model.feature_dim, model.num_classes)
    if head is not None:
        model.replace_head(head)
    loss.bind(model)
    model.train()

    x = torch.rand(4, 3, params["input_size"], params["input_size"], requires_grad=True)
    y = torch.arange(4) % 10
    logits, z = model.forward_with_features(x)
    assert logits.shape == (4, 10) and z.shape == (4, feature_dim or 256)
    value = loss(logits, y, z)
    value.backward()
    assert torch.isfinite(value)
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.weight.grad is not None and torch.isfinite(stem.weight.grad).all()
    assert stem.weight.grad.abs().sum() > 0, "the loss must reach the first conv layer"
    assert x.grad is not None and torch.isfinite(x.grad).all()
