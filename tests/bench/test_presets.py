"""The `paper` preset holds each method's published recipe, field by field, as its sources give it;
`shared` is one recipe for all; a method-specific default trains CIFS on the embedded dataset."""

from __future__ import annotations

import dataclasses

import pytest

from robustbench_lite.bench.backbones import BACKBONES
from robustbench_lite.bench.method import METHODS
from robustbench_lite.bench.recipes import PAPER, Recipe, identity, recipe_for

# Transcribed from the cited tables and reference code (see each entry's sources), independently
# of bench/recipes.py: (backbone, epochs, batch, lr, momentum, nesterov, weight decay, schedule,
# milestones, init).
CITED = {
    # He et al. 2016, 4.2: 64k iterations of batch 128 (391 per epoch), /10 at 32k and 48k
    "erm": ("resnet20", 164, 128, 0.1, 0.9, False, 1e-4, "multistep", (82, 123), "pytorch"),
    # mixup-cifar10 train.py: --epoch 200 --batch-size 128 --lr 0.1 --decay 1e-4, /10 at 100, 150
    "mixup": ("preact_resnet18", 200, 128, 0.1, 0.9, False, 1e-4, "multistep", (100, 150),
              "pytorch"),
    # CutMix README: --epochs 300 --batch_size 64 --lr 0.25; train.py: Nesterov, wd 1e-4, x0.1 at
    # epochs // (0.5 * 300) and // (0.75 * 300)
    "cutmix": ("preact_resnet18", 300, 64, 0.25, 0.9, True, 1e-4, "multistep", (150, 225),
               "pytorch"),
    # manifold_mixup README: --epochs 2000 --schedule 500 1000 1500 --decay 0.0001; main.py:
    # batch 100, Nesterov
    "manifold_mixup": ("preact_resnet18", 2000, 100, 0.1, 0.9, True, 1e-4, "multistep",
                       (500, 1000, 1500), "pytorch"),
    # methods.md 2.4 (unverified): 1200 epochs, lr 0.1, wd 1e-4, /10 at 400 and 800, batch 100
    "catchup": ("preact_resnet18", 1200, 100, 0.1, 0.9, False, 1e-4, "multistep", (400, 800),
                "pytorch"),
    # augmix cifar.py: wrn 40-2, -e 100, -b 128, -lr 0.1, -wd 0.0005, nesterov, per-step cosine
    "augmix": ("wrn40_2", 100, 128, 0.1, 0.9, True, 5e-4, "cosine", (), "pytorch"),
    # cifar10_challenge config.json: 80000 steps of 128, [[0, 0.1], [40000, 0.01], [60000, 0.001]],
    # momentum 0.9, weight_decay 0.0002
    "pgd_at": ("wrn34_10", 205, 128, 0.1, 0.9, False, 2e-4, "multistep", (102, 154), "pytorch"),
    # methods.md 3.3: 200 epochs, batch 128, lr 0.1, /10 at 80, 120, 160, Nesterov 0.9, wd 1e-4
    "pushpull": ("resnet20", 200, 128, 0.1, 0.9, True, 1e-4, "multistep", (80, 120, 160),
                 "kaiming_fan_out"),
    # methods.md 1.4-1.5: ResNeXt-29, 200 epochs, batch 256, SGD Nesterov 0.1, wd 5e-4, cosine
    "tenet": ("resnext29", 200, 256, 0.1, 0.9, True, 5e-4, "cosine", (), "kaiming_fan_out"),
    # methods.md 4.3: ResNet-18, 120 epochs, batch 128, lr 0.1, momentum 0.9, no Nesterov,
    # wd 2e-4, x0.1 at 75 and 90
    "cifs": ("resnet18", 120, 128, 0.1, 0.9, False, 2e-4, "multistep", (75, 90), "pytorch"),
}
FIELDS = ("backbone", "epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay",
          "schedule", "milestones", "init")


def test_every_built_in_method_has_a_paper_recipe():
    builtin = [m for m in METHODS.names() if METHODS.source(m) == "builtin"]
    assert sorted(PAPER) == sorted(CITED) == sorted(builtin)


@pytest.mark.parametrize("method", sorted(CITED))
def test_each_paper_field_is_the_cited_value_and_names_its_source(method):
    entry = PAPER[method]
    recipe = recipe_for("paper", "cifar10", method)
    assert recipe is entry.recipe and recipe_for("paper", "cifar100", method) is entry.recipe
    assert tuple(getattr(recipe, f) for f in FIELDS) == CITED[method]
    assert (recipe.crop_padding, recipe.flip) == (4, True)  # pad-4 crop and flip, everywhere
    changed = {f.name for f in dataclasses.fields(Recipe)
               if getattr(recipe, f.name) != f.default} - {"eval_batch_size"}
    assert changed <= set(entry.sources), f"fields without a source: {changed - set(entry.sources)}"
    assert all(len(text) > 20 for text in entry.sources.values())
    assert recipe.backbone in BACKBONES.names()


def test_shared_is_one_recipe_for_every_method_and_datasets_keep_theirs():
    shared = {recipe_for("shared", "cifar10", m) for m in CITED}
    assert len(shared) == 1 and next(iter(shared)).backbone == "preact_resnet18"
    for method in CITED:  # the embedded dataset and CUB (the low-data protocol) keep theirs
        assert recipe_for("paper", "cub200", method) == recipe_for("shared", "cub200", method)
    assert recipe_for("paper", "cifar10", "label_smoothing") == next(iter(shared))


def test_cifs_gets_a_default_recipe_that_trains_it_and_others_keep_theirs():
    assert recipe_for("default", "digits", "cifs").epochs == 45
    assert {recipe_for("default", "digits", m).epochs for m in CITED if m != "cifs"} == {15}


def test_the_init_field_leaves_existing_identities_unchanged():
    plain = recipe_for("default", "digits", "erm")
    assert "init" not in identity(plain)
    assert identity(dataclasses.replace(plain, init="kaiming_fan_out"))["init"] == \
        "kaiming_fan_out"


def test_kaiming_fan_out_initialises_as_torchvision_does():
    import torch

    from robustbench_lite.bench.backbones import build_backbone, initialise

    torch.manual_seed(0)
    net = build_backbone("resnet20", 10, (0.5,) * 3, (0.25,) * 3)
    initialise(net, "kaiming_fan_out")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    wide = max(convs, key=lambda m: m.weight.numel())
    fan_out = wide.out_channels * wide.kernel_size[0] * wide.kernel_size[1]
    assert wide.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
