"""Model registry, architectures, parameter/MAC accounting and the local-only pretrained loader."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ecgdx.errors import ModelError
from ecgdx.labels import NUM_CLASSES
from ecgdx.models import (
    count_parameters,
    create_model,
    estimate_macs,
    list_models,
    model_info,
    register_model,
)
from ecgdx.models.ecg_pagenet import GridPool

ALL_MODELS = list_models()
# ResNet-50, MobileNetV2 and EfficientNet-Lite are slow at 384 on a CPU; their gradient paths are the same at 128.
_SMALL_INPUT_MODELS = {"resnet50", "mobilenetv2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}


def _side(name: str) -> int:
    return 128 if name in _SMALL_INPUT_MODELS else 384


def _build(name: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **kwargs)


def _page(n: int, side: int | tuple[int, int], seed: int = 1) -> torch.Tensor:
    h, w = (side, side) if isinstance(side, int) else side
    return torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(seed))


def _assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-4) -> None:
    # Freshly initialised nets in eval mode can emit tiny logits (MobileNetV2: ~1e-10), where an
    # absolute tolerance would accept anything; compare relative to the logits' own scale.
    scale = expected.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(actual, expected, atol=tol * scale, rtol=tol)


def test_expected_models_are_registered():
    assert {"seed_cnn", "ecg_pagenet", "resnet50", "mobilenetv2"} <= set(ALL_MODELS)
    assert ALL_MODELS == sorted(ALL_MODELS)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_384_gives_finite_logits(name):
    model = _build(name).eval()
    with torch.no_grad():
        out = model(_page(2, 384))
    assert out.shape == (2, NUM_CLASSES)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_backward_gives_finite_gradients_everywhere(name):
    model = _build(name).train()
    loss = F.cross_entropy(model(_page(2, _side(name))), torch.tensor([0, 3]))
    loss.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params
    for pname, p in params:
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    # The gradient must reach both ends of the network (a detached stem would still be "finite").
    assert params[0][1].grad.abs().sum() > 0
    assert params[-1][1].grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL_MODELS)
def test_channels_last_matches_contiguous(name):
    model = _build(name).eval()
    x = _page(2, _side(name))
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == (2, NUM_CLASSES)
    _assert_close_relative(out, ref)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_eval_output_is_deterministic(name):
    model = _build(name).eval()
    x = _page(2, _side(name))
    with torch.no_grad():
        first, second = model(x), model(x)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_config_round_trip_rebuilds_identical_model(name):
    original = _build(name, seed=0).eval()
    config = original.ecgdx_config
    assert config["name"] == name
    assert config["kwargs"]["num_classes"] == NUM_CLASSES
    assert config["kwargs"]["in_chans"] == 1
    # A checkpoint stores the config as JSON, so rebuild from the JSON form.
    config = json.loads(json.dumps(config))
    rebuilt = _build(seed=123, **config).eval()
    x = _page(2, _side(name))
    with torch.no_grad():
        before = rebuilt(x)
        assert not torch.allclose(before, original(x), rtol=1e-3, atol=0), (
            "seeds should differ before loading"
        )
        rebuilt.load_state_dict(original.state_dict())
        assert torch.equal(rebuilt(x), original(x))
    assert json.dumps(rebuilt.ecgdx_config, sort_keys=True) == json.dumps(config, sort_keys=True)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_num_classes_and_in_chans_are_honoured(name):
    model = _build(name, num_classes=3, in_chans=3).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 96, 96))
    assert out.shape == (1, 3)
    assert model.ecgdx_config["kwargs"]["num_classes"] == 3
    assert model.ecgdx_config["kwargs"]["in_chans"] == 3


def test_seed_cnn_parameter_count_matches_the_original():
    model = create_model("seed_cnn")
    # 423,172 = trainable weights + BatchNorm running mean/var (Keras' "Total params").
    assert count_parameters(model, include_buffers=True) == 423_172
    assert count_parameters(model) == 422_212
    assert count_parameters(model, trainable_only=True) == 422_212
    # The Keras original reported 423,748 on 3-channel input.
    assert count_parameters(create_model("seed_cnn", in_chans=3), include_buffers=True) == 423_748


def test_trainable_only_excludes_frozen_parameters():
    model = create_model("seed_cnn")
    model.fc1.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 422_212 - (256 * 128 + 128)
    assert count_parameters(model) == 422_212


def test_seed_cnn_macs_match_hand_count():
    # Valid 3x3 convs: 384->382, pool 191->189, pool 94->92, pool 46->44; then 256->128->4.
    expected = (
        382 * 382 * 32 * 9 * 1
        + 189 * 189 * 64 * 9 * 32
        + 92 * 92 * 128 * 9 * 64
        + 44 * 44 * 256 * 9 * 128
        + 256 * 128
        + 128 * 4
    )
    assert estimate_macs(create_model("seed_cnn")) == expected


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(ValueError, match="unknown model 'no_such_net'") as info:
        create_model("no_such_net")
    for name in ("seed_cnn", "ecg_pagenet", "resnet50", "mobilenetv2"):
        assert name in str(info.value)


def test_bad_kwargs_and_bad_registrations_are_rejected():
    with pytest.raises(TypeError, match="seed_cnn"):
        create_model("seed_cnn", no_such_option=1)
    with pytest.raises(ValueError, match="already registered"):
        register_model("seed_cnn")(lambda num_classes=4, in_chans=1: nn.Identity())
    with pytest.raises(TypeError, match="in_chans"):
        register_model("test_without_in_chans")(lambda num_classes=4: nn.Identity())
    assert "test_without_in_chans" not in list_models()


def test_model_info_reports_counts_and_provenance():
    info = model_info(create_model("seed_cnn"), input_size=(1, 1, 384, 384))
    assert info["name"] == "seed_cnn"
    assert info["kwargs"] == {"num_classes": 4, "in_chans": 1, "dropout": 0.5}
    assert info["params"] == 422_212
    assert info["params_with_buffers"] == 423_172
    assert info["pretrained"] is False and info["pretrained_source"] is None
    assert info["macs"] == estimate_macs(create_model("seed_cnn"))


# --- estimate_macs on single layers ----------------------------------------------------------------


def test_estimate_macs_linear():
    assert estimate_macs(nn.Linear(10, 7), input_size=(3, 10)) == 3 * 7 * 10


def test_estimate_macs_conv_same_padding_and_stride():
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    assert estimate_macs(conv, input_size=(1, 3, 16, 16)) == (16 * 16 * 8) * (3 * 3 * 3)
    strided = nn.Conv2d(3, 8, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2))
    assert estimate_macs(strided, input_size=(1, 3, 16, 16)) == (8 * 16 * 8) * (3 * 3 * 5)


def test_estimate_macs_depthwise_conv_and_batch():
    conv = nn.Conv2d(8, 8, kernel_size=3, groups=8)  # valid: 10 -> 8
    assert estimate_macs(conv, input_size=(2, 8, 10, 10)) == (2 * 8 * 8 * 8) * 9


def test_estimate_macs_leaves_model_untouched():
    model = create_model("ecg_pagenet").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    estimate_macs(model, input_size=(1, 1, 128, 128))
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed"


# --- ecg_pagenet specifics ------------------------------------------------------------------------


def test_ecg_pagenet_budget_relative_to_seed_cnn():
    pagenet, seed = create_model("ecg_pagenet"), create_model("seed_cnn")
    assert count_parameters(pagenet) < 1_000_000
    assert estimate_macs(pagenet) < estimate_macs(seed)


def test_ecg_pagenet_non_square_input():
    model = _build("ecg_pagenet").eval()
    with torch.no_grad():
        out = model(_page(2, (320, 448)))
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()


def test_ecg_pagenet_treats_ink_as_signal():
    # Inverting the input makes blank paper (all ones) an all-zero input to the first conv.
    model = _build("ecg_pagenet").eval()
    seen = {}
    model.stem[0].register_forward_hook(lambda m, inp, out: seen.update(x=inp[0]))
    with torch.no_grad():
        model(torch.ones(1, 1, 64, 64))
    assert torch.equal(seen["x"], torch.zeros(1, 1, 64, 64))


def test_ecg_pagenet_head_is_position_aware():
    # The same stroke in two different places must give different logits (global pooling would not).
    model = _build("ecg_pagenet").eval()
    nn.init.normal_(model.classifier.weight)
    a, b = torch.ones(1, 1, 384, 384), torch.ones(1, 1, 384, 384)
    a[:, :, 40:43, 20:80] = 0.0
    b[:, :, 340:343, 300:360] = 0.0
    with torch.no_grad():
        assert not torch.allclose(model(a), model(b), atol=1e-6)


@pytest.mark.parametrize("size", [(12, 24), (8, 8)])
def test_grid_pool_divisible_matches_adaptive_pooling(size):
    x = torch.randn(2, 5, *size)
    out = GridPool((4, 4))(x)
    assert out.shape == (2, 10, 4, 4)
    torch.testing.assert_close(out[:, :5], F.adaptive_avg_pool2d(x, (4, 4)))
    torch.testing.assert_close(out[:, 5:], F.adaptive_max_pool2d(x, (4, 4)))


@pytest.mark.parametrize("size", [(10, 28), (5, 7), (3, 3)])
def test_grid_pool_non_divisible_matches_adaptive_pooling(size):
    x = torch.randn(2, 5, *size)
    out = GridPool((4, 4))(x)
    assert out.shape == (2, 10, 4, 4)
    torch.testing.assert_close(out[:, :5], F.adaptive_avg_pool2d(x, (4, 4)))
    torch.testing.assert_close(out[:, 5:], F.adaptive_max_pool2d(x, (4, 4)))


# --- torchvision models: 1-channel stem and local pretrained weights --------------------------------

_TORCHVISION = {
    "resnet50": (torchvision.models.resnet50, "conv1.weight", "fc.weight", "layer1.0.conv1.weight", "bn1"),
    "mobilenetv2": (
        torchvision.models.mobilenet_v2,
        "features.0.0.weight",
        "classifier.1.weight",
        "features.1.conv.0.0.weight",
        "features.0.1",
    ),
}


@pytest.mark.parametrize("name", sorted(_TORCHVISION))
def test_pretrained_state_dict_is_loaded_with_summed_stem(name, tmp_path):
    ctor, stem_key, head_key, body_key, stem_bn = _TORCHVISION[name]
    torch.manual_seed(7)
    imagenet = ctor(weights=None)  # 3-channel stem, 1000-way head, like an ImageNet checkpoint
    # Non-default BN statistics, to see that buffers are loaded too.
    bn = imagenet.get_submodule(stem_bn)
    bn.running_mean.uniform_(-1, 1)
    state = imagenet.state_dict()
    path = tmp_path / f"{name}_imagenet.pth"
    torch.save(state, path)

    model = create_model(name, pretrained=str(path))
    loaded = model.state_dict()
    assert loaded[stem_key].shape[1] == 1
    torch.testing.assert_close(loaded[stem_key], state[stem_key].sum(dim=1, keepdim=True))
    assert torch.equal(loaded[body_key], state[body_key])
    assert torch.equal(model.get_submodule(stem_bn).running_mean, bn.running_mean)
    assert loaded[head_key].shape[0] == NUM_CLASSES  # head stays ours, ImageNet's is dropped
    assert model.pretrained_source == str(path)
    assert model_info(model)["pretrained"] is True
    # The config describes the architecture only: rebuilding never needs the weights file.
    assert model.ecgdx_config["kwargs"]["pretrained"] is None
    assert create_model(name).pretrained_source is None

    # The summed stem computes what the RGB stem computes on a gray page replicated to RGB.
    gray = _page(1, 32)
    stem_rgb = imagenet.get_parameter(stem_key)
    stem_gray = model.get_parameter(stem_key)
    torch.testing.assert_close(
        F.conv2d(gray, stem_gray, stride=2, padding=1),
        F.conv2d(gray.repeat(1, 3, 1, 1), stem_rgb, stride=2, padding=1),
    )


def test_pretrained_loader_rejects_wrong_or_missing_files(tmp_path):
    wrong = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), wrong)
    with pytest.raises(ModelError, match="conv1.weight"):
        create_model("resnet50", pretrained=str(wrong))
    state = torchvision.models.mobilenet_v2(weights=None).state_dict()
    del state["features.1.conv.0.0.weight"]
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    with pytest.raises(ModelError, match="features.1.conv.0.0.weight"):
        create_model("mobilenetv2", pretrained=str(partial))
    with pytest.raises(ModelError, match="not found"):
        create_model("mobilenetv2", pretrained=str(tmp_path / "missing.pth"))


# --- ONNX export ----------------------------------------------------------------------------------

_ONNX_CASES = [
    ("seed_cnn", (384, 384)),
    ("ecg_pagenet", (384, 384)),
    ("ecg_pagenet", (320, 448)),  # non-divisible grid: the slicing fallback must export too
    ("mobilenetv2", (128, 128)),
    ("resnet50", (64, 64)),
]


@pytest.mark.parametrize(("name", "size"), _ONNX_CASES)
# The TorchScript exporter is deprecated upstream but is the one the project pins (dynamo=False);
# the tracer warning is about the fixed H, W that an exported model has by design.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_onnx_export_with_dynamic_batch(name, size, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _build(name).eval()
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        model,
        (_page(1, size),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    x = _page(3, size, seed=5)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    assert out.shape == (3, NUM_CLASSES)
    _assert_close_relative(torch.from_numpy(out), ref, tol=1e-3)
