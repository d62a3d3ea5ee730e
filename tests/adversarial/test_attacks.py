"""The project's FGSM and PGD: agreement with torchattacks, closed forms, and attack invariants."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.bench.attacks.pgd import ce_loss, fgsm, margin_loss, pgd

torchattacks = pytest.importorskip("torchattacks")

EPS = 8 / 255


def small_cnn(classes: int = 4, seed: int = 0) -> nn.Module:
    """A small network with batch norm: cheap, and still sensitive to train/eval mode."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))


def _blobs(n: int, seed: int, classes: int = 4, size: int = 16):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.rand(n, 3, size, size, generator=gen) * 0.3
    for i, label in enumerate(y.tolist()):  # a bright band: channel and half set by the class
        rows = slice(0, size // 2) if label < 3 else slice(size // 2, size)
        x[i, label % 3, rows, :] += 0.6
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def fitted():
    model = small_cnn()
    x, y = _blobs(128, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(60):
        idx = torch.arange(step * 32, step * 32 + 32) % len(x)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    x_test, y_test = _blobs(64, seed=2)
    return model.eval(), x_test, y_test


def test_fgsm_and_pgd_match_torchattacks():
    model = small_cnn().eval()
    x, y = _blobs(16, seed=3)
    ours = fgsm(model, x, y, EPS)
    theirs = torchattacks.FGSM(model, eps=EPS)(x, y)
    assert (ours - theirs).abs().max().item() <= 1e-6
    ours = pgd(model, x, y, EPS, steps=10, step_size=2 / 255, random_start=False)
    theirs = torchattacks.PGD(model, eps=EPS, alpha=2 / 255, steps=10, random_start=False)(x, y)
    assert (ours - theirs).abs().max().item() <= 1e-6
    assert (ours - x).abs().max().item() > EPS / 2  # the attack did move the images
    ours = pgd(model, x, y, 0.5, steps=10, step_size=0.1, norm="l2", random_start=False)
    theirs = torchattacks.PGDL2(model, eps=0.5, alpha=0.1, steps=10, random_start=False)(x, y)
    assert (ours - theirs).abs().max().item() <= 1e-6


def test_attacks_restore_the_mode_and_keep_batch_norm_statistics():
    model = small_cnn().train()
    x, y = _blobs(8, seed=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pgd(model, x, y, EPS, steps=3, step_size=2 / 255, rng=torch.Generator().manual_seed(0))
    fgsm(model, x, y, EPS)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("norm,eps", [("linf", 4 / 255), ("l2", 0.3)])
def test_perturbation_stays_in_the_ball_and_images_in_range(norm, eps):
    model = small_cnn().eval()
    x, y = _blobs(16, seed=5)
    x[:4] = 0.0  # saturated images: the clip to [0, 1] must hold at the borders
    x[4:8] = 1.0
    adv = pgd(model, x, y, eps, steps=5, step_size=eps / 2, norm=norm,
              rng=torch.Generator().manual_seed(1))
    delta = (adv - x).flatten(1)
    if norm == "linf":
        assert delta.abs().max().item() <= eps + 1e-7
    else:
        assert delta.norm(dim=1).max().item() <= eps + 1e-5
        assert delta.norm(dim=1)[8:].min().item() > eps / 2  # it uses the budget
    assert adv.min().item() >= 0 and adv.max().item() <= 1
    assert not adv.requires_grad
    adv = fgsm(model, x, y, eps)
    assert (adv - x).abs().max().item() <= eps + 1e-7 and 0 <= adv.min() and adv.max() <= 1


def test_fgsm_on_a_linear_model_is_the_closed_form():
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    x = 0.25 + 0.5 * torch.rand(6, 3, 4, 4)  # interior: the [0, 1] clip does not bind
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    w = linear[1].weight  # (classes, d)
    with torch.no_grad():
        p = linear(x).softmax(1)
        grad = (p - F.one_hot(y, 3)) @ w  # d CE / d x for logits W x + b
    expected = x + EPS * grad.sign().view_as(x)
    assert torch.allclose(fgsm(linear, x, y, EPS), expected, atol=1e-7)
    # Margin loss: the gradient is w_j* − w_y for the runner-up class j*, independent of x's scale.
    with torch.no_grad():
        logits = linear(x).scatter(1, y[:, None], float("-inf"))
        runner_up = logits.argmax(1)
        expected = x + EPS * (w[runner_up] - w[y]).sign().view_as(x)
    assert torch.allclose(fgsm(linear, x, y, EPS, loss_fn=margin_loss), expected, atol=1e-7)


def test_margin_loss_values():
    class Fixed(nn.Module):
        def forward(self, x):
            return torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])

    loss = margin_loss(Fixed(), torch.zeros(2, 1), torch.tensor([0, 2]))
    assert loss.tolist() == [-1.0, 6.0]


def test_pgd_is_not_weaker_than_fgsm_on_a_trained_model(fitted):
    model, x, y = fitted
    eps = 16 / 255  # the blobs have wide margins: smaller radii fool nothing
    accuracy = lambda images: (model(images).argmax(1) == y).float().mean().item()  # noqa: E731
    with torch.no_grad():
        clean = accuracy(x)
        acc_fgsm = accuracy(fgsm(model, x, y, eps))
        acc_pgd = accuracy(pgd(model, x, y, eps, steps=10, step_size=eps / 4,
                               rng=torch.Generator().manual_seed(0)))
    assert clean >= 0.9  # the fixture learned the task, so the comparison means something
    assert acc_pgd <= acc_fgsm <= clean
    assert acc_pgd < clean


def test_restarts_never_lose_a_fooled_example_and_rng_fixes_the_output(fitted):
    model, x, y = fitted
    eps = 32 / 255

    def attack(restarts: int, seed: int = 0):
        return pgd(model, x, y, eps, steps=3, step_size=eps / 2, restarts=restarts,
                   rng=torch.Generator().manual_seed(seed))

    with torch.no_grad():
        fooled_once = model(attack(1)).argmax(1) != y
        fooled_five = model(attack(5)).argmax(1) != y
    assert bool((fooled_five | ~fooled_once).all())  # every example fooled once stays fooled
    assert 0 < fooled_once.sum() < len(y)  # a radius where restarts can matter
    assert torch.equal(attack(2, seed=7), attack(2, seed=7))
    assert not torch.equal(attack(1, seed=7), attack(1, seed=8))


def test_restarts_keep_the_highest_loss_when_nothing_fools():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    with torch.no_grad():
        model[1].bias.copy_(torch.tensor([50.0, -50.0]))  # class 0 wins inside any small ball
    x, y = torch.rand(4, 3, 4, 4), torch.zeros(4, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    best = pgd(model, x, y, EPS, steps=0, step_size=0.0, restarts=6, rng=gen)
    gen = torch.Generator().manual_seed(0)
    singles = [pgd(model, x, y, EPS, steps=0, step_size=0.0, rng=gen) for _ in range(6)]
    with torch.no_grad():
        losses = torch.stack([ce_loss(model, s, y) for s in singles])
        assert torch.allclose(ce_loss(model, best, y), losses.max(0).values)


class GradientInForward(nn.Module):
    """A toy model that differentiates inside its forward, like CIFS's channel selection."""

    needs_autograd_at_eval = True

    def __init__(self) -> None:
        super().__init__()
        self.probe = nn.Linear(3 * 8 * 8, 4)
        self.head = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        z = x.flatten(1)
        detached = z.detach().requires_grad_(True)
        (relevance,) = torch.autograd.grad(self.probe(detached).max(1).values.sum(), detached,
                                           create_graph=True)
        return self.head(z * relevance.softmax(1) * z.shape[1])


def test_attacks_work_on_a_model_that_differentiates_inside_forward():
    torch.manual_seed(0)
    model = GradientInForward().eval()
    x, y = torch.rand(8, 3, 8, 8), torch.arange(8) % 4
    with torch.no_grad():  # the caller's no_grad must not break the attack
        adv = pgd(model, x, y, EPS, steps=3, step_size=EPS / 2, rng=torch.Generator().manual_seed(0))
        adv_fgsm = fgsm(model, x, y, EPS)
    with torch.enable_grad():
        loss_clean, loss_adv = ce_loss(model, x, y).sum(), ce_loss(model, adv, y).sum()
    assert loss_adv > loss_clean
    assert (adv - x).abs().max() <= EPS + 1e-7 and (adv_fgsm - x).abs().max() <= EPS + 1e-7


def test_bad_arguments_are_rejected():
    model = small_cnn().eval()
    x, y = _blobs(2, seed=0)
    with pytest.raises(ValueError, match="norm"):
        pgd(model, x, y, EPS, 1, EPS, norm="l1")
    with pytest.raises(ValueError, match="restarts"):
        pgd(model, x, y, EPS, 1, EPS, restarts=0)


def test_autoattack_is_not_weaker_than_pgd(fitted):
    pytest.importorskip("pyautoattack")
    from robustbench_lite.bench.attacks.autoattack_adapter import autoattack

    model, x, y = fitted
    x, y, eps = x[:16], y[:16], 16 / 255
    # apgd-t on 4 classes also checks that the target count adapts to datasets below ten classes.
    adv = autoattack(model, x, y, eps, seed=3, num_classes=4, version="custom",
                     attacks=("apgd-ce", "apgd-t"), batch_size=16)
    assert (adv - x).abs().max().item() <= eps + 1e-6 and 0 <= adv.min() and adv.max() <= 1
    with torch.no_grad():
        acc_aa = (model(adv).argmax(1) == y).float().mean().item()
        acc_pgd = (model(pgd(model, x, y, eps, steps=20, step_size=eps / 4,
                             rng=torch.Generator().manual_seed(0))).argmax(1) == y).float().mean()
    # APGD (100 iterations with an adaptive step, then targeted) finds every PGD-20 example here
    # and more, so no tolerance is needed on these 16 images.
    assert acc_aa <= acc_pgd.item()
    assert acc_aa < 1.0


def test_autoattack_is_seeded_and_handles_a_model_that_differentiates_inside_forward():
    pytest.importorskip("pyautoattack")
    from robustbench_lite.bench.attacks.autoattack_adapter import autoattack

    torch.manual_seed(0)
    model = GradientInForward().eval()
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    state = torch.get_rng_state()

    def attack(seed: int):
        return autoattack(model, x, y, 0.3, seed=seed, num_classes=4, version="custom",
                          attacks=("apgd-ce",), batch_size=4)

    adv = attack(0)
    assert torch.equal(state, torch.get_rng_state())  # the library's reseeding does not leak
    assert (adv - x).abs().max().item() <= 0.3 + 1e-6
    with torch.enable_grad():
        assert (model(adv).argmax(1) == y).sum().item() == 0  # a large radius fools every point
    assert torch.equal(adv, attack(0))
