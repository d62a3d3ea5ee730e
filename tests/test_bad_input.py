"""Hostile input: every bad setting, name, device or list is one line and exit 2 before anything is
trained, cached or ranked; damaged or unwritable folders lose no measurement; cached weights are
never trusted."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from robustbench_lite.bench.cli import main
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.results import load_runs

FAST = ["--preset", "smoke", "--set", "recipe.epochs=1", "--set", "recipe.train_limit=64",
        "--no-progress"]


def _run(protocol: str, *sets: str, method: str = "erm", extra=()) -> list[str]:
    return ["run", "--method", method, "--protocol", protocol, *extra,
            *[item for s in sets for item in ("--set", s)]]


CASES = [
    # recipe settings
    (_run("clean", "recipe.batch_size=0"), "batch_size >= 1"),
    (_run("clean", "recipe.batch_size=-1"), "batch_size >= 1"),
    (_run("clean", "recipe.eval_batch_size=0"), "eval_batch_size >= 1"),
    (_run("clean", "recipe.lr=-0.1"), "lr > 0"),
    (_run("clean", "recipe.lr=0"), "lr > 0"),
    (_run("clean", "recipe.momentum=-1"), "momentum in [0, 1)"),
    (_run("clean", "recipe.momentum=1"), "momentum in [0, 1)"),
    (_run("clean", "recipe.crop_padding=-3"), "crop_padding >= 0"),
    (_run("clean", "recipe.epochs=0"), "epochs >= 1"),
    (_run("clean", "recipe.epochs=-1"), "epochs >= 1"),
    (_run("clean", "recipe.train_limit=-5"), "train_limit >= 0"),
    (_run("clean", "recipe.weight_decay=-1e-4"), "weight_decay >= 0"),
    (_run("clean", "recipe.schedule=step"), "step_every >= 1"),
    (_run("clean", "recipe.schedule=multistep", "recipe.milestones=10,5"), "must be increasing"),
    (_run("clean", "recipe.gamma=0"), "gamma > 0"),
    (_run("clean", "recipe.crop_size=-1"), "crop_size >= 0"),
    (_run("clean", "recipe.flip=maybe"), "expected true or false"),
    (_run("clean", "recipe.schedule=linear"), "expected one of cosine, multistep, step, constant"),
    (_run("clean", "recipe.nonexistent=1"), "has no setting 'nonexistent'"),
    # the --set parser: plain literals of the field's type only
    (_run("clean", "alpha=[1]", method="mixup"), "expected a number"),
    (_run("clean", "alpha=1j", method="mixup"), "expected a number"),
    (_run("clean", "alpha=1/0", method="mixup"), "divides by zero"),
    (_run("clean", "alpha=nan", method="mixup"), "expected a number"),
    (_run("clean", "alpha=inf", method="mixup"), "expected a number"),
    (_run("clean", "alpha=__import__('os')", method="mixup"), "expected a number"),
    (_run("clean", "recipe.epochs=" + "9" * 400), "expected an integer"),
    (_run("clean", "recipe.epochs=2.5"), "expected an integer"),
    (_run("clean", "alpha"), "is not key=value"),
    (_run("clean", "nowhere.k=1"), "neither recipe, protocol, nor this run's method"),
    # method settings
    (_run("clean", "alpha=0", method="mixup"), "alpha=0.0 must be > 0"),
    (_run("clean", "prob=2", method="cutmix"), "prob=2.0 must be a probability"),
    (_run("clean", "groups=0", method="tenet"), "groups >= 1"),
    (_run("clean", "severity=11", method="augmix"), "severity in [1, 10]"),
    (_run("clean", "chain_depth=0", method="augmix"), "chain_depth must be -1"),
    (_run("clean", "eps=0", method="pgd_at"), "eps in (0, 1]"),
    (_run("clean", "steps=0", method="cifs"), "steps >= 1"),
    # protocol settings
    (_run("adversarial", "protocol.n_examples=0"), "n_examples >= 1"),
    (_run("adversarial", "protocol.epsilons=-0.03"), "epsilons in (0, 1]"),
    (_run("adversarial", "protocol.epsilons=5"), "epsilons in (0, 1]"),
    (_run("adversarial", "protocol.pgd_steps=-5"), "pgd_steps >= 1"),
    (_run("adversarial", "protocol.pgd_restarts=0"), "pgd_restarts >= 1"),
    (_run("adversarial", "protocol.pgd_step_size=0"), "pgd_step_size > 0"),
    (_run("corruption", "protocol.n_examples=-1"), "n_examples >= 0"),
    (_run("corruption", "protocol.severities=0,6"), "severities in [1, 5]"),
    (_run("corruption", "protocol.severities=1,1"), "lists a severity twice"),
    (_run("corruption", "protocol.severities="), "at least one value for severities"),
    (_run("corruption", "protocol.corruptions=fogg"), "unknown corruption"),
    (_run("corruption", "protocol.backend=gpu"), "unknown corruption backend"),
    (_run("corruption", "protocol.reference=alexnet"), "unknown reference 'alexnet'"),
    (_run("corruption", "protocol.reference=alexnet_imagenet", "protocol.severities=1,2"),
     "averages severities 1..5"),
    (_run("lowdata", "protocol.shots=0"), "shots >= 1"),
    (_run("lowdata", "protocol.shots=5,5"), "lists a value twice"),
    (_run("lowdata", "protocol.subset_seeds="), "at least one value for subset_seeds"),
    # names, devices and data
    (_run("clean", method="nonexistent"), "unknown method 'nonexistent'"),
    (_run("nope"), "unknown protocol 'nope'"),
    (_run("clean", extra=["--dataset", "mnist"]), "unknown dataset 'mnist'"),
    (_run("clean", extra=["--backbone", "vgg"]), "unknown backbone 'vgg'"),
    (_run("clean", extra=["--preset", "huge"]), "unknown preset 'huge'"),
    (_run("clean", extra=["--device", "foo"]), "--device 'foo' is not a device"),
    (_run("clean", extra=["--device", "cuda:7"]), "--device cuda:7"),
    (_run("clean", extra=["--dataset", "cifar10", "--data-root", "/nonexistent/x"]),
     "cifar-10-batches-py was not found under /nonexistent/x"),
    # sweeps and the golden check
    (["sweep", "--methods", "erm,erm", "--protocols", "clean"], "names erm twice"),
    (["sweep", "--methods", "erm", "--protocols", "clean,clean"], "names clean twice"),
    (["sweep", "--methods", "erm", "--protocols", "clean", "--seeds", "0,0"], "names 0 twice"),
    (["sweep", "--methods", "erm", "--protocols", "clean", "--seeds", "x"], "expected comma-sep"),
    (["sweep", "--methods", "erm", "--protocols", "clean", "--workers", "0"], "--workers must"),
    (["sweep", "--methods", "erm", "--protocols", "clean", "--device", "bogus"], "not a device"),
    (["sweep", "--methods", "erm", "--protocols", "clean", "--set", "nope=1"],
     "none of the swept methods has a setting 'nope'"),
    (["check", "--workers", "0"], "--workers and --threads must be >= 1"),
    (["check", "--retrain"], "--retrain only makes sense with --update"),
]


def _folders(tmp_path: Path) -> list[str]:
    return ["--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]


@pytest.mark.parametrize("args, fragment", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_and_exit_2_with_nothing_cached_or_ranked(args, fragment, tmp_path,
                                                                        capsys):
    if args[0] == "check":
        args = [*args, "--results-dir", str(tmp_path / "results")]
    elif args[0] == "run":
        args = ["run", *FAST, *args[1:], *_folders(tmp_path)]  # the case's settings win
    else:
        args = [*args, "--preset", "smoke", *_folders(tmp_path), "--no-progress"]
    if "--device" in args and "cuda" in args[args.index("--device") + 1] \
            and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    code = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err
    assert not list((tmp_path / "cache").glob("**/*.pt"))  # nothing trained or cached
    assert not list((tmp_path / "results").glob("runs/*/*"))  # nothing measured
    assert not list((tmp_path / "results").glob("leaderboards/*"))  # nothing ranked


def test_the_table_covers_the_reported_cases():
    assert len(CASES) >= 40


def test_cuda_without_a_gpu_is_refused_before_anything_runs(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    code = main([*_run("clean", extra=["--device", "cuda"]), *FAST, *_folders(tmp_path)])
    assert code == 2 and "no CUDA GPU is visible here" in capsys.readouterr().err


class _Payload:
    """Unpickling this object writes a marker file: the proof that a pickle ran code."""

    marker = ""

    def __reduce__(self):
        return (Path(self.marker).write_text, ("executed",))


def _payload_file(path: Path, marker: Path) -> None:
    payload = _Payload()
    payload.marker = str(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"model": payload}))


def test_a_planted_pickle_in_the_torch_cache_is_refused_and_never_executed(tmp_path, monkeypatch):
    from robustbench_lite.bench.backbones import build_backbone
    from robustbench_lite.bench.weights import local_state_dict
    from robustbench_lite.protocols.lowdata import backbone_init, weights_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "executed.txt"
    planted = weights_file("resnet50")  # torchvision's own file name: resnet50-0676ba61.pth
    assert planted == tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    _payload_file(planted, marker)
    assert backbone_init("resnet50", True) == {"pretrained": True}  # found by name ...
    with pytest.raises(UserError, match="is not the published file") as err:
        build_backbone("resnet50", 10, (0.5,) * 3, (0.25,) * 3, pretrained=True)
    assert "\n" not in str(err.value) and not marker.exists()  # ... but refused unread
    # a file whose digest matches its name is still read with weights_only: no code runs
    _payload_file(tmp_path / "x.pth", marker)
    prefix = hashlib.sha256((tmp_path / "x.pth").read_bytes()).hexdigest()[:8]
    named = tmp_path / "torch" / "hub" / "checkpoints" / f"fake-{prefix}.pth"
    named.write_bytes((tmp_path / "x.pth").read_bytes())
    with pytest.raises(UserError, match="is not a plain state dict"):
        local_state_dict(f"https://example.org/fake-{prefix}.pth", "fake weights")
    assert not marker.exists()


def test_an_unwritable_results_folder_is_found_before_training(tmp_path, capsys):
    (tmp_path / "results" / "runs").mkdir(parents=True)
    (tmp_path / "results" / "runs" / "clean").write_text("a file where a folder must be")
    code = main([*_run("clean"), *FAST, *_folders(tmp_path)])
    assert code == 2 and "pass a writable --results-dir" in capsys.readouterr().err
    assert not list((tmp_path / "cache").glob("*.pt"))  # nothing was trained first


def test_an_unwritable_figures_folder_still_leaves_the_run_file(tmp_path, caplog):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "figures").write_text("a file where a folder must be")
    code = main([*_run("corruption", "protocol.n_examples=20", "protocol.corruptions=fog"), *FAST,
                 *_folders(tmp_path)])
    assert code == 0
    assert len(list((tmp_path / "results").glob("runs/corruption/*.csv"))) == 1
    assert "figure severity not written" in caplog.text


def test_a_cache_that_cannot_be_locked_is_still_read(tmp_path, capsys):
    args = [*_run("clean"), *FAST, *_folders(tmp_path)]
    assert main(args) == 0
    (model,) = (tmp_path / "cache").glob("*.pt")
    lock = model.with_suffix(".lock")
    lock.unlink(missing_ok=True)
    lock.mkdir()  # no lock can be taken here, as in a read-only shared cache
    before = model.stat().st_mtime_ns
    shutil_results = tmp_path / "results"
    for path in shutil_results.glob("runs/*/*"):
        path.unlink()
    assert main(args) == 0, capsys.readouterr().err
    assert model.stat().st_mtime_ns == before and len(list(shutil_results.glob("runs/*/*.csv")))


def test_a_checkpoint_of_another_structure_is_one_line(tmp_path, capsys):
    args = [*_run("clean"), *FAST, *_folders(tmp_path)]
    assert main(args) == 0
    (model,) = (tmp_path / "cache").glob("*.pt")
    torch.save({"model": torch.zeros(3)}, model)
    for path in (tmp_path / "results").glob("runs/*/*"):
        path.unlink()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "does not fit this model" in err and "Traceback" not in err


def test_damaged_run_files_are_skipped_and_the_leaderboards_stay(tmp_path, capsys, caplog):
    folders = _folders(tmp_path)
    assert main([*_run("clean"), *FAST, *folders]) == 0
    boards = sorted((tmp_path / "results" / "leaderboards").glob("*"))
    (csv,) = (tmp_path / "results").glob("runs/clean/*.csv")
    original = csv.read_text()
    csv.write_text(original.splitlines()[0] + "\n")  # truncated to its header
    assert main(["leaderboard", "--results-dir", folders[1]]) == 0
    assert sorted((tmp_path / "results" / "leaderboards").glob("*")) == boards
    assert f"skipping the damaged run file {csv}" in caplog.text
    for damage in (b"", b"\x00\xff\xfe binary", original.replace("0.", "x.").encode(),
                   b"a,b\n1,2\n"):
        csv.write_bytes(damage)
        assert main(["leaderboard", "--results-dir", folders[1]]) == 0
        assert load_runs(tmp_path / "results").empty
        assert sorted((tmp_path / "results" / "leaderboards").glob("*")) == boards


def test_leaderboard_into_an_unwritable_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    code = main(["leaderboard", "--results-dir", str(tmp_path / "file" / "results")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "writable" in err


def test_a_damaged_reference_sidecar_is_reported_as_such(tmp_path):
    folders = _folders(tmp_path)
    corruption = _run("corruption", "protocol.n_examples=20", "protocol.corruptions=fog")
    assert main([*corruption, *FAST, *folders]) == 0
    assert main([*corruption[:2], "mixup", *corruption[3:], *FAST, *folders]) == 0
    (sidecar,) = (tmp_path / "results").glob("runs/corruption/erm-*.json")
    sidecar.write_text("{ garbage")
    assert main(["leaderboard", "--results-dir", folders[1]]) == 0
    board = next((tmp_path / "results" / "leaderboards").glob("corruption-*.md")).read_text()
    assert f"the erm run {sidecar.stem} has no readable sidecar" in board


def test_float_labels_in_a_c_release_are_refused(tmp_path):
    from robustbench_lite.bench.corruptions.sets import CorruptionArrays
    from robustbench_lite.bench.datasets import Split

    test = Split(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1, 2, 3]))
    np.save(tmp_path / "labels.npy", np.tile(np.arange(4), 5).astype(np.float32) + 0.4)
    with pytest.raises(UserError, match="float32 labels, expected integer class ids"):
        CorruptionArrays(tmp_path, test)


def test_sidecar_json_of_a_run_is_complete(tmp_path):
    assert main([*_run("clean"), *FAST, *_folders(tmp_path)]) == 0
    (sidecar,) = (tmp_path / "results").glob("runs/clean/*.json")
    meta = json.loads(sidecar.read_text())
    assert meta["models"] and meta["recipe"]["epochs"] == 1
    assert not pd.read_csv(sidecar.with_suffix(".csv")).empty
