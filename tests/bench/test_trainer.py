"""The training loop: schedule, augmentation, multi-update steps, determinism, resume, divergence."""

from dataclasses import replace
import pytest
import torch
import torch.nn.functional as F

from robustbench_lite.bench.errors import DivergedError
from robustbench_lite.bench.method import Method
from robustbench_lite.bench.recipes import Recipe
from robustbench_lite.bench.train import Trainer, TrainJob, augment, learning_rate, trained_model

CPU = torch.device("cpu")


def test_cosine_schedule_starts_at_peak_and_ends_near_zero():
    recipe = Recipe(lr=0.1, epochs=10, schedule="cosine")
    assert learning_rate(recipe, 0, 5) == pytest.approx(0.1)
    assert learning_rate(recipe, 25, 5) == pytest.approx(0.05)
    assert learning_rate(recipe, 49, 5) < 0.001


def test_multistep_schedule():
    recipe = Recipe(lr=0.1, schedule="multistep", milestones=(2, 4), gamma=0.1)
    assert [round(learning_rate(recipe, e * 10, 10), 6) for e in range(6)] == \
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]


def test_crop_is_a_shift_of_the_zero_padded_image_and_flip_mirrors():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.uint8).view(2, 3, 6, 6)
    out = augment(x, Recipe(crop_padding=2, flip=False), torch.Generator().manual_seed(3))
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    flipped = augment(x, Recipe(crop_padding=0, flip=True), torch.Generator().manual_seed(0))
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(2)) for f, o in zip(flipped, x))


class TwoUpdates(Method):
    """Yields two loss dicts per batch (as TENET does)."""

    def training_step(self, model, batch, ctx):
        yield {"ce": F.cross_entropy(model(batch.x), batch.y)}
        yield {"again": F.cross_entropy(model(batch.x), batch.y)}


def _job(method, dataset, **recipe):
    base = Recipe(backbone="tiny", epochs=2, batch_size=16, crop_padding=2, flip=False)
    return TrainJob(method, "test", dataset, replace(base, **recipe), seed=0)


def test_each_yielded_loss_dict_is_one_optimizer_update(tiny_dataset, tmp_path):
    job = _job(TwoUpdates(), tiny_dataset, epochs=1)
    trainer = Trainer(job, job.build_model(), CPU, progress=False)
    calls = []
    original = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (calls.append(1), original(*a, **k))
    trainer.fit(tmp_path / "partial.pt")
    assert len(calls) == 2 * trainer.steps_per_epoch


def test_same_seed_gives_bit_identical_weights(tiny_dataset, tmp_path):
    a = trained_model(_job(Method(), tiny_dataset), CPU, tmp_path / "a", progress=False)
    b = trained_model(_job(Method(), tiny_dataset), CPU, tmp_path / "b", progress=False)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_cache_is_reused_and_keyed_by_recipe(tiny_dataset, tmp_path):
    job = _job(Method(), tiny_dataset)
    trained_model(job, CPU, tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    trained_model(job, CPU, tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    trained_model(_job(Method(), tiny_dataset, lr=0.01), CPU, tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_a_method_revision_keys_the_cache_from_one_on(tiny_dataset):
    """Revision 0 leaves every existing key as it was; a raised revision is a new model."""

    class Revised(Method):
        """ERM whose training code changed once."""

        revision = 1

    plain, revised = _job(Method(), tiny_dataset), _job(Revised(), tiny_dataset)
    assert plain.key() != revised.key()
    assert plain.key() == _job(Method(), tiny_dataset).key()


def test_the_evaluation_batch_does_not_key_the_trained_model(tiny_dataset):
    """Changing how many images are evaluated at once must not retrain; keys of models trained
    before the rule (evaluation batch at its default) are unchanged."""
    from robustbench_lite.bench.config import config_dict, stable_hash
    from robustbench_lite.bench.recipes import identity
    from robustbench_lite.bench.train import CACHE_FORMAT

    plain = _job(Method(), tiny_dataset)
    assert plain.key() == _job(Method(), tiny_dataset, eval_batch_size=7).key()
    assert plain.key() != _job(Method(), tiny_dataset, batch_size=8).key()
    earlier = stable_hash({"format": CACHE_FORMAT, "method": "test", "config": config_dict(
        plain.method.config), "dataset": tiny_dataset.name, "data": tiny_dataset.train.fingerprint(),
        "recipe": identity(plain.recipe), "seed": 0, "backbone_kwargs": {}})
    assert plain.key() == earlier


class CrashAfterFirstEpoch(Exception):
    pass


def test_resumed_training_equals_uninterrupted(tiny_dataset, tmp_path):
    job = _job(Method(), tiny_dataset, epochs=3)
    straight = trained_model(job, CPU, tmp_path / "straight", progress=False)

    model = job.build_model()
    trainer = Trainer(job, model, CPU, progress=False)
    original = trainer._epoch

    def crash_in_second_epoch(epoch, bar):
        if epoch == 1:
            raise CrashAfterFirstEpoch
        original(epoch, bar)

    trainer._epoch = crash_in_second_epoch
    stem = tmp_path / "resumed"
    key = f"test-tiny-s0-{job.key()}"
    with pytest.raises(CrashAfterFirstEpoch):
        trainer.fit(stem / f"{key}.partial.pt")
    resumed = trained_model(job, CPU, stem, progress=False)
    for (name, pa), pb in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(pa, pb), name


class Diverges(Method):
    """Returns a non-finite loss at the third step."""

    def training_step(self, model, batch, ctx):
        loss = F.cross_entropy(model(batch.x), batch.y)
        return {"ce": loss * (float("nan") if ctx.step == 2 else 1.0)}


def test_divergence_names_method_epoch_and_step(tiny_dataset, tmp_path):
    with pytest.raises(DivergedError, match=r"'test' diverged at epoch 1, step 3"):
        trained_model(_job(Diverges(), tiny_dataset), CPU, tmp_path, progress=False)
    finished = [p for p in tmp_path.glob("*.pt") if not p.name.endswith(".partial.pt")]
    assert finished == []
