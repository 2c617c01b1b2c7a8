"""Shape, gradient, normalisation and parameter-count checks for every registered model."""

from __future__ import annotations

import inspect
import io

import pytest
import torch
from torch import nn

from robustloss.models import MODELS, Classifier, Normalize, create_model

ALL_MODELS = MODELS.names()


def _defaults(name: str) -> dict:
    """The factory's own default in_channels / input_size (1x28 for gray nets, 3x32 otherwise)."""
    params = inspect.signature(MODELS.get(name)).parameters
    return {k: params[k].default for k in ("num_classes", "in_channels", "input_size")}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _input(in_channels: int, size: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, in_channels, size, size, generator=g)


def test_registry_contains_expected_models():
    expected = {"lenet5", "cnn3", "vgg13", "resnet20", "resnet32", "resnet56", "resnet110",
                "cnn8", "resnet32v2", "resnet110v2", "resnetv2"}
    assert expected <= set(ALL_MODELS)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_factory_signature_is_keyword_only(name):
    params = inspect.signature(MODELS.get(name)).parameters
    for key in ("num_classes", "in_channels", "input_size", "normalize"):
        assert params[key].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["normalize"].default is None


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_shapes_and_head_consistency(name, in_channels):
    size = _defaults(name)["input_size"]
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=in_channels)
    assert isinstance(model, Classifier)
    model.eval()  # BatchNorm with running stats: forward and features see the same function
    x = _input(in_channels, size)
    with torch.no_grad():
        logits = model(x)
        z = model.features(x)
        both = model.forward_with_features(x)
    assert logits.shape == (2, 7)
    assert z.shape == (2, model.feature_dim)
    assert torch.allclose(logits, model.head(z))
    assert torch.allclose(both[0], logits) and torch.allclose(both[1], z)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_backward_gives_finite_gradients(name):
    d = _defaults(name)
    torch.manual_seed(0)
    model = create_model(name)
    model.train()
    x = _input(d["in_channels"], d["input_size"]).requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {pname}"
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0  # attacks need a non-trivial input gradient


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_normalize_is_applied(name, in_channels):
    size = _defaults(name)["input_size"]
    if in_channels == 1:
        mean, std = (0.5,), (0.25,)
    else:
        mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)
    torch.manual_seed(0)
    model = create_model(name, in_channels=in_channels, normalize=(mean, std)).eval()
    assert isinstance(model.normalize, Normalize)
    x = _input(in_channels, size)
    manual = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = model.head(model.backbone(manual))
        assert torch.allclose(model(x), expected, atol=1e-6)
        # and the normalisation actually changes something
        assert not torch.allclose(model(x), model.head(model.backbone(x)))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_state_dict_round_trip(name):
    d = _defaults(name)
    torch.manual_seed(0)
    model = create_model(name, normalize=((0.5,) * d["in_channels"], (0.25,) * d["in_channels"]))
    x = _input(d["in_channels"], d["input_size"])
    with torch.no_grad():
        model.train()(x)  # move BatchNorm running stats away from their init so buffers matter
    model.eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)

    torch.manual_seed(1)  # different random init: only the loaded weights can make outputs match
    fresh = create_model(name, normalize=((0.0,) * d["in_channels"], (1.0,) * d["in_channels"]))
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))


# ---- parameter counts that pin the architectures (10 classes) ----


def test_lenet5_parameter_count():
    # conv1  1->6, 5x5:    6*1*25 + 6    =    156
    # conv2  6->16, 5x5:  16*6*25 + 16   =  2,416
    # 28 -> conv1 (pad 2) 28 -> pool 14 -> conv2 10 -> pool 5: flatten 16*5*5 = 400
    # fc1  400->120:      400*120 + 120  = 48,120
    # fc2  120->84:       120*84 + 84    = 10,164
    # head  84->10:        84*10 + 10    =    850
    # total 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706
    model = create_model("lenet5", num_classes=10, in_channels=1, input_size=28)
    assert model.feature_dim == 84
    assert _n_params(model) == 61_706


def test_lenet5_accepts_32x32():
    # 32 -> 32 -> 16 -> 12 -> 6: flatten 16*6*6 = 576, i.e. (576 - 400) * 120 more weights.
    model = create_model("lenet5", in_channels=3, input_size=32)
    assert _n_params(model) == 61_706 + 2 * 6 * 25 + (576 - 400) * 120
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_cnn3_parameter_count():
    # conv1  1->16, 5x5:  16*1*25 + 16   =    416   (28 -> 24)
    # conv2 16->32, 5x5:  32*16*25 + 32  = 12,832   (24 -> 20 -> pool 10)
    # conv3 32->64, 5x5:  64*32*25 + 64  = 51,264   (10 -> 6 -> pool 3)
    # fc  64*3*3=576->100: 576*100 + 100 = 57,700
    # head 100->10:        100*10 + 10   =  1,010
    # total 416 + 12,832 + 51,264 + 57,700 + 1,010 = 123,222
    model = create_model("cnn3", num_classes=10, in_channels=1, input_size=28)
    assert model.feature_dim == 100
    assert _n_params(model) == 123_222


def test_vgg13_parameter_count():
    # Convs have no bias (BatchNorm follows), 3x3 weights 9*cin*cout, BN 2*cout:
    # convs: 9*(3*64 + 64*64 + 64*128 + 128*128 + 128*256 + 256*256 + 256*512 + 3*512*512)
    #      = 9 * 1,044,672 = 9,402,048
    # BN:    2*(2*64 + 2*128 + 2*256 + 4*512) = 5,888
    # head 512->10: 5,130          total = 9,413,066
    model = create_model("vgg13", num_classes=10, in_channels=3, input_size=32)
    assert _n_params(model) == 9_413_066


# ResNet count for n blocks per stage (option A, bias-free convs, 3 input channels, 10 classes):
#   stem 3*16*9 + BN 32                                           =    464
#   stage 1: n blocks of 2*(16*16*9 + 32)                          = 4,672 n
#   stage 2: first block 16*32*9 + 64 + 32*32*9 + 64 = 13,952, then (n-1) * 18,560
#   stage 3: first block 32*64*9 + 128 + 64*64*9 + 128 = 55,552, then (n-1) * 73,984
#   head 64*10 + 10                                                =    650
#   => 70,618 + 4,672 n + 92,544 (n - 1)
RESNET_PARAMS = {
    "resnet20": (3, 269_722),  # ~0.27M, as in He et al. Table 6
    "resnet32": (5, 464_154),  # ~0.46M
    "resnet56": (9, 853_018),  # ~0.85M
    "resnet110": (18, 1_727_962),  # ~1.7M
}


@pytest.mark.parametrize("name", sorted(RESNET_PARAMS))
def test_resnet_parameter_count_and_depth(name):
    n, expected = RESNET_PARAMS[name]
    assert expected == 70_618 + 4_672 * n + 92_544 * (n - 1)
    model = create_model(name, num_classes=10, in_channels=3, input_size=32)
    assert model.feature_dim == 64
    assert _n_params(model) == expected
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == 6 * n + 2


@pytest.mark.parametrize("name", sorted(RESNET_PARAMS))
def test_resnet_shortcuts_are_parameter_free(name):
    model = create_model(name)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (3, 3) for c in convs), "option A must not add 1x1 projections"
    for block in model.modules():
        if hasattr(block, "shortcut"):
            assert sum(p.numel() for p in block.shortcut.parameters()) == 0


def test_resnet_option_a_shortcut_subsamples_and_zero_pads():
    from robustloss.models.resnet_cifar import PadShortcut

    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(16, 32, stride=2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.equal(y[:, 16:], torch.zeros(2, 16, 4, 4))


def test_resnet_other_input_sizes():
    model = create_model("resnet20", in_channels=1, input_size=28).eval()
    assert model.features(torch.rand(2, 1, 28, 28)).shape == (2, 64)
    with pytest.raises(ValueError, match="divisible by 4"):
        create_model("resnet20", input_size=30)


def test_vgg13_feature_dim_depends_on_input_size():
    small = create_model("vgg13", input_size=32)
    large = create_model("vgg13", input_size=64, num_classes=200).eval()
    assert small.feature_dim == 512
    assert large.feature_dim == 2048
    with torch.no_grad():
        assert large.features(torch.rand(2, 3, 64, 64)).shape == (2, 2048)
        assert large(torch.rand(2, 3, 64, 64)).shape == (2, 200)


@pytest.mark.parametrize(
    "name, size",
    [("vgg13", 48), ("vgg13", 224), ("lenet5", 8), ("cnn3", 16), ("resnet56", 2)],
)
def test_unsupported_input_size_raises(name, size):
    with pytest.raises(ValueError, match="input_size|input sizes"):
        create_model(name, input_size=size)
