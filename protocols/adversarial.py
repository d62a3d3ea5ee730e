"""Adversarial robustness: clean and robust accuracy under white-box attacks over an ε grid.

On the first `n_examples` test images, for every L∞ radius ε of the grid:
- `fgsm`: one signed gradient step of size ε (Goodfellow et al., ICLR 2015);
- `pgd`: PGD-20 with a random start (Madry et al., ICLR 2018), step min(2/255, ε/4): 2/255 at the
  CIFAR radius 8/255, and a quarter of the radius below it, so that 20 steps still cover 5ε;
- `pgd_adaptive`: the same PGD on the method's own attack objective, when it defines one
  (`Method.adaptive_attack_loss`, e.g. CIFS's joint loss over its probes);
- the method's further adaptive objectives (`Method.adaptive_attacks`), e.g. `pgd_through_mask`,
  CIFS's joint loss with the gradient taken through its channel masks;
- `autoattack` (slow): AutoAttack from `pyautoattack` (Croce & Hein, ICML 2020), seeded from the
  run's seed, at the headline ε (`autoattack_epsilons` names more radii of the grid); on by default
  for methods that declare a gradient-masking risk (`Method.masking_risk`: CIFS), whose robustness
  PGD alone may overstate, and on request (`--set protocol.autoattack=true`) for the others;
- `torchattacks_<Name>` (optional): any torchattacks attack, projected onto the ε-ball;
- `worst_case`: a sample counts as robust only if it is classified correctly clean (δ = 0 lies in
  the ball) and under every attack above at that ε.
Optionally `pgd_l2` over its own L2 grid (step ε/4); it is a different threat model, so it does not
enter the L∞ worst case. An attack's robust accuracy is the accuracy on its adversarial examples.

Default grids: (2, 4, 8)/255 for CIFAR-sized data; (4, 8, 16)/255 for the embedded digits, whose
8x8 digits upsampled to 32x32 are near-binary strokes with wide margins. There a plain (ERM) model
loses about 2 points at 2/255 and FGSM and PGD score alike, whereas (4, 8, 16)/255 takes it from
mostly robust (~87 %) through split (PGD ~26 %, well below FGSM) to broken, and leaves room above
8/255 to see what adversarial training buys. The L2 grids are (0.25, 0.5) for CIFAR and
(0.5, 1, 2) for digits (ERM on the first 150 digits: 89 %, 49 %, 0 %).

The leaderboard ranks by the dataset's headline number, PGD at the standard radius (8/255; 4/255
for ImageNet, as RobustBench), with clean accuracy beside it; a row whose validity checks failed is
marked ⚠ and the failures are listed under the table.

Validity checks, stored as measurements (`flag_*`, 1.0 = violated) and shown as leaderboard
footnotes, because an architecture can mask gradients and make weak attacks look strong: robust
accuracy must not rise with ε, PGD must not be weaker than FGSM, nor AutoAttack weaker than PGD, no
attack may beat clean accuracy; `flag_zero_gradient` is the share of inputs whose cross-entropy
input gradient is exactly zero (gradient attacks cannot move them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Literal

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from robustbench_lite.bench.config import setting
from robustbench_lite.bench.attacks.pgd import ce_loss, fgsm, input_gradient, pgd
from robustbench_lite.bench.attacks.autoattack_adapter import autoattack
from robustbench_lite.bench.attacks.torchattacks_adapter import TorchattacksAttack, project_linf
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.evaluate import bounded_batch, eval_mode, inference_mode, to_input
from robustbench_lite.bench.leaderboard import format_epsilon
from robustbench_lite.bench.protocol import PROTOCOLS, Column, Measurement, Protocol, RunContext
from robustbench_lite.bench.seeding import derive_seed, generator

LINF_EPSILONS = {"digits": (4 / 255, 8 / 255, 16 / 255)}
L2_EPSILONS = {"digits": (0.5, 1.0, 2.0)}
CIFAR_LINF_EPSILONS = (2 / 255, 4 / 255, 8 / 255)
CIFAR_L2_EPSILONS = (0.25, 0.5)
WORST_CASE = "worst_case"
HEADLINE_EPSILON = {"imagenet": 4 / 255}  # RobustBench's ImageNet L∞ radius; 8/255 elsewhere
_ABSENT = {"pgd_adaptive": "only for methods with an attack objective of their own (CIFS)",
           "pgd_through_mask": "only for CIFS (the gradient through its channel masks)",
           "autoattack": "AutoAttack was not run at this ε (--set protocol.autoattack=true; "
                         "protocol.autoattack_epsilons for radii beyond the headline)"}
ATTACK_ORDER = ("fgsm", "pgd", "pgd_adaptive", "pgd_through_mask", "autoattack")  # then torchattacks, worst case


@dataclass(frozen=True)
class Attack:
    """One attack over its radii: `craft(x, y, epsilons)` yields (ε, adversarial x) pairs."""

    name: str
    epsilons: tuple[float, ...]
    craft: Callable[[Tensor, Tensor, tuple[float, ...]], Iterator[tuple[float, Tensor]]]
    in_worst_case: bool = True


@PROTOCOLS.register("adversarial")
class Adversarial(Protocol):
    """Clean and robust accuracy under FGSM, PGD (and AutoAttack) over an ε grid, with validity flags."""

    @dataclass(frozen=True)
    class Config:
        # L∞ radii on [0, 1] images; () = the dataset's default grid
        epsilons: tuple[float, ...] = setting((), low=0, high=1, low_open=True)
        # the first N test images (all of them when the split is smaller)
        n_examples: int = setting(1000, low=1)
        fgsm: bool = True  # FGSM: one signed step of size ε
        pgd_steps: int = setting(20, low=1)  # PGD iterations
        # L∞ step, capped at ε/4 for smaller radii
        pgd_step_size: float = setting(2 / 255, low=0, low_open=True)
        pgd_random_start: bool = True  # uniform start in the ball (Madry); False: start at the input
        pgd_restarts: int = setting(1, low=1)  # PGD runs per example; the strongest is kept
        pgd_l2: bool = False  # also PGD-L2 (same steps, step ε/4) over `l2_epsilons`
        # L2 radii; () = the dataset's default grid
        l2_epsilons: tuple[float, ...] = setting((), low=0, low_open=True)
        # AutoAttack via pyautoattack (slow), seeded from the run's seed; unset: on for a method
        # that declares a gradient-masking risk (`Method.masking_risk`, e.g. CIFS), off otherwise
        autoattack: bool | None = None
        # radii of the grid AutoAttack runs at; () = the headline ε only (as RobustBench reports
        # it: one AutoAttack costs some hundreds of PGD-20 runs)
        autoattack_epsilons: tuple[float, ...] = setting((), low=0, high=1, low_open=True,
                                                         later=True)
        autoattack_version: Literal["standard", "plus", "rand", "custom"] = "standard"
        autoattack_attacks: tuple[str, ...] = ()  # with version custom, e.g. apgd-ce,apgd-t
        torchattacks: tuple[str, ...] = ()  # torchattacks class names, e.g. CW,DeepFool

    cell_keys = ("attack", "epsilon")

    def for_method(self, method) -> Adversarial:
        """AutoAttack decided: as set, else on exactly when the method risks masking gradients."""
        if self.config.autoattack is not None:
            return self
        return Adversarial(replace(self.config, autoattack=autoattack_default(method)))

    def run(self, ctx: RunContext) -> list[Measurement]:
        model = ctx.model().eval()
        test = ctx.test_split()
        n = min(self.config.n_examples, len(test))
        attacks = self.attacks(ctx, model)
        clean, zero_grad, correct = [], [], defaultdict(list)
        # an attack keeps the activations for its backward pass and their gradients
        batch_size = bounded_batch(model, test.x, ctx.recipe.eval_batch_size, ctx.device, factor=2)
        bar = tqdm(total=-(-n // batch_size) * len(attacks), desc="adversarial",
                   disable=not ctx.progress, leave=False)
        for start in range(0, n, batch_size):
            x = to_input(test.x[start:min(n, start + batch_size)], ctx.device)
            y = test.y[start:min(n, start + batch_size)].to(ctx.device)
            clean.append(is_correct(model, x, y))
            zero_grad.append(zero_gradient(model, x, y))
            for attack in attacks:
                for eps, x_adv in attack.craft(x, y, attack.epsilons):
                    correct[attack.name, eps].append(is_correct(model, x_adv, y))
                bar.update(1)
        bar.close()
        clean_ok = torch.cat(clean)
        correct = {key: torch.cat(parts) for key, parts in correct.items()}
        correct.update(worst_case(clean_ok, correct, [a.name for a in attacks if a.in_worst_case]))
        accuracies = {key: ok.float().mean().item() for key, ok in correct.items()}
        clean_acc = clean_ok.float().mean().item()
        return [Measurement("accuracy", clean_acc, n),
                *[Measurement("robust_accuracy", acc, n, {"attack": a, "epsilon": e})
                  for (a, e), acc in accuracies.items()],
                *validity_flags(clean_acc, accuracies, torch.cat(zero_grad).float().mean().item(), n)]

    def attacks(self, ctx: RunContext, model: nn.Module) -> list[Attack]:
        """The attacks this configuration runs, each with its radii and its own random stream."""
        cfg, dataset = self.config, ctx.dataset.name
        linf = cfg.epsilons or LINF_EPSILONS.get(dataset, CIFAR_LINF_EPSILONS)
        l2 = cfg.l2_epsilons or L2_EPSILONS.get(dataset, CIFAR_L2_EPSILONS)
        rngs: dict[str, torch.Generator] = {}

        def rng(key: str) -> torch.Generator:
            return rngs.setdefault(key, generator(ctx.seed, f"adversarial/{key}"))

        def pgd_attack(label: str, norm: str, loss_fn=ce_loss) -> Attack:
            def craft(x, y, epsilons):
                for eps in epsilons:
                    step = min(cfg.pgd_step_size, eps / 4) if norm == "linf" else eps / 4
                    yield eps, pgd(model, x, y, eps, cfg.pgd_steps, step, norm, cfg.pgd_random_start,
                                   cfg.pgd_restarts, loss_fn, rng(f"{label}/{eps!r}"))
            return Attack(label, linf if norm == "linf" else l2, craft, norm == "linf")

        attacks = []
        if cfg.fgsm:
            attacks.append(Attack("fgsm", linf, lambda x, y, epsilons: (
                (eps, fgsm(model, x, y, eps)) for eps in epsilons)))
        attacks.append(pgd_attack("pgd", "linf"))
        if has_adaptive_loss(ctx, model):
            attacks.append(pgd_attack("pgd_adaptive", "linf", ctx.method.adaptive_attack_loss))
        attacks += [pgd_attack(name, "linf", loss) for name, loss in
                    ctx.method.adaptive_attacks().items()]
        if cfg.autoattack if cfg.autoattack is not None else autoattack_default(ctx.method):
            seed = derive_seed(ctx.seed, "autoattack") % 2**31
            radii = autoattack_radii(cfg.autoattack_epsilons, linf, headline_epsilon(dataset))
            attacks.append(Attack("autoattack", radii, lambda x, y, epsilons: (
                (eps, autoattack(model, x, y, eps, seed, ctx.dataset.num_classes, "Linf",
                                 cfg.autoattack_version, cfg.autoattack_attacks, len(x)))
                for eps in epsilons)))
        seed = derive_seed(ctx.seed, "torchattacks") % 2**31
        attacks += [torchattacks_attack(TorchattacksAttack(name, ctx.dataset.num_classes, seed),
                                        model, linf) for name in cfg.torchattacks]
        if cfg.pgd_l2:
            attacks.append(pgd_attack("pgd_l2", "l2"))
        return attacks

    def leaderboard_columns(self, rows: pd.DataFrame) -> list[Column]:
        """The headline PGD at the standard ε (the ranking key), clean accuracy, then every
        (attack, ε) present, by ε and attack."""
        robust = rows[rows["metric"] == "robust_accuracy"][["attack", "epsilon"]].drop_duplicates()
        cells = sorted(zip(robust["attack"], robust["epsilon"]),
                       key=lambda c: (c[0] == "pgd_l2", float(c[1]), _attack_rank(c[0]), c[0]))
        columns = [Column(f"{a} {format_epsilon(float(e))}", "robust_accuracy",
                          {"attack": a, "epsilon": e}, absent=_ABSENT.get(a, "not measured"))
                   for a, e in cells]
        first = _headline(columns, headline_epsilon(rows["dataset"].iloc[0] if len(rows) else ""))
        rest = [c for c in columns if c is not first]
        return [*([first] if first else []), Column("clean acc", "accuracy"), *rest]

    def notes(self, rows: pd.DataFrame) -> list[str]:
        """One footnote per violated validity check of a run."""
        flags = rows[rows["metric"].str.startswith("flag_") & (rows["value"] > 0)]
        notes = [flag_note(record) for record in flags.to_dict("records")]
        return ["⚠ marks a row whose sanity checks against gradient masking failed:"] + \
            sorted(set(notes)) if notes else []

    def marks(self, rows: pd.DataFrame) -> dict[tuple[str, str], str]:
        flags = rows[rows["metric"].str.startswith("flag_") & (rows["value"] > 0)]
        return {key: " ⚠" for key in zip(flags["method"], flags["backbone"])}

    def comparison_figure(self, rows: pd.DataFrame, title: str):
        """PGD robust accuracy against ε (0 = clean) for every (method, backbone)."""
        return epsilon_figure(rows, title)


def autoattack_default(method) -> bool:
    """Whether AutoAttack runs when not asked for either way: for methods that risk masking
    gradients."""
    return bool(method.masking_risk)


def autoattack_radii(asked: tuple[float, ...], grid: tuple[float, ...], headline: float
                     ) -> tuple[float, ...]:
    """The radii AutoAttack runs at: those asked (each on the grid, so the worst case and the
    PGD comparison hold at it), else the headline radius, else the grid's largest below it."""
    on_grid = {round(e * 255, 6): e for e in grid}
    if asked:
        off = [e for e in asked if round(e * 255, 6) not in on_grid]
        if off:
            raise UserError(f"--set protocol.autoattack_epsilons: {format_epsilon(off[0])} is not "
                            f"on the L∞ grid ({', '.join(map(format_epsilon, grid))}); add it to "
                            f"protocol.epsilons")
        return tuple(on_grid[round(e * 255, 6)] for e in asked)
    below = [e for e in grid if e <= headline + 1e-9]
    return (on_grid.get(round(headline * 255, 6)) or max(below, default=max(grid)),)


def torchattacks_attack(attack: TorchattacksAttack, model: nn.Module, epsilons: tuple[float, ...]
                        ) -> Attack:
    """An Attack for a torchattacks class; an unbounded one runs once per batch for all radii."""

    def craft(x, y, radii):
        if attack.takes_eps:
            for eps in radii:
                yield eps, project_linf(x, attack.run(model, x, y, eps), eps)
        else:
            raw = attack.run(model, x, y, None)
            for eps in radii:
                yield eps, project_linf(x, raw, eps)

    return Attack(f"torchattacks_{attack.name}", epsilons, craft)


def has_adaptive_loss(ctx: RunContext, model: nn.Module) -> bool:
    """Whether the method defines an attack objective of its own (probed on one example)."""
    x = to_input(ctx.dataset.test.x[:1], ctx.device)
    with eval_mode(model), torch.enable_grad():
        return ctx.method.adaptive_attack_loss(model, x, ctx.dataset.test.y[:1].to(ctx.device)) \
            is not None


def is_correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per-sample correctness of the model's top-1 prediction (CPU bool)."""
    with eval_mode(model), inference_mode(model):
        return (model(x).argmax(1) == y).cpu()


def zero_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per-sample: is the cross-entropy gradient with respect to the input exactly zero? (CPU bool)"""
    with eval_mode(model):
        grad = input_gradient(model, x, y, ce_loss)
    return (grad.flatten(1) == 0).all(1).cpu()


def worst_case(clean: Tensor, correct: dict[tuple[str, float], Tensor], names: list[str]
               ) -> dict[tuple[str, float], Tensor]:
    """Per ε: correct clean and under every attack of `names` run at that ε."""
    out = {}
    for eps in sorted({e for a, e in correct if a in names}):
        ok = clean.clone()
        for name in names:
            if (name, eps) in correct:
                ok &= correct[name, eps]
        out[WORST_CASE, eps] = ok
    return out


def validity_flags(clean: float, accuracies: dict[tuple[str, float], float], zero_grad: float,
                   n: int) -> list[Measurement]:
    """The sanity checks of the protocol as measurements (1.0 = violated; zero_gradient: a share)."""
    flags = [Measurement("flag_zero_gradient", zero_grad, n)]
    for (attack, eps), acc in accuracies.items():
        if attack != WORST_CASE:
            flags.append(Measurement("flag_robust_above_clean", float(acc > clean), n,
                                     {"attack": attack, "epsilon": eps}))
    for attack in sorted({a for a, _ in accuracies}):
        curve = [acc for (a, _), acc in sorted(accuracies.items(), key=lambda kv: kv[0][1])
                 if a == attack]
        rises = any(later > earlier for earlier, later in zip(curve, curve[1:]))
        flags.append(Measurement("flag_rises_with_epsilon", float(rises), n, {"attack": attack}))
    for weak, strong, metric in (("fgsm", "pgd", "flag_pgd_weaker_than_fgsm"),
                                 ("pgd", "autoattack", "flag_autoattack_weaker_than_pgd")):
        for eps in sorted(e for a, e in accuracies if a == strong):
            if (weak, eps) in accuracies:
                violated = accuracies[strong, eps] > accuracies[weak, eps]
                flags.append(Measurement(metric, float(violated), n, {"epsilon": eps}))
    return flags


def flag_note(record: dict) -> str:
    """The footnote for one violated flag row of a run file."""
    who = f"{record['method']} ({record['backbone']}, seed {record['seed']})"
    attack, eps = record.get("attack", ""), record.get("epsilon", "")
    at = f"ε={format_epsilon(float(eps))}" if str(eps) != "" else ""
    messages = {
        "flag_zero_gradient": f"{record['value']:.1%} of the inputs have an all-zero input gradient "
                              f"(gradient masking or saturated softmax: gradient attacks cannot move "
                              f"them; check with AutoAttack)",
        "flag_robust_above_clean": f"{attack} at {at} scores above clean accuracy",
        "flag_rises_with_epsilon": f"{attack} robust accuracy rises with ε (a weak or masked attack)",
        "flag_pgd_weaker_than_fgsm": f"PGD is weaker than FGSM at {at} (gradient masking?)",
        "flag_autoattack_weaker_than_pgd": f"AutoAttack is weaker than PGD at {at}",
    }
    return f"{who}: {messages.get(record['metric'], record['metric'] + ' violated')}"


def headline_epsilon(dataset: str) -> float:
    """The standard L∞ radius of a dataset's headline number."""
    return HEADLINE_EPSILON.get(dataset, 8 / 255)


def _headline(columns: list[Column], eps: float) -> Column | None:
    """PGD at `eps`, else PGD at the largest ε present, else the worst case at the largest."""
    for attack in ("pgd", WORST_CASE):
        found = [c for c in columns if c.where["attack"] == attack]
        exact = [c for c in found if abs(float(c.where["epsilon"]) - eps) < 1e-9]
        if exact or found:
            return (exact or found)[-1]
    return None


def epsilon_figure(rows: pd.DataFrame, title: str):
    from robustbench_lite.bench.figures import new_figure, percent_axis

    pgd = rows[(rows["metric"] == "robust_accuracy") & (rows["attack"] == "pgd")]
    if pgd.empty:
        return None
    fig, (ax,) = new_figure(1, (7.0, 4.2))
    labels = sorted(set(zip(rows["method"], rows["backbone"])))
    for method, backbone in labels:
        own = rows[(rows["method"] == method) & (rows["backbone"] == backbone)]
        clean = own[own["metric"] == "accuracy"]["value"].mean()
        curve = own[(own["metric"] == "robust_accuracy") & (own["attack"] == "pgd")]
        by_eps = curve.groupby(curve["epsilon"].astype(float))["value"].mean()
        xs = [0.0, *(e * 255 for e in by_eps.index)]
        ax.plot(xs, [100 * clean, *(100 * by_eps.values)], marker="o",
                label=method if len({b for _, b in labels}) == 1 else f"{method} · {backbone}")
    ax.set_xlabel("L∞ radius ε (×1/255; 0 = clean)")
    percent_axis(ax, "PGD robust accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return fig


def _attack_rank(name: str) -> int:
    if name in ATTACK_ORDER:
        return ATTACK_ORDER.index(name)
    return len(ATTACK_ORDER) + (1 if name == WORST_CASE else 0)
