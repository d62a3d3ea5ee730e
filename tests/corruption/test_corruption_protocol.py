"""The corruption protocol end to end: canonical files, generated sets, references, leaderboard."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pytest
import torch

from robustbench_lite.bench import leaderboard
from robustbench_lite.bench.cli import main
from robustbench_lite.bench.config import config_dict
from robustbench_lite.bench.corruptions import ALL, BENCHMARK, EXTRA
from robustbench_lite.bench.data import ImageDataset, Split
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.evaluate import accuracy
from robustbench_lite.bench.method import METHODS
from robustbench_lite.bench.protocol import RunContext
from robustbench_lite.bench.recipes import Recipe
from robustbench_lite.bench.results import RunInfo, load_runs, write_run
from robustbench_lite.protocols import corruption_metrics as metrics
from robustbench_lite.protocols.corruption import Corruption, CorruptionConfig, figure_path
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
    protocol = Corruption(CorruptionConfig(reference="alexnet_cifar10_pushpull"))
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
    ref = metrics.published_reference("alexnet_cifar10_pushpull")
    cell = {"reference": "alexnet_cifar10_pushpull"}
    assert _one(out, "mce", **cell) == pytest.approx(metrics.mce(errors, ref))
    assert _one(out, "relative_mce", **cell) == pytest.approx(
        metrics.relative_mce(errors, 1 - clean_acc, ref))
    assert _one(out, "mce_19", **cell) == pytest.approx(metrics.mce(errors, ref, ALL))
    assert figure_path(ctx).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_malformed_canonical_files_stop_the_run_before_evaluation(tmp_path):
    dataset = _dataset("cifar10")
    folder = tmp_path / "data" / "CIFAR-10-C"
    write_cifar_c(folder, dataset.test.x.permute(0, 2, 3, 1).numpy(), dataset.test.y.numpy())
    np.save(folder / "frost.npy", np.load(folder / "frost.npy")[:97])
    with pytest.raises(UserError, match="frost.npy has 97 rows, not divisible by 5"):
        Corruption().run(_context(tmp_path, dataset))


def _write(tmp_path, ctx, protocol, measurements):
    info = RunInfo(ctx.method_name, "corruption", ctx.dataset.name, ctx.recipe.backbone, "smoke",
                   ctx.seed, "0123abcd", "{}")
    provenance = {"recipe": asdict(ctx.recipe), "protocol_config": config_dict(protocol.config),
                  "seed": ctx.seed}
    return write_run(ctx.results_dir, info, measurements, provenance)


def test_generated_sets_and_a_baseline_run_as_reference(tmp_path, caplog):
    dataset = _dataset("toy", size=16, n_test=16)
    protocol = Corruption(CorruptionConfig(corruptions="gaussian_noise,fog,contrast,saturate"))
    baseline_ctx = _context(tmp_path, dataset)
    baseline = protocol.run(baseline_ctx)
    assert _one(baseline, "canonical_files") == 0.0
    assert _one(baseline, "mce", reference="erm") == pytest.approx(1.0)  # its own reference
    assert list((tmp_path / "cache" / "corruptions").glob("toy-*/fog.npy"))

    # the baseline's file, with every error doubled: the other run must read these numbers
    doubled = [replace(m, value=2 * m.value) if m.metric == "error" else m for m in baseline]
    _write(tmp_path, baseline_ctx, protocol, doubled)
    other = protocol.run(_context(tmp_path, dataset, method="other"))
    assert _one(other, "mce", reference="erm") == pytest.approx(0.5)
    assert _values(other, "error") == pytest.approx(
        {k: v / 2 for k, v in _values(doubled, "error").items()})

    with caplog.at_level(logging.WARNING):
        lonely = protocol.run(_context(tmp_path, dataset, method="other", seed=1))
    assert not [m for m in lonely if m.metric in ("mce", "relative_mce")]
    assert "mCE against erm skipped" in caplog.text

    restricted = Corruption(replace(protocol.config, severities=(1, 2)))
    assert [m for m in restricted.run(_context(tmp_path, dataset, method="other"))
            if m.metric == "mce"] == []  # other protocol settings: not comparable


def test_leaderboard_columns_notes_and_comparison_figure(tmp_path):
    dataset = _dataset("toy", size=16, n_test=16)
    protocol = Corruption(CorruptionConfig(corruptions="fog,contrast,speckle_noise"))
    for method, seed in (("erm", 0), ("other", 0), ("other", 1)):
        ctx = _context(tmp_path, dataset, method=method, seed=seed)
        _write(tmp_path, ctx, protocol, protocol.run(ctx))
    rows = load_runs(tmp_path / "results")
    labels = [c.label for c in protocol.leaderboard_columns(rows)]
    assert labels[:5] == ["mean corr. error", "clean acc", "corr. acc", "mCE vs erm",
                          "rel. mCE vs erm"]
    assert labels[-3:] == ["fog err", "contrast err", "speckle_noise err"]  # canonical order
    notes = protocol.notes(rows)
    assert any("mCE not computed for other" in n for n in notes)  # the seed-1 run had no baseline
    assert any("generated on the fly" in n for n in notes)
    files = leaderboard.build(tmp_path / "results")
    text = next(v for k, v in files.items() if k.name == "corruption-toy-smoke.md")
    assert "mCE vs erm" in text and "mCE not computed" in text
    csv = next(v for k, v in files.items() if k.name == "corruption-toy-smoke.csv")
    table = pd.read_csv(io.StringIO(csv))
    assert set(table["method"]) == {"erm", "other"}
    assert table.set_index("method").loc["other", "seeds"] == 2
    path = comparison_figure(rows, tmp_path / "cmp.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    first = path.read_bytes()
    comparison_figure(rows, path)
    assert path.read_bytes() == first  # regenerated byte for byte


def test_cli_run_on_the_embedded_dataset(tmp_path):
    code = main(["run", "--method", "erm", "--protocol", "corruption", "--preset", "smoke",
                 "--set", "protocol.n_examples=24", "--set", "protocol.corruptions=fog,jpeg_compression",
                 "--set", "recipe.epochs=1",
                 "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress"])
    assert code == 0
    assert (tmp_path / "results" / "figures" / "corruption-digits-erm-tiny-s0.png").is_file()
    sidecar = next((tmp_path / "results" / "runs" / "corruption").glob("*.json"))
    assert json.loads(sidecar.read_text())["protocol_config"]["n_examples"] == 24
    rows = load_runs(tmp_path / "results")
    cells = rows[(rows.metric == "accuracy") & (rows.corruption != "")]
    assert len(cells) == 10 and set(cells["n"]) == {24}


def test_bad_settings_are_user_errors(tmp_path):
    ctx = _context(tmp_path, _dataset("toy", size=16, n_test=8))
    with pytest.raises(UserError, match="severities"):
        Corruption(CorruptionConfig(severities=(0, 6))).run(ctx)
    with pytest.raises(UserError, match="unknown corruption backend"):
        Corruption(CorruptionConfig(backend="gpu")).run(ctx)
    with pytest.raises(UserError, match="unknown reference 'alexnet'"):
        Corruption(CorruptionConfig(corruptions="fog", reference="alexnet")).run(ctx)
