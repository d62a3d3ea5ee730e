"""Training recipes (presets).

`smoke` runs in seconds on CPU (tests, CI); `default` trains the embedded dataset in under a minute
per ERM model on 2 cores; `shared` is one full-scale CIFAR recipe for every method, the fair
head-to-head comparison; `paper` is each method's own published CIFAR recipe (`PAPER`, every field
with its source), and the shared one for a method without one. The embedded dataset and CUB keep
their dataset recipes under every preset (CUB's is the low-data protocol's, GLICO's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

from .config import setting, validate
from .errors import UserError


@dataclass(frozen=True)
class Recipe:
    """Everything the trainer needs besides the method and the data."""

    backbone: str = "tiny"
    epochs: int = setting(15, low=1)
    batch_size: int = setting(64, low=1)
    lr: float = setting(0.05, low=0, low_open=True)  # peak learning rate
    momentum: float = setting(0.9, low=0, high=1, high_open=True)
    nesterov: bool = True
    weight_decay: float = setting(5e-4, low=0)
    schedule: Literal["cosine", "multistep", "step", "constant"] = "cosine"
    # epochs at which a multistep schedule multiplies by gamma (increasing)
    milestones: tuple[int, ...] = setting((), low=1)
    step_every: int = setting(0, low=0)  # a "step" schedule multiplies by gamma every N epochs
    gamma: float = setting(0.1, low=0, low_open=True)
    crop_padding: int = setting(4, low=0)  # random crop after zero padding; 0 disables
    crop_size: int = setting(0, low=0)  # training crops of this size (224 of 256); 0 = image size
    flip: bool = True  # random horizontal flip
    train_limit: int = setting(0, low=0)  # train on the first N (seeded-shuffled) images; 0 = all
    eval_batch_size: int = setting(500, low=1)
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    # backbone weights: PyTorch's defaults, or Kaiming-normal fan-out convolutions and unit
    # BatchNorm (torchvision's ResNet init, used by the push-pull and TENET references)
    init: Literal["pytorch", "kaiming_fan_out"] = "pytorch"

    def __post_init__(self) -> None:
        validate(self, "the recipe", "recipe.")
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ValueError(f"milestones {self.milestones} must be increasing epochs")
        if self.schedule == "step" and self.step_every < 1:
            raise ValueError("the 'step' schedule needs a period: step_every >= 1")


_DIGITS = Recipe(backbone="tiny", epochs=15, batch_size=64, lr=0.05, flip=False, crop_padding=2)
_CIFAR_SHARED = Recipe(backbone="preact_resnet18", epochs=200, batch_size=128, lr=0.1,
                       weight_decay=5e-4)
# GLICO's low-data CUB recipe (methods.md 5.3): ImageNet ResNet-50 fine-tuned at 224 px (random crop
# of the stored 256 px, no flip), SGD Nesterov, StepLR x0.9 every 2 epochs (the low-data protocol
# scales epochs and step by its repetition factor).
_CUB_PAPER = Recipe(backbone="resnet50", epochs=200, batch_size=16, lr=0.001, momentum=0.9,
                    weight_decay=1e-5, schedule="step", step_every=2, gamma=0.9, crop_padding=0,
                    crop_size=224, flip=False, eval_batch_size=100)

PRESETS: dict[str, dict[str, Recipe]] = {
    "smoke": {"*": replace(_DIGITS, epochs=4, batch_size=32, train_limit=512)},
    "default": {"*": replace(_CIFAR_SHARED, backbone="resnet18", epochs=30), "digits": _DIGITS,
                "cub200": replace(_CUB_PAPER, epochs=30)},
    "shared": {"*": _CIFAR_SHARED, "digits": replace(_DIGITS, epochs=30), "cub200": _CUB_PAPER},
    "paper": {"*": _CIFAR_SHARED, "digits": replace(_DIGITS, epochs=30), "cub200": _CUB_PAPER},
}


@dataclass(frozen=True)
class PaperRecipe:
    """A method's published CIFAR recipe: the fields, where each comes from, and what differs."""

    recipe: Recipe
    sources: dict[str, str]  # field -> paper section or reference-code file
    deviations: tuple[str, ...] = ()


_SGD = ("lr", "momentum", "nesterov", "weight_decay")
_CROP_FLIP = ("crop_padding", "flip")


def _cited(source: str, *fields: str) -> dict[str, str]:
    return {name: source for name in fields}


PAPER: dict[str, PaperRecipe] = {
    "erm": PaperRecipe(
        Recipe(backbone="resnet20", epochs=164, batch_size=128, lr=0.1, nesterov=False,
               weight_decay=1e-4, schedule="multistep", milestones=(82, 123)),
        _cited("He et al., CVPR 2016, section 4.2 (CIFAR-10): ResNet-20, batch 128, lr 0.1, "
               "momentum 0.9, wd 1e-4, lr/10 at 32k and 48k iterations, stop at 64k",
               "backbone", "epochs", "batch_size", "schedule", "milestones", *_SGD, *_CROP_FLIP),
        ("iterations as epochs of 391 steps: 64k -> 164, 32k -> 82, 48k -> 123",)),
    "mixup": PaperRecipe(
        Recipe(backbone="preact_resnet18", epochs=200, batch_size=128, lr=0.1, nesterov=False,
               weight_decay=1e-4, schedule="multistep", milestones=(100, 150)),
        _cited("Zhang et al., ICLR 2018, section 3.2 and facebookresearch/mixup-cifar10 train.py: "
               "PreAct ResNet-18, 200 epochs, batch 128, SGD lr 0.1 momentum 0.9, wd 1e-4, lr/10 "
               "at epochs 100 and 150", "backbone", "epochs", "batch_size", "schedule",
               "milestones", *_SGD, *_CROP_FLIP)),
    "cutmix": PaperRecipe(
        Recipe(backbone="preact_resnet18", epochs=300, batch_size=64, lr=0.25, nesterov=True,
               weight_decay=1e-4, schedule="multistep", milestones=(150, 225)),
        {**_cited("clovaai/CutMix-PyTorch README (CIFAR-100 command) and train.py: 300 epochs, "
                  "batch 64, lr 0.25, SGD momentum 0.9 Nesterov, wd 1e-4, lr/10 at 50% and 75% "
                  "of the epochs", "epochs", "batch_size", "schedule", "milestones", *_SGD,
                  *_CROP_FLIP),
         "backbone": "deviation: the paper's PyramidNet-200 (alpha 240) is not in the suite"},
        ("PreActResNet-18 instead of PyramidNet-200",)),
    "manifold_mixup": PaperRecipe(
        Recipe(backbone="preact_resnet18", epochs=2000, batch_size=100, lr=0.1, nesterov=True,
               weight_decay=1e-4, schedule="multistep", milestones=(500, 1000, 1500)),
        _cited("vikasverma1077/manifold_mixup supervised README (CIFAR-10 command) and main.py: "
               "preactresnet18, 2000 epochs, lr 0.1 momentum 0.9, wd 1e-4, schedule 500 1000 "
               "1500 x0.1, batch 100, SGD Nesterov", "backbone", "epochs", "batch_size",
               "schedule", "milestones", *_SGD, *_CROP_FLIP)),
    "catchup": PaperRecipe(
        Recipe(backbone="preact_resnet18", epochs=1200, batch_size=100, lr=0.1, nesterov=False,
               weight_decay=1e-4, schedule="multistep", milestones=(400, 800)),
        _cited("UNVERIFIED (methods.md 2.4): the authors' earlier GuidedMixup/PuzzleMix CIFAR-100 "
               "protocol, PreActResNet-18, 1200 epochs, SGD lr 0.1 momentum 0.9, wd 1e-4, lr/10 "
               "at 400 and 800, batch 100", "backbone", "epochs", "batch_size", "schedule",
               "milestones", *_SGD, *_CROP_FLIP),
        ("the paper gives no recipe; the authors' previous protocol is used",)),
    "augmix": PaperRecipe(
        Recipe(backbone="wrn40_2", epochs=100, batch_size=128, lr=0.1, nesterov=True,
               weight_decay=5e-4, schedule="cosine"),
        _cited("google-research/augmix cifar.py defaults: WRN-40-2, 100 epochs, batch 128, SGD lr "
               "0.1 momentum 0.9 Nesterov, wd 5e-4, per-step cosine, flip + crop 4", "backbone",
               "epochs", "batch_size", "schedule", *_SGD, *_CROP_FLIP),
        ("the cosine ends at 0, the reference's at 1e-6",)),
    "pgd_at": PaperRecipe(
        Recipe(backbone="wrn34_10", epochs=205, batch_size=128, lr=0.1, nesterov=False,
               weight_decay=2e-4, schedule="multistep", milestones=(102, 154)),
        _cited("Madry et al., ICLR 2018, appendix (CIFAR-10) and MadryLab/cifar10_challenge "
               "config.json: wide ResNet (5 residual units per stage, widths 160/320/640), 80k "
               "steps of batch 128, lr 0.1 -> 0.01 at 40k -> 0.001 at 60k, momentum 0.9, wd 2e-4",
               "backbone", "epochs", "batch_size", "schedule", "milestones", *_SGD, *_CROP_FLIP),
        ("steps as epochs of 391 steps: 80k -> 205, 40k -> 102, 60k -> 154",)),
    "pushpull": PaperRecipe(
        Recipe(backbone="resnet20", epochs=200, batch_size=128, lr=0.1, nesterov=True,
               weight_decay=1e-4, schedule="multistep", milestones=(80, 120, 160),
               init="kaiming_fan_out"),
        _cited("Strisciuglio et al. 2020, section 4 and the reference train.py with "
               "--extra-epochs 40 (methods.md 3.3): ResNet-20, 200 epochs, batch 128, lr 0.1, "
               "lr/10 at 80, 120, 160, SGD Nesterov 0.9, wd 1e-4, Kaiming fan-out init",
               "backbone", "epochs", "batch_size", "schedule", "milestones", "init", *_SGD,
               *_CROP_FLIP),
        ("zero padding for the random crop; the reference pads by reflection",)),
    "tenet": PaperRecipe(
        Recipe(backbone="resnext29", epochs=200, batch_size=256, lr=0.1, nesterov=True,
               weight_decay=5e-4, schedule="cosine", init="kaiming_fan_out"),
        _cited("the TENET reference main.py --dataset CIFAR10 (methods.md 1.4-1.5): ResNeXt-29 "
               "4x32d, 200 epochs, batch 256, SGD Nesterov lr 0.1 momentum 0.9, wd 5e-4, "
               "per-step cosine, Kaiming fan-out init", "backbone", "epochs", "batch_size",
               "schedule", "init", *_SGD, *_CROP_FLIP),
        ("trained on the training set only; the reference adds an AugMix copy of it",)),
    "cifs": PaperRecipe(
        Recipe(backbone="resnet18", epochs=120, batch_size=128, lr=0.1, nesterov=False,
               weight_decay=2e-4, schedule="multistep", milestones=(75, 90)),
        _cited("the CIFS reference training script (methods.md 4.3): CIFAR ResNet-18, 120 epochs, "
               "batch 128, SGD lr 0.1 momentum 0.9 without Nesterov, wd 2e-4, lr/10 at 75 and 90, "
               "crop 4 + flip", "backbone", "epochs", "batch_size", "schedule", "milestones",
               *_SGD, *_CROP_FLIP),
        ("trained from scratch; the reference resumed from a clean-trained CIFS model",)),
}

# Method-specific recipes of the other presets, by dataset.
METHOD_RECIPES: dict[tuple[str, str], dict[str, Recipe]] = {
    # CIFS trains PGD-10 examples of a probe-masked network: on the embedded dataset it needs three
    # times the ERM epochs to train (53.6% clean after 15 epochs, 99.3% after 45)
    ("default", "cifs"): {"digits": replace(_DIGITS, epochs=45)},
    **{("paper", method): {"*": entry.recipe} for method, entry in PAPER.items()},
}

PRESET_DESCRIPTIONS = {
    "smoke": "4 epochs on 512 images (64 steps) with the tiny backbone: seconds on CPU, for tests and CI",
    "default": "embedded dataset: tiny ResNet, 15 epochs (< 1 min on 2 cores; CIFS 45); CIFAR: "
               "ResNet-18, 30 epochs; CUB: the paper recipe with 30 epochs",
    "shared": "one recipe for every method, the fair comparison: CIFAR: PreActResNet-18, 200 "
              "epochs, SGD 0.1 Nesterov, wd 5e-4, cosine; CUB: GLICO's ResNet-50 recipe",
    "paper": "each method's published CIFAR recipe (below; every field's source in "
             "bench/recipes.py); the embedded dataset as shared; CUB: GLICO's",
}


def describe(recipe: Recipe) -> str:
    """'resnet18, 120 epochs, batch 128, SGD 0.1 (Nesterov), wd 2e-4, x0.1 at 75/90'."""
    optimizer = f"SGD {recipe.lr:g}{' Nesterov' if recipe.nesterov else ''}"
    schedule = {"cosine": "cosine", "constant": "constant",
                "multistep": f"x{recipe.gamma:g} at {'/'.join(map(str, recipe.milestones))}",
                "step": f"x{recipe.gamma:g} every {recipe.step_every}"}[recipe.schedule]
    init = ", Kaiming fan-out init" if recipe.init == "kaiming_fan_out" else ""
    return (f"{recipe.backbone}, {recipe.epochs} epochs, batch {recipe.batch_size}, {optimizer}, "
            f"wd {_short(recipe.weight_decay)}, {schedule}{init}")


def _short(number: float) -> str:
    return f"{number:.0e}".replace("e-0", "e-") if 0 < number < 1e-2 else f"{number:g}"


# Fields added after the cache format was fixed: they enter a recipe's identity only when set, so
# models and runs made before they existed keep their keys.
_LATER_FIELDS = {"init": "pytorch"}


def identity(recipe: Recipe) -> dict:
    """The recipe as it keys trained models and run ids."""
    return comparable(asdict(recipe))


def training_identity(recipe: Recipe) -> dict:
    """The recipe as it keys trained models: what changes the trained weights. The evaluation batch
    does not, so it is held at the field's default (500) there, which keeps the keys of models
    trained before this rule; it still enters run ids (`identity`)."""
    return identity(replace(recipe, eval_batch_size=Recipe.eval_batch_size))


def comparable(fields: dict) -> dict:
    """Recipe fields (e.g. read back from a sidecar) without the later fields at their default,
    so a recipe written before a field existed equals one written after."""
    return {k: v for k, v in fields.items() if _LATER_FIELDS.get(k, object()) != v}


def recipe_for(preset: str, dataset: str, method: str | None = None) -> Recipe:
    """The recipe of `method` on `dataset` under `preset`: the method's own for this dataset, the
    preset's for this dataset, the method's own for any dataset, the preset's for any dataset."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    own, table = METHOD_RECIPES.get((preset, method or ""), {}), PRESETS[preset]
    for candidates in (own, table):
        if dataset in candidates:
            return candidates[dataset]
    return own.get("*", table["*"])
