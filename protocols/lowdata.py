"""Low-data generalisation: top-1 on the official test split after training on k images per class.

Follows the GLICO protocol (Azuri & Weinshall, ICPR 2020) used for CUB-200-2011 by TENET:
k in {5, 10, 20, 30} images per class from the official training split, the official test split,
an ImageNet-initialised ResNet-50 and epochs multiplied by max(1, 30 // k) so that small subsets get
about as many updates as the full split. The protocol works on any registered dataset:

- "30" generalises to the dataset's full per-class size (the largest class of the training split,
  `full_shots` to override): factor = max(1, full // k). Epochs, multistep milestones and the period
  of a step schedule are all multiplied by it.
- Subsets are seeded and nested: one permutation per class for each subset seed, and the k-shot
  subset is its first k images, so the 5-shot subset lies inside the 10-shot one. A subset depends
  only on the labels and the subset seed, never on the method. A class with fewer than k images
  contributes all of them (recorded as `classes_below_shots`).
- Every (k, subset seed) is one cached training run with the run's seed; the results are per-seed
  accuracies, their mean and standard deviation per k, and the mean over k.
- The backbone starts from ImageNet weights when it has them (`IMAGENET_WEIGHTS`) and the file is in
  the local torch cache (never downloaded); otherwise from scratch, recorded as `pretrained` = 0.
- With `recipe.crop_size` set (CUB: 224 of 256), evaluation uses the central crop of that size.

Deviations from GLICO: subsets are drawn here (GLICO reads the fixed split files of Barz & Denzler),
several subset seeds are averaged, and CUB images are stored as the central 256 square (see
`bench/datasets/cub.py`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from robustbench_lite.bench.datasets import ImageDataset, Split
from robustbench_lite.bench.config import setting
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.evaluate import accuracy
from robustbench_lite.bench.protocol import PROTOCOLS, Column, Measurement, Protocol, RunContext
from robustbench_lite.bench.recipes import Recipe
from robustbench_lite.bench.seeding import generator
from robustbench_lite.bench.weights import hub_file

DEFAULT_SHOTS = {
    "cub200": (5, 10, 20, 30),  # GLICO; 30 is about the whole split (29-30 images per class)
    # ~135 images per class. Every (k, subset seed) costs about one full training (k x factor ~
    # the full class size), so two shots x three seeds keep the default run to a few minutes on CPU;
    # smaller k (1, 2) also work but cost ~10^3 one-batch epochs (a checkpoint each) per run
    "digits": (5, 20),
}
GENERIC_SHOTS = (5, 10, 20, 50)
IMAGENET_WEIGHTS = {"resnet50": "ResNet50_Weights.IMAGENET1K_V1"}  # what the backbone factory loads


def shots_for(config: LowData.Config, dataset_name: str) -> tuple[int, ...]:
    shots = config.shots or DEFAULT_SHOTS.get(dataset_name, GENERIC_SHOTS)
    if any(k < 1 for k in shots) or len(set(shots)) != len(shots):
        raise UserError(f"protocol.shots {shots} must be distinct positive integers; "
                        f"pass e.g. --set protocol.shots=5,10")
    return tuple(sorted(shots))


def class_orders(labels: Tensor, num_classes: int, subset_seed: int) -> list[Tensor]:
    """Per class, the indices of its training images in a seeded random order."""
    rng = generator(subset_seed, "lowdata-subset")
    orders = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        orders.append(members[torch.randperm(len(members), generator=rng)])
    return orders


def shot_indices(labels: Tensor, num_classes: int, shots: int, subset_seed: int) -> Tensor:
    """Sorted indices of the k-shot subset: the first `shots` of every class's seeded order."""
    orders = class_orders(labels, num_classes, subset_seed)
    return torch.cat([order[:shots] for order in orders]).sort().values


def shot_split(dataset: ImageDataset, shots: int, subset_seed: int) -> Split:
    """The k-shot training subset for a subset seed (depends on nothing else)."""
    train = dataset.train
    return train.subset(shot_indices(train.y, dataset.num_classes, shots, subset_seed))


def full_shots(dataset: ImageDataset) -> int:
    """Images in the largest class of the training split (CUB: 30)."""
    return int(torch.bincount(dataset.train.y, minlength=dataset.num_classes).max())


def epoch_factor(shots: int, full: int) -> int:
    """GLICO's repetition factor max(1, full // k): 30-image classes give x6 at 5 shots."""
    return max(1, full // shots)


def scaled_recipe(recipe: Recipe, factor: int) -> Recipe:
    """The recipe with its epochs and every epoch-valued schedule setting multiplied by `factor`."""
    return replace(recipe, epochs=recipe.epochs * factor, step_every=recipe.step_every * factor,
                   milestones=tuple(m * factor for m in recipe.milestones))


def weights_file(backbone: str) -> Path | None:
    """Where torchvision keeps the backbone's ImageNet weights; None if it has none."""
    if backbone not in IMAGENET_WEIGHTS:
        return None
    import torchvision.models as tvm

    enum_name, member = IMAGENET_WEIGHTS[backbone].split(".")
    return hub_file(getattr(tvm, enum_name)[member].url)


def backbone_init(backbone: str, wanted: bool) -> dict:
    """Backbone kwargs: ImageNet weights only when wanted, supported and present locally."""
    path = weights_file(backbone)
    return {"pretrained": True} if wanted and path is not None and path.is_file() else {}


@PROTOCOLS.register("lowdata")
class LowData(Protocol):
    """Top-1 after training on k images per class (GLICO low-data protocol; CUB: 5/10/20/30)."""

    @dataclass(frozen=True)
    class Config:
        # images per class; () = the dataset's default (DEFAULT_SHOTS)
        shots: tuple[int, ...] = setting((), low=1)
        # one subset (and training run) per seed and k
        subset_seeds: tuple[int, ...] = setting((0, 1, 2), low=0, nonempty=True)
        # per-class size of the full split for the epoch factor; 0 = the largest class
        full_shots: int = setting(0, low=0)
        # ImageNet init when the backbone has weights in the local torch cache
        pretrained: bool = True

        def __post_init__(self) -> None:
            for name in ("shots", "subset_seeds"):
                values = getattr(self, name)
                if len(set(values)) != len(values):
                    raise ValueError(f"{name} {values} lists a value twice")

    trains_own_models = True  # one model per (shots, subset seed), never the default one
    cell_keys = ("shots", "subset_seed")

    def run(self, ctx: RunContext) -> list[Measurement]:
        cfg, dataset = self.config, ctx.dataset
        if not cfg.subset_seeds:
            raise UserError("protocol.subset_seeds is empty; pass e.g. --set protocol.subset_seeds=0,1,2")
        full = cfg.full_shots or full_shots(dataset)
        init = backbone_init(ctx.recipe.backbone, cfg.pretrained)
        test = ctx.test_split()
        counts = torch.bincount(dataset.train.y, minlength=dataset.num_classes)
        out, means = [], []
        for k in shots_for(cfg, dataset.name):
            factor = epoch_factor(k, full)
            recipe = scaled_recipe(ctx.recipe, factor)
            accs = []
            for seed in cfg.subset_seeds:
                model = ctx.train(split=shot_split(dataset, k, seed), recipe=recipe, **init)
                accs.append(accuracy(model, test.x, test.y, ctx.recipe.eval_batch_size))
                out.append(Measurement("accuracy", accs[-1], len(test), {"shots": k, "subset_seed": seed}))
            means.append(statistics.fmean(accs))
            cell = {"shots": k}
            out.append(Measurement("accuracy", means[-1], 0, cell))
            if len(accs) > 1:
                out.append(Measurement("accuracy_std", statistics.stdev(accs), 0, cell))
            out += [Measurement("epoch_factor", factor, 0, cell),
                    Measurement("train_images", int(counts.clamp(max=k).sum()), 0, cell),
                    Measurement("classes_below_shots", int((counts < k).sum()), 0, cell)]
        out += [Measurement("mean_accuracy", statistics.fmean(means), 0),
                Measurement("pretrained", float(bool(init)), 0)]
        return out

    def leaderboard_columns(self, rows: pd.DataFrame) -> list[Column]:
        """The mean over shots (ranks), then mean and subset-seed std for every shot present."""
        present = rows.loc[rows["metric"] == "accuracy", "shots"]
        shots = sorted({int(s) for s in present if str(s).strip()})
        columns = [Column("mean over shots", "mean_accuracy")]
        for k in shots:
            columns += [Column(f"{k}-shot", "accuracy", {"shots": k, "subset_seed": ""}),
                        Column(f"{k}-shot sd", "accuracy_std", {"shots": k}, higher_is_better=False)]
        return columns

    def comparison_figure(self, rows: pd.DataFrame, title: str):
        """Accuracy against images per class for every (method, backbone), mean ± std over seeds
        and subset seeds."""
        from robustbench_lite.bench.figures import new_figure, percent_axis

        cells = rows[(rows["metric"] == "accuracy") & (rows["subset_seed"] != "")
                     & (rows["shots"] != "")]
        if cells.empty:
            return None
        fig, (ax,) = new_figure(1, (7.0, 4.2))
        for (method, backbone), own in cells.groupby(["method", "backbone"], sort=True):
            stats = own.groupby(own["shots"].astype(int))["value"].agg(["mean", "std"]).fillna(0)
            label = method if cells["backbone"].nunique() == 1 else f"{method} · {backbone}"
            ax.errorbar(stats.index, 100 * stats["mean"], yerr=100 * stats["std"], marker="o",
                        capsize=3, label=label)
        ax.set_xscale("log")
        ax.minorticks_off()
        shots = sorted(cells["shots"].astype(int).unique())
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.set_xlabel("training images per class")
        percent_axis(ax, "top-1 accuracy")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return fig

    def notes(self, rows: pd.DataFrame) -> list[str]:
        """Which runs started from ImageNet weights or from scratch, and classes short of k images."""
        notes = []
        flags = rows[rows["metric"] == "pretrained"]
        for value, word in ((0.0, "from scratch (no ImageNet weights in the local torch cache)"),
                            (1.0, "from ImageNet weights")):
            picked = flags[(flags["value"] == value) & flags["backbone"].isin(list(IMAGENET_WEIGHTS))]
            names = sorted({f"{m} ({b})" for m, b in zip(picked["method"], picked["backbone"])})
            if names:
                notes.append(f"trained {word}: {', '.join(names)}")
        short = rows[(rows["metric"] == "classes_below_shots") & (rows["value"] > 0)]
        for k, group in short.groupby("shots"):
            notes.append(f"{k}-shot: {int(group['value'].max())} classes have fewer than {k} "
                         f"training images and contribute all they have")
        return notes
