"""CIFS: channel masks, label use in training vs evaluation, joint loss, model surgery, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustbench_lite.bench.backbones import build_backbone
from robustbench_lite.bench.evaluate import predict
from robustbench_lite.bench.method import Batch, StepContext
from robustbench_lite.methods.cifs import Cifs, CifsBlock, joint_loss_terms

CLASSES = 5


def linear_block(channels: int = 6, top_k: int = 2) -> CifsBlock:
    torch.manual_seed(0)
    return CifsBlock(channels, CLASSES, hidden=0, top_k=top_k)


def features(batch: int = 4, channels: int = 6) -> torch.Tensor:
    return torch.randn(batch, channels, 3, 3, generator=torch.Generator().manual_seed(1))


def linear_probe_mask(block: CifsBlock, z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """For GAP + Linear, d(sum of target logits)/dz summed over space is the sum of the targets'
    weight rows, so the mask is a softmax over channels of those rows."""
    weight = block.probe[-1].weight
    return torch.softmax(weight[targets].sum(1), dim=1)


def cifs_model(backbone: str = "tiny", classes: int = CLASSES, **config):
    torch.manual_seed(0)
    net = build_backbone(backbone, classes, (0.5,) * 3, (0.25,) * 3)
    return Cifs(Cifs.Config(**config)).build_model(net)


def context(seed: int = 0) -> StepContext:
    return StepContext(0, 0, 1, 1, CLASSES, torch.Generator().manual_seed(seed), torch.device("cpu"))


def test_mask_is_a_distribution_over_channels():
    block, z = linear_block(), features()
    for training, labels in ((False, None), (True, torch.tensor([0, 1, 2, 3]))):
        block.train(training)
        mask = block.channel_mask(z, labels)
        assert mask.shape == (4, 6)
        assert (mask >= 0).all()
        torch.testing.assert_close(mask.sum(1), torch.ones(4))


def test_eval_mask_is_label_free_and_uses_the_top_two_predictions():
    block, z = linear_block().eval(), features()
    top2 = block.probe(z).topk(2, dim=1).indices
    expected = linear_probe_mask(block, z, top2)
    torch.testing.assert_close(block.channel_mask(z), expected)
    block.labels = torch.tensor([4, 4, 4, 4])  # ignored in evaluation mode
    torch.testing.assert_close(block(z), z * expected[:, :, None, None])


def test_nonlinear_probe_mask_matches_gradient_of_pooled_features():
    torch.manual_seed(0)
    block, z = CifsBlock(6, CLASSES, hidden=8).eval(), features()
    pooled = z.mean((2, 3)).requires_grad_(True)
    head = block.probe[2:]
    logits = head(pooled)
    top2 = logits.topk(2, dim=1).indices
    grad, = torch.autograd.grad(logits.gather(1, top2).sum(), pooled)
    # the spatial sum of dS/dz equals dS/d(pooled) for a probe on average-pooled features
    torch.testing.assert_close(block.channel_mask(z), torch.softmax(grad, dim=1))


def test_training_mask_uses_the_ground_truth_as_first_target():
    block, z = linear_block().train(), features()
    ranked = block.probe(z).argsort(dim=1, descending=True)
    labels = ranked[:, 2]  # the third-ranked class: neither of the top two predictions
    trained = block.channel_mask(z, labels)
    expected = linear_probe_mask(block, z, torch.stack([labels, ranked[:, 1]], dim=1))
    torch.testing.assert_close(trained, expected)
    assert not torch.allclose(trained, block.eval().channel_mask(z))


def test_top_k_is_configurable():
    block, z = linear_block(top_k=3).eval(), features()
    top3 = block.probe(z).topk(3, dim=1).indices
    torch.testing.assert_close(block.channel_mask(z), linear_probe_mask(block, z, top3))


def test_training_forward_without_labels_is_an_error():
    model = cifs_model().train()
    with pytest.raises(RuntimeError, match="labels"):
        model(torch.rand(2, 3, 32, 32))


@pytest.mark.parametrize("backbone,classes", [("tiny", 7), ("resnet18", 3)])
def test_built_model_shapes_and_blocks(backbone, classes):
    model = cifs_model(backbone, classes)
    reference = build_backbone(backbone, classes, (0.5,) * 3, (0.25,) * 3)
    last_stage = list(reference.stages.values())[-1]
    blocks = model.cifs_blocks
    assert len(blocks) == len(last_stage)
    assert isinstance(blocks[0].probe[3], torch.nn.Softplus) and blocks[0].probe[3].beta == 5.0
    assert all(len(b.probe) == 3 for b in blocks[1:])  # pool, flatten, one Linear
    assert blocks[-1].probe[-1].out_features == classes
    model.eval()
    x = torch.rand(3, 3, 32, 32)
    assert model(x).shape == (3, classes)
    logits, probes = model.forward_with_probes(x)
    assert [p.shape for p in probes] == [(3, classes)] * len(blocks)
    assert model.needs_autograd_at_eval


def test_evaluation_ignores_labels_and_runs_under_predict():
    model = cifs_model().eval()
    x = torch.rand(6, 3, 32, 32)
    with torch.enable_grad():
        logits = model(x)
        a, _ = model.forward_with_probes(x, torch.zeros(6, dtype=torch.long))
        b, _ = model.forward_with_probes(x, torch.full((6,), 3))
    torch.testing.assert_close(a, logits)
    torch.testing.assert_close(b, logits)
    images = (x * 255).round().to(torch.uint8)
    expected = model((images.float() / 255)).argmax(1)
    assert torch.equal(predict(model, images, batch_size=4), expected)
    with torch.no_grad():  # the mask enables autograd locally
        assert torch.equal(model(images.float() / 255).argmax(1), expected)


def test_joint_loss_is_the_sum_of_three_cross_entropies_with_defaults():
    gen = torch.Generator().manual_seed(0)
    logits, p1, p2 = (torch.randn(4, CLASSES, generator=gen) for _ in range(3))
    y = torch.tensor([0, 1, 2, 3])
    final, probe = joint_loss_terms(logits, [p1, p2], y, beta=2.0)
    hand = sum(-torch.log_softmax(z, 1)[torch.arange(4), y].mean() for z in (logits, p1, p2))
    torch.testing.assert_close(final + probe, hand)
    final, probe = joint_loss_terms(logits, [p1, p2], y, beta=1.0)
    ce = [F.cross_entropy(z, y) for z in (logits, p1, p2)]
    torch.testing.assert_close(final + probe, (ce[0] + 0.5 * (ce[1] + ce[2])) * 1.5)


def test_clean_training_step_and_adaptive_loss():
    method = Cifs(Cifs.Config(adversarial=False))
    model = cifs_model("resnet18").train()  # two CIFS blocks, as in the paper
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % CLASSES
    losses = method.training_step(model, Batch(x, y), context())
    assert set(losses) == {"ce", "probe_ce"}
    logits, (p1, p2) = model.forward_with_probes(x, y)
    expected = sum(F.cross_entropy(z, y) for z in (logits, p1, p2))
    torch.testing.assert_close(losses["ce"] + losses["probe_ce"], expected)
    model.eval()
    per_sample = method.adaptive_attack_loss(model, x, y)
    logits, (p1, p2) = model.forward_with_probes(x)
    expected = sum(F.cross_entropy(z, y, reduction="none") for z in (logits, p1, p2))
    assert per_sample.shape == (8,)
    torch.testing.assert_close(per_sample, expected)


def test_training_loss_reaches_probe_weights_through_the_mask():
    model = cifs_model().train()
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % CLASSES
    logits, _ = model.forward_with_probes(x, y)
    F.cross_entropy(logits, y).backward()  # no probe loss: only the masks involve the probes
    for block in model.cifs_blocks:
        weight = block.probe[-1].weight
        assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_adversarial_step_attacks_in_eval_mode_within_epsilon():
    method = Cifs(Cifs.Config(steps=3))
    model = cifs_model().train()
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % CLASSES
    batch = Batch(x, y)
    adv = method.adversarial_examples(model, batch, context())
    assert model.training
    assert (adv - x).abs().max() <= method.config.eps + 1e-6
    assert not torch.equal(adv, x)
    assert torch.equal(adv, method.adversarial_examples(model, batch, context()))  # seeded
    model.eval()
    with torch.enable_grad():
        assert method.adaptive_attack_loss(model, adv, y).mean() > \
            method.adaptive_attack_loss(model, x, y).mean()
    losses = method.training_step(model.train(), batch, context())
    assert all(torch.isfinite(v) for v in losses.values())


def test_trains_and_evaluates_end_to_end(run_context):
    ctx = run_context("cifs")
    model = ctx.train()
    test = ctx.dataset.test
    cached = ctx.train()  # loads the cached weights into a freshly built model
    assert cached is not model
    assert torch.equal(predict(cached, test.x), predict(model, test.x))


@pytest.mark.parametrize("name", ["preact_resnet18", "resnet18"])
def test_the_mask_reaches_the_classifier_on_every_backbone(name, monkeypatch):
    """Scaling every channel mask by per-channel constants must change the logits: a BatchNorm
    between the mask and the classifier (pre-activation heads) would normalise it away."""
    from robustbench_lite.methods.cifs import CifsBlock, add_cifs

    torch.manual_seed(0)
    model = add_cifs(build_backbone(name, 10, (0.5,) * 3, (0.25,) * 3)).train()
    with torch.no_grad():  # logits of a trained model's size (the masked features sum to ~1/C)
        model.backbone.head[-1].weight.mul_(100)
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8)
    plain, _ = model.forward_with_probes(x, y)
    scale = torch.rand(512, generator=torch.Generator().manual_seed(1)) * 3 + 0.5
    original = CifsBlock.channel_mask
    monkeypatch.setattr(CifsBlock, "channel_mask",
                        lambda self, z, labels=None: original(self, z, labels) * scale)
    scaled, _ = model.forward_with_probes(x, y)
    assert (scaled - plain).abs().max() > 1e-2
    assert (scaled - plain).norm() > 0.05 * plain.norm()
    order = [m for m in model.modules() if isinstance(m, (CifsBlock, torch.nn.BatchNorm2d))]
    assert isinstance(order[-1], CifsBlock)  # no BatchNorm after the last mask


def test_the_through_mask_attack_differentiates_through_the_mask():
    """With the mask's graph kept, the input gradient of the joint loss differs from the
    detached-mask gradient; outside the attack the mask stays detached."""
    from robustbench_lite.bench.attacks.pgd import input_gradient
    from robustbench_lite.methods.cifs import CifsBlock

    torch.manual_seed(0)
    method = Cifs()
    model = method.build_model(build_backbone("tiny", 4, (0.5,) * 3, (0.25,) * 3)).eval()
    x, y = torch.rand(4, 3, 16, 16), torch.arange(4)
    detached = input_gradient(model, x, y, method.adaptive_attack_loss)
    through = input_gradient(model, x, y, method.through_mask_loss)
    assert (through - detached).abs().max() > 1e-6 * detached.abs().max()
    assert not any(b.through_mask for b in model.modules() if isinstance(b, CifsBlock))
    with torch.no_grad():  # the same outputs: only the gradient path differs
        torch.testing.assert_close(method.through_mask_loss(model, x, y),
                                   method.adaptive_attack_loss(model, x, y))
    assert list(method.adaptive_attacks()) == ["pgd_through_mask"]
