"""Backbones: logits shape, named taps, edits, and normalisation inside the model."""

import pytest
import torch

from robustbench_lite.bench.backbones import BACKBONES, build_backbone

SMALL = ["tiny", "resnet20", "resnet18", "preact_resnet18", "resnext29"]


@pytest.mark.parametrize("name", SMALL)
def test_logits_shape_and_taps(name):
    torch.manual_seed(0)
    model = build_backbone(name, 7, (0.5,) * 3, (0.25,) * 3).eval()
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 7)
    assert model.taps[:2] == ("input", "stem") and model.taps[2] == "stage1"
    first = model.get_submodule(model.first_conv)
    assert isinstance(first, torch.nn.Conv2d) and first.in_channels == 3


def test_edit_replaces_activation_at_the_named_tap():
    model = build_backbone("tiny", 3, (0.0,) * 3, (1.0,) * 3).eval()
    x = torch.rand(4, 3, 16, 16)
    seen = {}

    def capture(h):
        seen["stage2"] = h
        return torch.zeros_like(h)

    out = model(x, edits={"stage2": capture})
    assert seen["stage2"].shape[1] == 32
    # With stage2 zeroed, the logits no longer depend on the input.
    assert torch.allclose(out, model(torch.rand(4, 3, 16, 16), edits={"stage2": torch.zeros_like}))
    with pytest.raises(ValueError, match="unknown taps"):
        model(x, edits={"stage9": capture})


def test_normalisation_is_inside_the_model():
    model = build_backbone("tiny", 3, (0.2, 0.4, 0.6), (0.5, 0.5, 0.5)).eval()
    x = torch.rand(2, 3, 8, 8)
    seen = {}
    model(x, edits={"input": lambda h: seen.setdefault("input", h)})
    assert torch.equal(seen["input"], x)
    expected = (x - torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)) / 0.5
    assert torch.allclose(model.normalize(x), expected)


def test_tap_channels():
    channels = build_backbone("resnet18", 10, (0.5,) * 3, (0.5,) * 3).tap_channels()
    assert channels == {"input": 3, "stem": 64, "stage1": 64, "stage2": 128, "stage3": 256,
                        "stage4": 512}


def test_resnet50_stages_follow_torchvision():
    model = build_backbone("resnet50", 5, (0.5,) * 3, (0.5,) * 3).eval()
    assert model.tap_channels()["stage4"] == 2048
    assert "resnet50" in BACKBONES.names()
