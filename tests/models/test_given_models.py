"""`eval`: models the suite did not train go through the same protocols, preprocessed as their
sources publish, identified by their weights, ranked beside trained rows."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from robustbench_lite.bench import weights as published
from robustbench_lite.bench.attacks.pgd import fgsm
from robustbench_lite.bench.checkpoint import load_checkpoint
from robustbench_lite.bench.cli import main
from robustbench_lite.bench.evaluate import to_input
from robustbench_lite.bench.models import Preprocessed, weights_digest
from robustbench_lite.bench.models.evaluation import EvalRequest, evaluate
from robustbench_lite.bench.models.sources import SourceOptions, TimmSource, TorchvisionSource
from robustbench_lite.bench.results import load_runs
from robustbench_lite.bench.runner import RunRequest, run
from robustbench_lite.bench.settings import Settings

FEW = {"protocol": {"n_examples": "60"}}  # both runs measure the same 60 test images
MACHINE = {"images_per_second"}


def _numbers(measurements) -> dict:
    return {(m.metric, tuple(sorted(m.cell.items()))): m.value for m in measurements
            if m.metric not in MACHINE}


@pytest.mark.slow
def test_a_saved_checkpoint_evaluates_to_the_trained_numbers(tmp_path):
    """Train ERM (smoke), save its weights, evaluate the file: every number of clean, corruption
    and adversarial equals the trained run's, and both rows share one leaderboard."""
    results, cache = tmp_path / "results", tmp_path / "cache"
    trained = {}
    for protocol in ("clean", "corruption", "adversarial"):
        settings = Settings(protocol=FEW["protocol"] if protocol != "clean" else {})
        trained[protocol] = run(RunRequest("erm", protocol, preset="smoke", results_dir=results,
                                           cache_dir=cache, settings=settings, progress=False))
    (model_file,) = cache.glob("erm-digits-*.pt")
    weights = tmp_path / "my_erm.pt"
    torch.save(load_checkpoint(model_file)["model"], weights)
    for protocol, outcome in trained.items():
        given = evaluate(EvalRequest(f"file:{weights}", protocol, preset="smoke",
                                     results_dir=results, cache_dir=cache, backbone="tiny",
                                     protocol_settings=FEW["protocol"] if protocol != "clean"
                                     else {}, progress=False))
        assert given.info.origin == "evaluated" and given.info.method == "my_erm"
        assert _numbers(given.measurements) == _numbers(outcome.measurements), protocol
    assert main(["leaderboard", "--results-dir", str(results)]) == 0
    board = pd.read_csv(results / "leaderboards" / "clean-digits-smoke.csv")
    assert sorted(zip(board.method, board.origin)) == [("erm", "trained"),
                                                       ("my_erm", "evaluated")]
    assert board["clean acc"].nunique() == 1
    text = (results / "leaderboards" / "corruption-digits-smoke.md").read_text()
    assert re.search(r"\| my_erm +\| tiny +\| evaluated +\|", text)
    assert re.search(r"\| erm +\| tiny +\| trained +\|", text)
    corruption = pd.read_csv(results / "leaderboards" / "corruption-digits-smoke.csv")
    assert corruption.set_index("method").loc["my_erm", "mCE vs erm"] == pytest.approx(1.0)


def test_the_run_is_identified_by_the_weights_not_the_path(tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    twin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    twin.load_state_dict(net.state_dict())
    assert weights_digest(net) == weights_digest(twin)
    with torch.no_grad():
        twin[1].bias[0] += 1e-6
    assert weights_digest(net) != weights_digest(twin)

    path = tmp_path / "model.pt"
    ids = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        torch.save(_tiny_backbone().state_dict(), path)
        outcome = evaluate(EvalRequest(f"file:{path}", "clean", results_dir=tmp_path / "r",
                                       cache_dir=tmp_path / "c", backbone="tiny", progress=False))
        ids.append(outcome.info.run_id)
    assert ids[0] == ids[1] != ids[2]  # the same weights again: the same run; changed: a new one
    rows = load_runs(tmp_path / "r")
    assert set(rows["origin"]) == {"evaluated"} and rows["run_id"].nunique() == 2


def _tiny_backbone() -> nn.Module:
    from robustbench_lite.bench.backbones import build_backbone
    from robustbench_lite.bench.datasets import load_dataset

    digits = load_dataset("digits", "data")
    return build_backbone("tiny", digits.num_classes, digits.mean, digits.std)


# -- a dataset plugin (an entry point, as a third party installs one) --------------------------

PLUGIN = '''
    """Four random {size}-px photographs in 1000 classes (a stand-in for an ImageNet subset)."""
    import torch
    from robustbench_lite.bench.datasets import ImageDataset, Split

    def photos(data_root):
        """Random {size}-px images, labels 0..3 of 1000 classes."""
        gen = torch.Generator().manual_seed(7)
        def split():
            return Split(torch.randint(0, 256, (4, 3, {size}, {size}), generator=gen,
                                       dtype=torch.uint8), torch.arange(4))
        return ImageDataset("photos{size}", split(), split(), 1000, (0.5,) * 3, (0.25,) * 3)
'''


def _install_dataset_plugin(root: Path, size: int, monkeypatch) -> str:
    name = f"photos{size}"
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}_plugin.py").write_text(textwrap.dedent(PLUGIN.format(size=size)))
    info = root / f"{name}_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[robustbench_lite.datasets]\n{name} = {name}_plugin:photos\n")
    monkeypatch.syspath_prepend(str(root))
    return name


def _hub_with_random_resnet18(tmp_path: Path, monkeypatch) -> nn.Module:
    """Random ResNet-18 weights where torchvision looks for IMAGENET1K_V1, trusted as published."""
    from torchvision.models import ResNet18_Weights, resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(3)
    net = resnet18().eval()
    path = published.hub_file(ResNet18_Weights.IMAGENET1K_V1.url)
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    # random weights cannot carry the published digest: only that check is bypassed here
    monkeypatch.setattr(published, "digest_matches", lambda file, prefix: True)
    return net


@pytest.mark.parametrize("size", [224, 160])
def test_torchvision_weights_bring_their_preprocessing(size, tmp_path, monkeypatch):
    """The wrapper's logits equal a manual forward pass through the weights' own transform at a
    size needing resize and crop (160 px), and through its normalisation alone on images already
    at the crop size (224 px); `eval` on the plugin dataset measures that model."""
    from torchvision.models import ResNet18_Weights

    net = _hub_with_random_resnet18(tmp_path, monkeypatch)
    dataset = _install_dataset_plugin(tmp_path / "site", size, monkeypatch)
    given = TorchvisionSource().load("resnet18:IMAGENET1K_V1",
                                     SourceOptions(1000, (0.5,) * 3, (0.25,) * 3))
    assert given.preprocessing.crop == 224 and given.preprocessing.resize == 256
    wrapped = Preprocessed(given.module, given.preprocessing).eval()
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    transform = ResNet18_Weights.IMAGENET1K_V1.transforms()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (transform.mean, transform.std))
    with torch.no_grad():  # at the crop size: normalisation only (no second resize and crop)
        manual = net(transform(x) if size != 224 else (x - mean) / std)
        raw = net(x)
        mine = wrapped(x)
    assert torch.allclose(mine, manual, atol=1e-4, rtol=1e-4)
    assert (mine - raw).abs().max() > 1e-2  # preprocessing is not a no-op here

    outcome = evaluate(EvalRequest("torchvision:resnet18:IMAGENET1K_V1", "clean", dataset,
                                   results_dir=tmp_path / "r", cache_dir=tmp_path / "c",
                                   progress=False))
    from robustbench_lite.bench.datasets import load_dataset

    test = load_dataset(dataset, tmp_path).test
    images = to_input(test.x, torch.device("cpu"))
    with torch.no_grad():
        logits = net(transform(images) if size != 224 else (images - mean) / std)
    expected = (logits.argmax(1) == test.y).float().mean().item()
    accuracy = {m.metric: m.value for m in outcome.measurements}["accuracy"]
    assert accuracy == pytest.approx(expected)
    assert outcome.info.backbone == "resnet18" and outcome.info.dataset == dataset


def test_timm_models_take_their_pretrained_config(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    checkpoint = tmp_path / "r18.pt"
    torch.save({"state_dict": net.state_dict()}, checkpoint)
    with pytest.raises(Exception, match="does not fit"):  # 1000-class architecture
        TimmSource().load("resnet18", SourceOptions(10, (0.5,) * 3, (0.25,) * 3,
                                                    checkpoint=checkpoint))
    full = timm.create_model("resnet18", pretrained=False).eval()
    torch.save(full.state_dict(), checkpoint)
    given = TimmSource().load("resnet18", SourceOptions(1000, (0.5,) * 3, (0.25,) * 3,
                                                        checkpoint=checkpoint))
    cfg = timm.data.resolve_data_config({}, model=full)
    assert given.preprocessing.mean == pytest.approx(cfg["mean"])
    assert given.preprocessing.crop == cfg["input_size"][-1]
    x = torch.rand(2, 3, 224, 224)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (cfg["mean"], cfg["std"]))
    with torch.no_grad():
        assert torch.allclose(Preprocessed(given.module, given.preprocessing).eval()(x),
                              full((x - mean) / std), atol=1e-5)
    assert weights_digest(given.module) == weights_digest(full)


USER_MODULE = '''
    import torch
    from torch import nn

    def build():
        """A linear classifier of normalised 32-px images."""
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
'''


def test_a_python_model_is_normalised_inside_and_attacked_in_pixel_space(tmp_path, monkeypatch,
                                                                         capsys):
    (tmp_path / "user_models.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    mean, std = (0.2, 0.4, 0.6), (0.5, 0.25, 0.125)
    sys.modules.pop("user_models", None)
    from user_models import build

    from robustbench_lite.bench.models.given import Preprocessing

    net = build()
    wrapped = Preprocessed(net, Preprocessing(mean, std)).eval()
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    y = torch.arange(8) % 10
    mean_t, std_t = (torch.tensor(v).view(1, 3, 1, 1) for v in (mean, std))

    def normalise(t):
        return (t - mean_t) / std_t

    with torch.no_grad():
        assert torch.allclose(wrapped(x), net(normalise(x)), atol=1e-6)
    eps = 8 / 255
    x_adv = fgsm(wrapped, x, y, eps)
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() > eps / 2  # the step is taken in pixel space, at full ε

    code = main(["eval", "--model", "python:user_models:build", "--protocol", "adversarial",
                 "--set", "model.mean=0.2,0.4,0.6", "--set", "model.std=0.5,0.25,0.125",
                 "--set", "protocol.n_examples=40", "--results-dir", str(tmp_path / "r"),
                 "--cache-dir", str(tmp_path / "c"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    rows = load_runs(tmp_path / "r")
    assert set(rows["method"]) == {"build"} and set(rows["origin"]) == {"evaluated"}


FAKE_ROBUSTBENCH = {
    "robustbench/__init__.py": "",
    "robustbench/model_zoo/__init__.py": '''
        from collections import OrderedDict
        from enum import Enum
        from torch import nn

        class BenchmarkDataset(Enum):
            cifar_10 = "cifar10"

        class ThreatModel(Enum):
            Linf = "Linf"

        def tiny():
            import torch
            torch.manual_seed(0)
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))

        model_dicts = OrderedDict([(BenchmarkDataset.cifar_10, OrderedDict([
            (ThreatModel.Linf, OrderedDict([("Tiny2024Linear", {"model": tiny, "gdrive_id": "x"})]))
        ]))])
    ''',
    "robustbench/utils.py": '''
        import torch
        from robustbench.model_zoo import model_dicts

        def load_model(model_name, model_dir, dataset, threat_model):
            for ds, threats in model_dicts.items():
                for tm, entries in threats.items():
                    if ds.value == dataset and tm.value == threat_model:
                        model = entries[model_name]["model"]()
                        state = torch.load(f"{model_dir}/{dataset}/{threat_model}/{model_name}.pt")
                        model.load_state_dict(state)
                        return model.eval()
    ''',
}


def test_robustbench_entries_come_with_their_dataset_and_weights_folder(tmp_path, monkeypatch):
    """Against a stand-in with RobustBench 1.1's interface (`model_zoo.model_dicts`,
    `utils.load_model(model_name, model_dir, dataset, threat_model)`)."""
    for name, text in FAKE_ROBUSTBENCH.items():
        (tmp_path / "site" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "site" / name).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for module in [m for m in sys.modules if m.startswith("robustbench.")] + ["robustbench"]:
        monkeypatch.delitem(sys.modules, module, raising=False)
    from robustbench_lite.bench.errors import UserError
    from robustbench_lite.bench.models.sources import RobustBenchSource

    source, models = RobustBenchSource(), tmp_path / "models"
    assert source.dataset("Tiny2024Linear") == "cifar10"
    with pytest.raises(UserError, match=r"no weights at .*cifar10/Linf/Tiny2024Linear\.pt"):
        source.load("Tiny2024Linear", SourceOptions(10, (0.5,) * 3, (0.25,) * 3,
                                                    model_dir=models))
    with pytest.raises(UserError, match="no model 'Tiny2024Linaer'; did you mean 'Tiny2024Linear'"):
        source.dataset("Tiny2024Linaer")
    torch.manual_seed(5)
    reference = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    (models / "cifar10" / "Linf").mkdir(parents=True)
    torch.save(reference.state_dict(), models / "cifar10" / "Linf" / "Tiny2024Linear.pt")
    given = source.load("Tiny2024Linear", SourceOptions(10, (0.5,) * 3, (0.25,) * 3,
                                                        model_dir=models))
    assert weights_digest(given.module) == weights_digest(reference)
    assert given.name == "tiny2024linear" and given.details["threat_model"] == "Linf"


@pytest.mark.parametrize("args, fragment", [
    (["--model", "nowhere:x"], "unknown model source 'nowhere'"),
    (["--model", "resnet18"], "is not KIND:WHAT"),
    (["--model", "file:missing.pt", "--backbone", "tiny"], "no file missing.pt"),
    (["--model", "file:x.pt"], "needs --backbone NAME"),
    (["--model", "torchvision:resnet81"], "did you mean 'resnet18'"),
    (["--model", "torchvision:resnet18:IMAGENET9K"], "has no weights 'IMAGENET9K'"),
    (["--model", "torchvision:resnet18"], "resnet18-f37072fd.pth is not in the local torch cache"),
    (["--model", "python:user_models:nothing"], "has no function 'nothing'"),
    (["--model", "python:user_models:wide"], "cannot take the 3x32x32 images of digits"),
    (["--model", "python:user_models:many"], "gives 1000 outputs but digits has 10 classes"),
    (["--model", "python:user_models:build", "--name", "erm"], "is a method's name"),
    (["--model", "python:user_models:build", "--set", "model.mean=0.5"], "go together"),
    (["--model", "python:user_models:build", "--method", "cifs"], "apply to file: models only"),
    (["--model", "python:user_models:build", "--protocol", "lowdata"], "trains models of its own"),
])
def test_bad_models_are_one_line_errors(args, fragment, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user_models.py").write_text(textwrap.dedent(USER_MODULE) + textwrap.dedent('''
        def wide():
            """Expects 64-px images."""
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 10))

        def many():
            """1000 outputs."""
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 1000))
    '''))
    sys.modules.pop("user_models", None)
    if "--protocol" not in args:
        args = [*args, "--protocol", "clean"]
    code = main(["eval", *args, "--results-dir", str(tmp_path / "r"), "--cache-dir",
                 str(tmp_path / "c"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "r" / "runs").exists()


BACKBONE_PLUGIN = '''
    from torch import nn
    from robustbench_lite.bench.backbones import Backbone

    def linear(num_classes, mean, std):
        """One linear layer on 32-px images (a plugin backbone)."""
        return Backbone(nn.Flatten(), [("stage1", nn.Identity())],
                        nn.Linear(3 * 32 * 32, num_classes), mean, std, first_conv="")
'''


def test_a_plugin_backbone_is_found_by_name_and_takes_weights(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "linear_backbone.py").write_text(textwrap.dedent(BACKBONE_PLUGIN))
    info = site / "linear_backbone-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: linear-backbone\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[robustbench_lite.backbones]\nlinear_plugin = linear_backbone:linear\n")
    monkeypatch.syspath_prepend(str(site))
    from robustbench_lite.bench.backbones import BACKBONES, build_backbone
    from robustbench_lite.bench.datasets import load_dataset

    assert "linear_plugin" in BACKBONES.names()
    digits = load_dataset("digits", "data")
    torch.manual_seed(0)
    net = build_backbone("linear_plugin", 10, digits.mean, digits.std)
    torch.save(net.state_dict(), tmp_path / "linear.pt")
    outcome = evaluate(EvalRequest(f"file:{tmp_path / 'linear.pt'}", "clean",
                                   results_dir=tmp_path / "r", cache_dir=tmp_path / "c",
                                   backbone="linear_plugin", progress=False))
    with torch.no_grad():
        expected = (net.eval()(to_input(digits.test.x, torch.device("cpu"))).argmax(1)
                    == digits.test.y).float().mean().item()
    assert {m.metric: m.value for m in outcome.measurements}["accuracy"] == pytest.approx(expected)
    assert BACKBONES.source("linear_plugin") == "linear-backbone==1.0"
