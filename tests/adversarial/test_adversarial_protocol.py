"""The adversarial protocol: rows, worst case, validity flags, leaderboard columns and footnotes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from robustbench_lite.bench import leaderboard
from robustbench_lite.bench.attacks.pgd import margin_loss
from robustbench_lite.bench.cli import main
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.method import METHODS, Method
from robustbench_lite.bench.protocol import Measurement, PROTOCOLS
from robustbench_lite.bench.results import RunInfo, write_run
from robustbench_lite.bench.leaderboard import format_epsilon
from robustbench_lite.protocols.adversarial import (Adversarial,
                                                    validity_flags, worst_case)

EPSILONS = (2 / 255, 4 / 255, 8 / 255)


def robust(measurements: list[Measurement]) -> dict[tuple[str, float], float]:
    return {(m.cell["attack"], m.cell["epsilon"]): m.value for m in measurements
            if m.metric == "robust_accuracy"}


def test_worst_case_needs_clean_and_every_attack():
    clean = torch.tensor([True, True, True, False])
    correct = {("fgsm", 0.1): torch.tensor([True, False, True, True]),
               ("pgd", 0.1): torch.tensor([True, True, False, True]),
               ("pgd_l2", 0.5): torch.tensor([False, False, False, False])}
    out = worst_case(clean, correct, ["fgsm", "pgd"])
    assert list(out) == [("worst_case", 0.1)]
    assert out["worst_case", 0.1].tolist() == [True, False, False, False]


def test_validity_flags_catch_each_violation():
    accuracies = {("fgsm", 0.1): 0.5, ("pgd", 0.1): 0.6, ("autoattack", 0.1): 0.7,
                  ("fgsm", 0.2): 0.55, ("pgd", 0.2): 0.3, ("autoattack", 0.2): 0.2,
                  ("worst_case", 0.1): 0.5, ("worst_case", 0.2): 0.2}
    flags = {(m.metric, m.cell.get("attack"), m.cell.get("epsilon")): m.value
             for m in validity_flags(0.58, accuracies, 0.25, 100)}
    assert flags["flag_zero_gradient", None, None] == 0.25
    assert flags["flag_pgd_weaker_than_fgsm", None, 0.1] == 1.0
    assert flags["flag_pgd_weaker_than_fgsm", None, 0.2] == 0.0
    assert flags["flag_autoattack_weaker_than_pgd", None, 0.1] == 1.0
    assert flags["flag_autoattack_weaker_than_pgd", None, 0.2] == 0.0
    assert flags["flag_rises_with_epsilon", "fgsm", None] == 1.0  # 0.5 -> 0.55
    assert flags["flag_rises_with_epsilon", "pgd", None] == 0.0
    assert flags["flag_robust_above_clean", "autoattack", 0.1] == 1.0
    assert flags["flag_robust_above_clean", "pgd", 0.1] == 1.0
    assert flags["flag_robust_above_clean", "fgsm", 0.1] == 0.0
    assert ("flag_robust_above_clean", "worst_case", 0.1) not in flags


def test_protocol_rows_on_a_trained_tiny_model(run_context):
    ctx = run_context("erm")
    rows = Adversarial(Adversarial.Config(epsilons=EPSILONS, n_examples=24, pgd_steps=5)).run(ctx)
    acc = robust(rows)
    clean = next(m.value for m in rows if m.metric == "accuracy")
    assert {a for a, _ in acc} == {"fgsm", "pgd", "worst_case"}
    assert {e for _, e in acc} == set(EPSILONS)
    assert all(m.n == 24 for m in rows)
    for eps in EPSILONS:
        assert acc["worst_case", eps] <= min(clean, acc["fgsm", eps], acc["pgd", eps])
    flags = [m for m in rows if m.metric.startswith("flag_")]
    assert {m.metric for m in flags} >= {"flag_zero_gradient", "flag_pgd_weaker_than_fgsm",
                                         "flag_rises_with_epsilon", "flag_robust_above_clean"}
    again = Adversarial(Adversarial.Config(epsilons=EPSILONS, n_examples=24, pgd_steps=5)).run(ctx)
    assert rows == again  # seeded random starts: identical measurements


class MarginAttacked(Method):
    """ERM whose model is attacked with the margin loss as its adaptive objective (test only)."""

    def adaptive_attack_loss(self, model, x, y):
        return margin_loss(model, x, y)


def test_adaptive_attack_enters_the_worst_case(run_context, tiny_dataset):
    ctx = run_context("erm")
    ctx.method = MarginAttacked()
    rows = Adversarial(Adversarial.Config(epsilons=(8 / 255,), n_examples=16, pgd_steps=3, fgsm=False)).run(ctx)
    acc = robust(rows)
    assert set(acc) == {("pgd", 8 / 255), ("pgd_adaptive", 8 / 255), ("worst_case", 8 / 255)}
    assert acc["worst_case", 8 / 255] <= min(acc["pgd", 8 / 255], acc["pgd_adaptive", 8 / 255])


def test_pgd_l2_has_its_own_grid_and_stays_out_of_the_linf_worst_case(run_context):
    rows = Adversarial(Adversarial.Config(epsilons=(4 / 255,), n_examples=8, pgd_steps=2, fgsm=False,
                              pgd_l2=True, l2_epsilons=(0.25, 0.5))).run(run_context("erm"))
    assert set(robust(rows)) == {("pgd", 4 / 255), ("worst_case", 4 / 255), ("pgd_l2", 0.25),
                                 ("pgd_l2", 0.5)}


def test_dataset_default_grids(run_context, digits):
    protocol, model = Adversarial(), torch.nn.Identity()
    cifar_like = [a.epsilons for a in protocol.attacks(run_context("erm"), model)]
    assert cifar_like == [EPSILONS, EPSILONS]  # fgsm, pgd
    digits_grid = [a.epsilons for a in protocol.attacks(run_context("erm", digits), model)]
    assert digits_grid[0] != EPSILONS and len(digits_grid[0]) >= 3


def test_torchattacks_by_name_is_projected_into_the_ball(run_context):
    pytest.importorskip("torchattacks")
    ctx = run_context("erm")
    protocol = Adversarial(Adversarial.Config(epsilons=(2 / 255, 8 / 255), n_examples=8, pgd_steps=2,
                                  fgsm=False, torchattacks=("DeepFool", "FGSM")))
    model = ctx.train()
    attacks = {a.name: a for a in protocol.attacks(ctx, model)}
    assert {"torchattacks_DeepFool", "torchattacks_FGSM"} <= set(attacks)
    x = ctx.dataset.test.x[:8].float() / 255
    y = ctx.dataset.test.y[:8]
    for name in ("torchattacks_DeepFool", "torchattacks_FGSM"):
        for eps, adv in attacks[name].craft(x, y, (2 / 255, 8 / 255)):
            assert (adv - x).abs().max().item() <= eps + 1e-6 and 0 <= adv.min() and adv.max() <= 1
    with pytest.raises(UserError, match="no attack 'Nonsense'"):
        Adversarial(Adversarial.Config(torchattacks=("Nonsense",))).attacks(ctx, model)


@pytest.mark.parametrize("module,field", [("torchattacks", {"torchattacks": ("CW",)}),
                                          ("pyautoattack", {"autoattack": True})])
def test_missing_optional_library_is_a_user_error(run_context, monkeypatch, module, field):
    monkeypatch.setitem(__import__("sys").modules, module, None)  # import now raises ImportError
    ctx = run_context("erm")
    protocol = Adversarial(Adversarial.Config(epsilons=(8 / 255,), n_examples=4, pgd_steps=1, **field))
    with pytest.raises(UserError, match="pip install"):
        protocol.run(ctx)


def _write(results: Path, method: str, flags: dict[str, float], seed: int = 0) -> None:
    eight, four = 8 / 255, 4 / 255
    measurements = [Measurement("accuracy", 0.9, 10)]
    for attack, eps, value in (("fgsm", four, 0.6), ("pgd", four, 0.5), ("worst_case", four, 0.5),
                               ("fgsm", eight, 0.4), ("pgd", eight, 0.3),
                               ("worst_case", eight, 0.25)):
        measurements.append(Measurement("robust_accuracy", value, 10,
                                        {"attack": attack, "epsilon": eps}))
    measurements += [Measurement("flag_zero_gradient", flags.get("zero", 0.0), 10),
                     Measurement("flag_pgd_weaker_than_fgsm", flags.get("pgd", 0.0), 10,
                                 {"epsilon": eight}),
                     Measurement("flag_rises_with_epsilon", flags.get("rises", 0.0), 10,
                                 {"attack": "fgsm"})]
    info = RunInfo(method, "adversarial", "digits", "tiny", "default", seed, f"h{method}", "{}")
    write_run(results, info, measurements, {}, Adversarial.cell_keys)


def test_leaderboard_footnotes_and_columns_from_run_files(tmp_path):
    _write(tmp_path, "erm", {})
    _write(tmp_path, "masked", {"zero": 0.125, "pgd": 1.0, "rises": 1.0})
    files = leaderboard.build(tmp_path)
    markdown = files[tmp_path / "leaderboards" / "adversarial-digits-default.md"]
    notes = [line for line in markdown.splitlines() if line.startswith("- ")]
    assert notes == [
        "- ⚠ marks a row whose sanity checks against gradient masking failed:",
        "- masked (tiny, seed 0): 12.5% of the inputs have an all-zero input gradient (gradient "
        "masking or saturated softmax: gradient attacks cannot move them; check with AutoAttack)",
        "- masked (tiny, seed 0): PGD is weaker than FGSM at ε=8/255 (gradient masking?)",
        "- masked (tiny, seed 0): fgsm robust accuracy rises with ε (a weak or masked attack)"]
    header = markdown.splitlines()[2]
    labels = [c.strip() for c in header.split("|")[1:-1]]
    assert labels[3:6] == ["pgd 8/255 ↑", "clean acc ↑", "fgsm 4/255 ↑"]  # the headline first
    assert labels[-2] == "worst_case 8/255 ↑"
    assert "| masked ⚠ " in markdown and "| erm " in markdown  # the flagged row is marked
    # Every column found its rows after the CSV round trip (no empty cells).
    assert "—" not in markdown
    assert "25.00" in markdown  # worst case at 8/255 shown in percent


def test_no_footnote_without_violations(tmp_path):
    _write(tmp_path, "erm", {})
    markdown = leaderboard.build(tmp_path)[tmp_path / "leaderboards" / "adversarial-digits-default.md"]
    assert not [line for line in markdown.splitlines() if line.startswith("- ")]


def test_format_epsilon():
    assert format_epsilon(8 / 255) == "8/255"
    assert format_epsilon(0.5) == "0.5"
    assert format_epsilon(1.0) == "1"


@pytest.mark.slow
def test_cli_end_to_end_smoke(tmp_path, capsys):
    main(["run", "--method", "erm", "--protocol", "adversarial", "--preset", "smoke",
          "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
          "--no-progress", "--set", "protocol.n_examples=200", "--set", "protocol.pgd_steps=10"])
    files = list((tmp_path / "results" / "runs" / "adversarial").glob("*.csv"))
    assert len(files) == 1
    rows = pd.read_csv(files[0], dtype={"epsilon": str, "attack": str}, keep_default_na=False)
    clean = rows[rows.metric == "accuracy"].value.item()
    acc = rows[rows.metric == "robust_accuracy"].set_index(["attack", "epsilon"]).value
    epsilons = sorted(acc["pgd"].index, key=float)
    assert len(epsilons) >= 3 and sorted(acc["fgsm"].index, key=float) == epsilons
    for eps in epsilons:
        assert acc["pgd", eps] <= acc["fgsm", eps] <= clean
    assert acc["pgd", epsilons[-1]] < clean  # the attack bites at the largest radius
    provenance = json.loads(files[0].with_suffix(".json").read_text())
    assert provenance["protocol_config"]["n_examples"] == 200
    assert (tmp_path / "results" / "leaderboards" / "adversarial-digits-smoke.md").exists()
    assert PROTOCOLS.get("adversarial") is Adversarial
    assert METHODS.get("pgd_at").__name__ == "PgdAt"


def test_autoattack_runs_by_default_exactly_for_methods_that_risk_masking_gradients():
    """CIFS declares a masking risk: its run records AutoAttack on; ERM's is off and keeps the run
    id it had before the setting could be left unset (false then, as now)."""
    from robustbench_lite.bench.config import config_dict, stable_hash
    from robustbench_lite.bench.recipes import identity as recipe_identity
    from robustbench_lite.bench.runner import RunRequest, resolve
    from robustbench_lite.bench.settings import Settings

    erm, cifs = (resolve(RunRequest(m, "adversarial")) for m in ("erm", "cifs"))
    assert erm.protocol.config.autoattack is False and cifs.protocol.config.autoattack is True
    asked_off = resolve(RunRequest("cifs", "adversarial",
                                   settings=Settings(protocol={"autoattack": "false"})))
    assert asked_off.protocol.config.autoattack is False
    assert asked_off.info.run_id != cifs.info.run_id
    before = {k: v for k, v in config_dict(erm.protocol.config).items()
              if k != "autoattack_epsilons"}
    assert erm.info.config_hash == stable_hash({"method": {}, "protocol": before,
                                                "recipe": recipe_identity(erm.recipe)}, length=8)


def test_autoattack_radii_are_the_headline_or_named_points_of_the_grid():
    from robustbench_lite.protocols.adversarial import autoattack_radii

    digits = (4 / 255, 8 / 255, 16 / 255)
    assert autoattack_radii((), digits, 8 / 255) == (8 / 255,)
    assert autoattack_radii((), EPSILONS, 4 / 255) == (4 / 255,)
    assert autoattack_radii((), (1 / 255, 2 / 255), 8 / 255) == (2 / 255,)
    assert autoattack_radii((16 / 255, 4 / 255), digits, 8 / 255) == (16 / 255, 4 / 255)
    with pytest.raises(UserError, match="not on the L∞ grid"):
        autoattack_radii((2 / 255,), digits, 8 / 255)


class MaskingRisk(Method):
    """ERM that declares a gradient-masking risk."""

    masking_risk = "test"


def test_a_masking_risk_method_is_attacked_by_autoattack_at_the_headline_inside_the_worst_case(
        run_context, monkeypatch):
    import robustbench_lite.protocols.adversarial as adversarial

    calls = []

    def fake_autoattack(model, x, y, eps, seed, num_classes, norm, version, attacks, batch_size):
        calls.append((eps, seed, version))
        return torch.zeros_like(x)  # a black image: wrong for most labels

    monkeypatch.setattr(adversarial, "autoattack", fake_autoattack)
    ctx = run_context("erm")
    ctx.method = MaskingRisk()
    config = Adversarial.Config(epsilons=(4 / 255, 8 / 255), n_examples=16, pgd_steps=1,
                                fgsm=False)
    acc = robust(Adversarial(config).run(ctx))
    assert [eps for eps, *_ in calls] == [8 / 255] and calls[0][2] == "standard"
    assert ("autoattack", 8 / 255) in acc and ("autoattack", 4 / 255) not in acc
    assert acc["worst_case", 8 / 255] <= acc["autoattack", 8 / 255] < acc["pgd", 8 / 255]
    ctx.method = Method()
    calls.clear()
    acc = robust(Adversarial(config).run(ctx))
    assert calls == [] and ("autoattack", 8 / 255) not in acc
