"""The corruption protocol end to end: canonical files, generated sets, references, leaderboard."""

from __future__ import annotations

import io
import json
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pytest
import torch

from robustbench_lite.bench import leaderboard
from robustbench_lite.bench.cli import main
from robustbench_lite.bench.config import config_dict
from robustbench_lite.bench.corruptions.tables import ALL, BENCHMARK, EXTRA
from robustbench_lite.bench.datasets import ImageDataset, Split
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.evaluate import accuracy
from robustbench_lite.bench.figures import write_png
from robustbench_lite.bench.method import METHODS
from robustbench_lite.bench.protocol import RunContext
from robustbench_lite.bench.recipes import Recipe
from robustbench_lite.bench.results import RunInfo, load_provenance, load_runs, write_run
from robustbench_lite.protocols import corruption_metrics as metrics
from robustbench_lite.protocols.corruption import Corruption
from robustbench_lite.protocols.corruption_figures import comparison_figure

from corruption_helpers import colour_images, write_cifar_c

RECIPE = Recipe(backbone="tiny", epochs=1, batch_size=16, lr=0.05, crop_padding=2, flip=False)


def _dataset(name: str, size: int = 32, n_test: int = 20) -> ImageDataset:
    """Colour images whose class is the dominant channel: learnable in one epoch."""
    def split(n: int, seed: int) -> Split:
        x = torch.from_numpy(colour_images(n, size, seed)).permute(0, 3, 1, 2).contiguous()
        y = torch.arange(n) % 3
        x[torch.arange(n), y] = (x[torch.arange(n), y].int() // 2 + 128).to(torch.uint8)
        return Split(x, y)

    return ImageDataset(name, split(48, 1), split(n_test, 2), 3, (0.5,) * 3, (0.25,) * 3)


def _context(tmp_path, dataset, method="erm", seed=0) -> RunContext:
    return RunContext(METHODS.get("erm")(), method, dataset, RECIPE, seed, torch.device("cpu"),
                      tmp_path / "cache", tmp_path / "data", tmp_path / "results", progress=False)


def _values(measurements, metric, **cell):
    return {tuple(m.cell.get(k) for k in ("corruption", "severity")): m.value
            for m in measurements if m.metric == metric
            and all(m.cell.get(k) == v for k, v in cell.items())}


def _one(measurements, metric, **cell):
    found = [m.value for m in measurements if m.metric == metric and
             all(m.cell.get(k) == v for k, v in cell.items()) and
             (cell or "corruption" not in m.cell)]
    assert len(found) == 1, (metric, cell, found)
    return found[0]


def test_canonical_cifar10_c_files_are_evaluated_cell_by_cell(tmp_path):
    dataset = _dataset("cifar10")
    clean = dataset.test.x.permute(0, 2, 3, 1).numpy()
    blocks = write_cifar_c(tmp_path / "data" / "CIFAR-10-C", clean, dataset.test.y.numpy())
    ctx = _context(tmp_path, dataset)
    protocol = Corruption(Corruption.Config(reference="alexnet_cifar10_pushpull"))
    out = protocol.run(ctx)
    model = ctx.train()  # the cached model the protocol evaluated
    assert _one(out, "canonical_files") == 1.0
    cells = _values(out, "accuracy")
    assert len(cells) == 1 + 19 * 5
    for (name, severity), block in blocks.items():
        images = torch.from_numpy(block).permute(0, 3, 1, 2)
        assert cells[(name, severity)] == accuracy(model, images, dataset.test.y), (name, severity)
    assert all(m.n == 20 for m in out if m.metric == "accuracy")
    clean_acc = _one(out, "accuracy")
    assert clean_acc == accuracy(model, dataset.test.x, dataset.test.y)

    errors = {c: 1 - np.mean([cells[(c, s)] for s in range(1, 6)]) for c in ALL}
    assert _values(out, "error") == pytest.approx({(c, None): e for c, e in errors.items()})
    assert _one(out, "mean_corruption_error") == pytest.approx(np.mean([errors[c] for c in BENCHMARK]))
    assert _one(out, "mean_corruption_error_extra") == pytest.approx(np.mean([errors[c] for c in EXTRA]))
    assert _one(out, "corruption_accuracy") == pytest.approx(
        np.mean([cells[(c, s)] for c in BENCHMARK for s in range(1, 6)]))
    assert not [m for m in out if "mce" in m.metric]  # derived by the leaderboard
    _write(tmp_path, ctx, protocol, out)
    derived, notes = _derived(tmp_path, protocol)
    ref = metrics.published_reference("alexnet_cifar10_pushpull")
    assert derived[("erm", "mce", "alexnet_cifar10_pushpull")] == pytest.approx(metrics.mce(errors, ref))
    assert derived[("erm", "relative_mce", "alexnet_cifar10_pushpull")] == pytest.approx(
        metrics.relative_mce(errors, 1 - clean_acc, ref))
    assert derived[("erm", "mce_19", "alexnet_cifar10_pushpull")] == pytest.approx(
        metrics.mce(errors, ref, ALL))
    assert notes == []
    (figure,) = protocol.figures(out, "erm").values()
    path = write_png(figure, tmp_path / "severity.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_malformed_canonical_files_stop_the_run_before_evaluation(tmp_path):
    dataset = _dataset("cifar10")
    folder = tmp_path / "data" / "CIFAR-10-C"
    write_cifar_c(folder, dataset.test.x.permute(0, 2, 3, 1).numpy(), dataset.test.y.numpy())
    np.save(folder / "frost.npy", np.load(folder / "frost.npy")[:97])
    with pytest.raises(UserError, match="frost.npy has 97 rows, not divisible by 5"):
        Corruption().run(_context(tmp_path, dataset))


def _write(tmp_path, ctx, protocol, measurements, timestamp=None):
    info = RunInfo(ctx.method_name, "corruption", ctx.dataset.name, ctx.recipe.backbone, "smoke",
                   ctx.seed, "0123abcd", "{}")
    provenance = {"recipe": asdict(ctx.recipe), "protocol_config": config_dict(protocol.config),
                  "seed": ctx.seed, **ctx.provenance}
    return write_run(ctx.results_dir, info, measurements, provenance, Corruption.cell_keys,
                     timestamp)


def _derived(tmp_path, protocol):
    """{(method, metric, reference): value} of the leaderboard-time rows, and the footnotes."""
    results = tmp_path / "results"
    rows, notes = protocol.derived(load_runs(results), load_provenance(results))
    return {(r.method, r.metric, r.reference): r.value for r in rows.itertuples()}, notes


def test_generated_sets_and_a_baseline_run_as_reference_in_any_order(tmp_path):
    dataset = _dataset("toy", size=16, n_test=16)
    protocol = Corruption(Corruption.Config(corruptions="gaussian_noise,fog,contrast,saturate"))
    other_ctx = _context(tmp_path, dataset, method="other")
    other = protocol.run(other_ctx)
    _write(tmp_path, other_ctx, protocol, other, "2026-01-01T00:00:00+00:00")
    derived, notes = _derived(tmp_path, protocol)
    assert derived == {}  # the baseline has not run yet
    assert notes == ["mCE vs erm not computed for other: no erm corruption run with the same "
                     "dataset, recipe, seed and protocol settings in the results folder (run it, "
                     "in any order)"]

    # the baseline runs afterwards, and its file has every error doubled: the leaderboard now
    # fills the other method's mCE from those numbers
    baseline_ctx = _context(tmp_path, dataset)
    baseline = protocol.run(baseline_ctx)
    assert _one(baseline, "canonical_files") == 0.0
    assert list((tmp_path / "cache" / "corruptions").glob("toy-*/fog.npy"))
    doubled = [replace(m, value=2 * m.value) if m.metric == "error" else m for m in baseline]
    _write(tmp_path, baseline_ctx, protocol, doubled, "2026-01-02T00:00:00+00:00")
    derived, notes = _derived(tmp_path, protocol)
    assert derived[("erm", "mce", "erm")] == 1.0  # its own reference
    assert derived[("other", "mce", "erm")] == pytest.approx(0.5)
    assert notes == []

    lonely_ctx = _context(tmp_path, dataset, method="other", seed=1)
    _write(tmp_path, lonely_ctx, protocol, protocol.run(lonely_ctx))
    restricted = Corruption(replace(protocol.config, severities=(1, 2)))
    picky_ctx = _context(tmp_path, dataset, method="picky")
    _write(tmp_path, picky_ctx, restricted, restricted.run(picky_ctx))
    derived, notes = _derived(tmp_path, protocol)
    assert ("other", "mce", "erm") in derived and ("picky", "mce", "erm") not in derived
    assert len(derived) == 4  # erm and the seed-0 other: mCE and relative mCE
    assert notes == ["mCE vs erm not computed for other, picky: no erm corruption run with the "
                     "same dataset, recipe, seed and protocol settings in the results folder "
                     "(run it, in any order)"]


def test_undefined_relative_mce_is_nan_with_a_footnote(tmp_path):
    dataset = _dataset("toy", size=16, n_test=16)
    protocol = Corruption(Corruption.Config(corruptions="fog,contrast"))
    for method in ("erm", "other"):
        ctx = _context(tmp_path, dataset, method=method)
        out = protocol.run(ctx)
        if method == "erm":  # the reference's fog error equals its clean error
            clean_error = 1 - _one(out, "accuracy")
            out = [replace(m, value=clean_error) if m.metric == "error" and
                   m.cell["corruption"] == "fog" else m for m in out]
        _write(tmp_path, ctx, protocol, out)
    derived, notes = _derived(tmp_path, protocol)
    assert np.isnan(derived[("other", "relative_mce", "erm")])
    assert not np.isnan(derived[("other", "mce", "erm")])
    assert len(notes) == 1 and notes[0].startswith("relative mCE vs erm undefined (—) for other: ")
    assert "fog" in notes[0]


def test_leaderboard_columns_notes_and_comparison_figure(tmp_path):
    dataset = _dataset("toy", size=16, n_test=16)
    protocol = Corruption(Corruption.Config(corruptions="fog,contrast,speckle_noise"))
    for method, seed in (("erm", 0), ("other", 0), ("other", 1)):
        ctx = _context(tmp_path, dataset, method=method, seed=seed)
        _write(tmp_path, ctx, protocol, protocol.run(ctx))
    rows = load_runs(tmp_path / "results")
    derived, derived_notes = protocol.derived(rows, load_provenance(tmp_path / "results"))
    labels = [c.label for c in protocol.leaderboard_columns(pd.concat([rows, derived]))]
    assert labels[:5] == ["mean corr. error", "clean acc", "corr. acc", "mCE vs erm",
                          "rel. mCE vs erm"]
    assert labels[-3:] == ["fog err", "contrast err", "speckle_noise err"]  # canonical order
    assert any("not computed for other" in n for n in derived_notes)  # seed 1 has no baseline
    assert any("generated on the fly" in n for n in protocol.notes(rows))
    files = leaderboard.build(tmp_path / "results")
    text = next(v for k, v in files.items() if k.name == "corruption-toy-smoke.md")
    assert "mCE vs erm" in text and "mCE vs erm not computed for other" in text
    csv = next(v for k, v in files.items() if k.name == "corruption-toy-smoke.csv")
    table = pd.read_csv(io.StringIO(csv))
    assert set(table["method"]) == {"erm", "other"}
    assert table.set_index("method").loc["other", "seeds"] == 2
    path = write_png(comparison_figure(rows), tmp_path / "cmp.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    first = path.read_bytes()
    write_png(comparison_figure(rows), path)
    assert path.read_bytes() == first  # regenerated byte for byte


def test_cli_run_on_the_embedded_dataset(tmp_path):
    code = main(["run", "--method", "erm", "--protocol", "corruption", "--preset", "smoke",
                 "--set", "protocol.n_examples=24", "--set", "protocol.corruptions=fog,jpeg_compression",
                 "--set", "recipe.epochs=1",
                 "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress"])
    assert code == 0
    sidecar = next((tmp_path / "results" / "runs" / "corruption").glob("*.json"))
    assert (tmp_path / "results" / "figures" / f"{sidecar.stem}-severity.png").is_file()
    assert json.loads(sidecar.read_text())["protocol_config"]["n_examples"] == 24
    rows = load_runs(tmp_path / "results")
    cells = rows[(rows.metric == "accuracy") & (rows.corruption != "")]
    assert len(cells) == 10 and set(cells["n"]) == {24}


def test_bad_settings_are_user_errors(tmp_path):
    ctx = _context(tmp_path, _dataset("toy", size=16, n_test=8))
    with pytest.raises(UserError, match="severities"):
        Corruption(Corruption.Config(severities=(0, 6))).run(ctx)
    with pytest.raises(UserError, match="unknown corruption backend"):
        Corruption(Corruption.Config(backend="gpu")).run(ctx)
    with pytest.raises(UserError, match="unknown reference 'alexnet'"):
        Corruption(Corruption.Config(corruptions="fog", reference="alexnet")).run(ctx)


def test_a_methods_own_preset_recipe_still_meets_its_baseline_but_a_changed_recipe_does_not():
    """mCE pairs a run with the baseline of the same preset: CIFS's own default recipe (45 epochs)
    is not a difference, a `--set recipe.*` change is, and so is a recipe read without the later
    `init` field versus one written with it at its default (not a difference)."""
    import dataclasses

    import pandas as pd

    from robustbench_lite.bench.recipes import recipe_for
    from robustbench_lite.protocols.corruption import _settings

    def run(method, recipe, drop_init=False):
        fields = dataclasses.asdict(recipe)
        if drop_init:
            fields.pop("init")
        meta = {"seed": 0, "recipe": fields, "protocol_config": {"n_examples": 0}}
        return meta, pd.DataFrame([{"method": method, "dataset": "digits", "preset": "default"}])

    erm = _settings(*run("erm", recipe_for("default", "digits", "erm"), drop_init=True))
    cifs = _settings(*run("cifs", recipe_for("default", "digits", "cifs")))
    assert cifs == erm
    longer = dataclasses.replace(recipe_for("default", "digits", "cifs"), lr=0.01)
    assert _settings(*run("cifs", longer)) != erm
