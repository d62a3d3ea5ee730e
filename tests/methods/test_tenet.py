"""TENET: batched channel k-means, group masks, orthogonality loss, and the two-update step."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from robustbench_lite.bench.backbones import build_backbone
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.method import Batch, StepContext, as_updates
from robustbench_lite.bench.recipes import Recipe
from robustbench_lite.bench.train import Trainer, TrainJob
from robustbench_lite.methods._tenet_groups import (initial_centres, inhibition_masks,
                                                     kmeans_channels, orthogonality_loss)
from robustbench_lite.methods.tenet import Tenet

SMOKE = Recipe(backbone="tiny", epochs=1, batch_size=16, lr=0.05, crop_padding=2, flip=False)


# ---- channel k-means ---------------------------------------------------------------------------

def kmeans_one_sample(x, centres, iters, tol):
    """Plain per-sample reading of the algorithm (lists and loops), the reference for the batch."""
    centres = list(centres)
    ids = None
    for _ in range(iters):
        old = x[centres]
        ids = ((x[:, None] - old[None]) ** 2).sum(-1).argmin(1)
        new = []
        for g in range(len(centres)):
            members = x[ids == g]
            target = members.mean(0) if len(members) else old[g]
            dist = ((x - target) ** 2).sum(-1)
            for taken in new:
                dist[taken] = float("inf")
            new.append(int(dist.argmin()))
        shift = sum(float((x[n] - x[o]).norm()) for n, o in zip(new, centres))
        centres = new
        if shift ** 2 < tol:
            break
    return ids


@pytest.mark.parametrize("iters", [2, 50])
def test_batched_kmeans_agrees_with_a_per_sample_loop(iters):
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(6, 24, 10, generator=gen)
    maps[1, 5:9] = 0.0  # identical (dead) channels: ties and possibly empty clusters
    start = initial_centres(6, 24, 5, gen)
    assert all(len(set(row.tolist())) == 5 for row in start)
    ids = kmeans_channels(maps, start, iters=iters, tol=1e-4)
    assert ids.shape == (6, 24) and ids.min() >= 0 and ids.max() < 5
    for i in range(6):
        assert torch.equal(ids[i], kmeans_one_sample(maps[i], start[i].tolist(), iters, 1e-4))
    assert all(len(set(row.tolist())) == 5 for row in ids[[0, 2, 3, 4, 5]])


def test_kmeans_separates_obvious_clusters():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = torch.arange(30) % 3
    maps = (centres[labels] + 0.1 * torch.randn(30, 2, generator=torch.Generator().manual_seed(1)))
    ids = kmeans_channels(maps[None], torch.tensor([[0, 3, 6]]))[0]  # three channels of group 0
    assert all(len(set(ids[labels == k].tolist())) == 1 for k in range(3))
    assert len(set(ids.tolist())) == 3


# ---- masks and orthogonality -------------------------------------------------------------------

def test_masks_leave_unimportant_groups_and_inhibit_important_ones():
    gen = torch.Generator().manual_seed(2)
    features = torch.rand(2, 6, 3, 4, generator=gen)
    ids = torch.tensor([[0, 0, 1, 1, 2, 2], [1, 1, 1, 0, 0, 0]])
    grads = torch.zeros(2, 6, 3, 4)
    grads[0, :2] = 1.0  # sample 0: group 0 important, group 1 negative, group 2 zero
    grads[0, 2:4] = -1.0
    grads[1, :3] = torch.tensor([2.0, -1.0, 0.5])[:, None, None]  # weights 2, -1, 0.5 -> IS 1.5 > 0
    grads[1, 3:] = -0.1
    masks = inhibition_masks(features, grads, ids, groups=3)

    assert torch.equal(masks[0, 2:], torch.ones(4, 3, 4))
    assert torch.equal(masks[1, 3:], torch.ones(3, 3, 4))
    for i, channels, weights in [(0, [0, 1], [1.0, 1.0]), (1, [0, 1, 2], [2.0, -1.0, 0.5])]:
        m = sum(w * features[i, c] for c, w in zip(channels, weights))
        z = (m - m.mean()) / (m.std(unbiased=False) + 1e-8)
        for c in channels:
            torch.testing.assert_close(masks[i, c], 1 / (1 + torch.exp(z)))
        assert ((masks[i, channels] > 0) & (masks[i, channels] < 1)).all()
    assert masks.view(2, 3, 2, 12)[0].unique(dim=1).shape[1] == 1  # constant within a group


def test_orthogonality_loss_matches_hand_computation():
    features = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [1.0, 1.0], [5.0, 5.0]],
                             [[1.0, 2.0], [0.0, -1.0], [2.0, 2.0], [4.0, 0.0]]])[..., None]
    ids = torch.tensor([[0, 0, 2, 2], [0, 1, 2, 2]])  # sample 0: group 1 empty
    # sample 0: means (2, 0) and (3, 3) -> |6| over 1 pair
    # sample 1: means (1, 2), (0, -1), (3, 1) -> (|-2| + |5| + |-1|) / 3
    expected = (6.0 + 8.0 / 3) / 2
    torch.testing.assert_close(orthogonality_loss(features, ids, groups=3), torch.tensor(expected))
    single = orthogonality_loss(features[:1], torch.zeros(1, 4, dtype=torch.long), groups=3)
    assert float(single) == 0.0


# ---- the training step -------------------------------------------------------------------------

def make_model(name="tiny", classes=4, seed=0):
    torch.manual_seed(seed)
    return build_backbone(name, classes, (0.5,) * 3, (0.25,) * 3)


def context(step=0, seed=0):
    rng = torch.Generator().manual_seed(seed)
    return StepContext(step, 0, 10, 100, 4, rng, torch.device("cpu"))


def drive(method, model, batch, ctx, lr=0.05):
    """Run a training step the way the trainer does; the loss dicts, one per optimizer update."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    updates = []
    model.train()
    for losses in as_updates(method.training_step(model, batch, ctx)):
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        updates.append({k: v.item() for k, v in losses.items()})
    return updates


def labelled_batch(model, correct, n=8, seed=0):
    """A batch whose pre-update predictions are right exactly at the indices `correct`."""
    x = torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        pred = model.train()(x).argmax(1)
    wrong = torch.ones(n, dtype=torch.bool)
    wrong[list(correct)] = False
    return Batch(x, torch.where(wrong, (pred + 1) % 4, pred))


def tenet(**changes):
    return Tenet(dataclasses.replace(Tenet.Config(), **changes))


@pytest.mark.parametrize("step, expected", [(6, 2), (7, 1), (4, 1), (2, 1)])
def test_tenet_iterations_make_two_updates_and_others_one(step, expected):
    model = make_model()
    method = tenet(warmup_steps=5, every=3)  # TENET at steps 6, 9, ... only
    updates = drive(method, model, labelled_batch(model, range(8)), context(step))
    assert len(updates) == expected
    assert list(updates[0]) == ["ce"]
    if expected == 2:
        assert set(updates[1]) == {"tenet_ce", "orth"} and updates[1]["orth"] > 0


def test_warmup_is_capped_at_a_fraction_of_short_runs():
    assert Tenet().warmup(39_200) == 500  # the reference's CIFAR run: its 500 steps
    assert Tenet().warmup(315) == 31  # the digits default run: 10 % of it
    model = make_model()
    method = tenet(every=3)  # defaults: 500 warm-up steps, capped at 10 of context()'s 100
    assert len(drive(method, model, labelled_batch(model, range(8)), context(9))) == 1
    assert len(drive(method, model, labelled_batch(model, range(8)), context(12))) == 2


def test_every_step_after_warmup_zero():
    model = make_model()
    for step in range(3):
        updates = drive(tenet(warmup_steps=0, every=1), model, labelled_batch(model, range(8)),
                        context(step))
        assert len(updates) == 2


@pytest.mark.parametrize("correct, expected", [([3], 1), ([], 1), ([1, 6], 2)])
def test_too_few_correct_samples(correct, expected):
    model = make_model()
    batch = labelled_batch(model, correct)
    assert len(drive(tenet(warmup_steps=0, every=1), model, batch, context())) == expected


def test_second_update_uses_the_samples_correct_before_the_first_update():
    model, method = make_model(), tenet(warmup_steps=0, every=1)
    correct = [0, 2, 3, 5]
    batch = labelled_batch(model, correct)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    ctx = context(seed=3)
    steps = method.training_step(model.train(), batch, ctx)
    next(steps)
    with torch.no_grad():  # an "update" after which only class-0 samples would look correct
        model.head[-1].bias += torch.tensor([50.0, 0.0, 0.0, 0.0])
    assert not torch.equal((batch.y == 0).nonzero().flatten(), torch.tensor(correct))
    rng_copy = torch.Generator().manual_seed(3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    losses = next(steps)
    assert model.training
    assert len(seen) == 3 and all(torch.equal(s, batch.x[correct]) for s in seen[1:])

    # the same losses, composed by hand from the pieces
    model.load_state_dict(state)  # BN running statistics as the first inference saw them
    x, y = batch.x[correct], batch.y[correct]
    features, grads = method.saliency(model, x, y, "stage2")
    with torch.no_grad():
        model.eval()
        eval_features = []
        model(x, edits={"stage2": lambda a: eval_features.append(a) or a})
        model.train()
    assert torch.equal(features, eval_features[0])
    ids = kmeans_channels(features.flatten(2), initial_centres(4, 32, 6, rng_copy))
    mask = inhibition_masks(features, grads, ids, 6)
    assert (mask < 1).any()
    captured = []
    logits = model(x, edits={"stage2": lambda a: captured.append(a) or a * mask})
    torch.testing.assert_close(losses["tenet_ce"], 0.1 * F.cross_entropy(logits, y))
    torch.testing.assert_close(losses["orth"], 1e-3 * orthogonality_loss(captured[0], ids, 6))


def test_same_seed_gives_bit_identical_losses():
    def run():
        model, method = make_model(seed=4), tenet(warmup_steps=1, every=1)
        ctx_rng = torch.Generator().manual_seed(9)
        history = []
        for step in range(3):
            batch = labelled_batch(model, range(6), seed=step)
            ctx = StepContext(step, 0, 3, 30, 4, ctx_rng, torch.device("cpu"))
            history += drive(method, model, batch, ctx)
        return history

    first, second = run(), run()
    assert len(first) == 5 and first == second


def test_tap_resolution_and_errors():
    assert Tenet().tap(make_model("tiny")) == "stage2"
    assert Tenet().tap(make_model("resnet18")) == "stage3"
    assert tenet(tap="stage1").tap(make_model()) == "stage1"
    with pytest.raises(UserError):
        tenet(tap="stage9").build_model(make_model())
    with pytest.raises(UserError):
        tenet(groups=40).build_model(make_model())  # stage2 of tiny has 32 channels
    with pytest.raises(UserError):
        tenet(every=0).build_model(make_model())


def test_trainer_makes_one_update_per_yielded_dict(tiny_dataset, tmp_path):
    method = tenet(warmup_steps=0, every=1)
    job = TrainJob(method, "tenet", tiny_dataset, SMOKE, seed=0)
    trainer = Trainer(job, job.build_model(), torch.device("cpu"), progress=False)
    counts = {"yields": 0, "steps": 0}
    step_once, training_step = trainer.optimizer.step, method.training_step

    def counted_step(*args, **kwargs):
        counts["steps"] += 1
        return step_once(*args, **kwargs)

    def counted_training_step(*args):
        for losses in training_step(*args):
            counts["yields"] += 1
            yield losses

    trainer.optimizer.step = counted_step
    method.training_step = counted_training_step
    trainer.fit(tmp_path / "partial.pt")
    assert counts["steps"] == counts["yields"] > trainer.total_steps
