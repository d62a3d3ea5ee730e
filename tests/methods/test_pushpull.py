"""Push-pull layer: pull kernel, geometry, forward, gradients; the method's model surgery."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.bench.backbones import build_backbone
from robustbench_lite.bench.errors import UserError
from robustbench_lite.methods.pushpull import PushPull, PushPullConv2d, pull_size


@pytest.mark.parametrize("kernel, scale, size",
                         [(3, 2.0, 7), (3, 1.5, 5), (7, 2.0, 15), (3, 1.0, 3), (5, 1.0, 5)])
def test_pull_kernel_is_the_negated_resized_push_kernel(kernel, scale, size):
    torch.manual_seed(0)
    layer = PushPullConv2d(3, 4, kernel, padding=kernel // 2, scale=scale)
    assert pull_size(kernel, scale) == size and layer.pull_shape == (size, size)
    expected = -F.interpolate(layer.push.weight, size=size, mode="bilinear", align_corners=True)
    torch.testing.assert_close(layer.pull_weight(), expected)
    if scale == 1.0:
        assert torch.equal(layer.pull_weight(), -layer.push.weight)


@pytest.mark.parametrize("stride, padding, dilation, kernel",
                         [(1, 1, 1, 3), (2, 1, 1, 3), (2, 3, 1, 7), (1, 2, 2, 3), (2, 0, 1, 3)])
@pytest.mark.parametrize("side", [15, 16])
def test_output_size_equals_the_replaced_convolution(stride, padding, dilation, kernel, side):
    conv = nn.Conv2d(3, 8, kernel, stride, padding, dilation, bias=False)
    layer = PushPullConv2d.from_conv(conv)
    x = torch.rand(2, 3, side, side)
    assert layer(x).shape == conv(x).shape


def test_forward_equals_two_convolutions_by_hand():
    torch.manual_seed(1)
    layer = PushPullConv2d(3, 5, 3, stride=2, padding=1, bias=True, alpha=0.7)
    x = torch.randn(2, 3, 12, 12)
    w, b = layer.push.weight, layer.push.bias
    w_up = F.interpolate(w, size=7, mode="bilinear", align_corners=True)
    push = torch.relu(F.conv2d(x, w, b, stride=2, padding=1))
    pull = torch.relu(F.conv2d(x, -w_up, -b, stride=2, padding=3))
    torch.testing.assert_close(layer(x), push - 0.7 * pull)


def test_grouped_layer_matches_hand_computation():
    torch.manual_seed(2)
    layer = PushPullConv2d(4, 6, 3, padding=1, groups=2)
    x = torch.randn(1, 4, 9, 9)
    w_up = F.interpolate(layer.push.weight, size=7, mode="bilinear", align_corners=True)
    expected = (torch.relu(F.conv2d(x, layer.push.weight, padding=1, groups=2))
                - torch.relu(F.conv2d(x, -w_up, padding=3, groups=2)))
    torch.testing.assert_close(layer(x), expected)


def test_push_weights_get_gradient_through_the_pull_branch():
    torch.manual_seed(3)
    layer = PushPullConv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 10, 10)
    # The push branch cancels: this loss depends on the pull branch only.
    inhibition = torch.relu(layer.push(x)) - layer(x)
    inhibition.square().sum().backward()
    grad = layer.push.weight.grad.clone()
    assert grad.abs().sum() > 0

    weight = layer.push.weight.detach().requires_grad_()
    pull = -F.interpolate(weight, size=7, mode="bilinear", align_corners=True)
    torch.relu(F.conv2d(x, pull, padding=3)).square().sum().backward()
    torch.testing.assert_close(grad, weight.grad)


def test_learned_alpha_is_per_channel_initialised_near_half_and_trained():
    torch.manual_seed(4)
    layer = PushPullConv2d(3, 16, 3, padding=1, learn_alpha=True)
    assert isinstance(layer.alpha, nn.Parameter) and layer.alpha.shape == (16,)
    r = 1 / (3 * 16) ** 0.5
    assert ((layer.alpha - 0.5).abs() <= r).all()
    layer(torch.randn(2, 3, 8, 8)).sum().backward()
    assert layer.alpha.grad is not None and layer.alpha.grad.abs().sum() > 0

    fixed = PushPullConv2d(3, 16, 3, padding=1, alpha=1.5)
    assert "alpha" not in dict(fixed.named_parameters()) and float(fixed.alpha) == 1.5


def test_even_kernels_and_string_padding_are_refused():
    with pytest.raises(UserError):
        PushPullConv2d(3, 4, 2)
    with pytest.raises(UserError):
        PushPullConv2d.from_conv(nn.Conv2d(3, 4, 3, padding="same"))


@pytest.mark.parametrize("name", ["tiny", "resnet18"])
def test_method_replaces_only_the_first_convolution(name):
    torch.manual_seed(5)
    backbone = build_backbone(name, 7, (0.5,) * 3, (0.25,) * 3)
    original = backbone.get_submodule(backbone.first_conv).weight.detach().clone()
    convs_before = sum(isinstance(m, nn.Conv2d) for m in backbone.modules())
    model = PushPull(PushPull.Config(scale=1.5, alpha=0.5)).build_model(backbone)

    layers = [n for n, m in model.named_modules() if isinstance(m, PushPullConv2d)]
    assert layers == [backbone.first_conv]
    layer = model.get_submodule(backbone.first_conv)
    assert torch.equal(layer.push.weight, original)
    assert layer.pull_shape == (5, 5) and float(layer.alpha) == 0.5
    # the replaced convolution is gone, the push convolution took its place
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs_before
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_method_trains_end_to_end(run_context):
    model = run_context("pushpull").train()
    assert isinstance(model.get_submodule(model.first_conv), PushPullConv2d)
    assert torch.isfinite(model(torch.rand(2, 3, 16, 16))).all()
