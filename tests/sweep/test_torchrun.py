"""Data-parallel training under torchrun (gloo on CPU): same numbers as one process, one writer,
and the safety checks of the DDP wrapper on two real ranks."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from robustbench_lite.bench import distributed
from robustbench_lite.bench.backbones import build_backbone
from robustbench_lite.bench.errors import UserError

TOLERANCE = 0.05  # absolute clean accuracy, DDP (per-rank BatchNorm on half batches) vs one process


@pytest.mark.slow
def test_torchrun_two_ranks_train_like_one_process_and_only_rank0_writes(local_sweep, tmp_path):
    results, cache = tmp_path / "results", tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "robustbench_lite.bench.cli", "run", "--method", "erm", "--protocol", "clean",
         "--preset", "smoke", "--results-dir", str(results), "--cache-dir", str(cache),
         "--no-progress"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_file,) = results.glob("runs/*/*.csv")
    assert json.loads(run_file.with_suffix(".json").read_text())["world_size"] == 2
    assert len(list(cache.glob("*.pt"))) == 1  # the final checkpoint; no partial one left
    assert proc.stdout.count("results:") == 1  # rank 1 printed nothing

    def accuracy(path: Path) -> float:
        return pd.read_csv(path).set_index("metric").value["accuracy"]

    ddp = accuracy(run_file)
    single = accuracy(next(local_sweep.results.glob("runs/clean/erm-*.csv")))
    print(f"clean accuracy: torchrun x2 {ddp:.4f}, one process {single:.4f}")
    assert abs(ddp - single) <= TOLERANCE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_checks(rank: int, port: int, out: str) -> None:
    """Runs on each of two gloo ranks; writes what it observed to out/rank<r>.json."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    seen: dict = {"joined": distributed.init_from_env(use_cuda=False), "rank": distributed.rank()}
    seen["shard"] = distributed.shard(torch.arange(10))[0].tolist()
    torch.manual_seed(0)
    backbone = build_backbone("tiny", 4, (0.5,) * 3, (0.25,) * 3)
    net = distributed.wrap(backbone, torch.device("cpu"))
    seen["attributes_reach_the_model"] = net.stages is backbone.stages and net.taps == backbone.taps

    captured = []
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(rank))  # rank's own data
    y = torch.tensor([0, 1, 2, 3])

    def capture(h):
        captured.append(h)
        return h

    def one_update(model):
        yield {"ce": F.cross_entropy(model(x, edits={"stage1": capture}), y)}

    for losses in distributed.checked_updates(one_update(net), net, "probe"):
        sum(losses.values()).backward()
    seen["edit_applied"] = len(captured) == 1
    grads = torch.cat([p.grad.flatten() for p in backbone.parameters()])
    gathered = [torch.zeros_like(grads) for _ in range(2)]
    torch.distributed.all_gather(gathered, grads)
    seen["gradients_synchronised"] = torch.equal(gathered[0], gathered[1])

    def bypass(model):
        yield {"ce": F.cross_entropy(model.module(x), y)}  # skips DDP's forward

    def rank_dependent(model):
        for _ in range(1 + distributed.rank()):
            yield {"ce": F.cross_entropy(model(x), y)}

    for name, method in (("bypass", bypass), ("rank_dependent", rank_dependent)):
        try:
            for losses in distributed.checked_updates(method(net), net, name):
                sum(losses.values()).backward()
            seen[name] = "no error"
        except UserError as err:
            seen[name] = str(err)
    distributed.shutdown()
    Path(out, f"rank{rank}.json").write_text(json.dumps(seen))


@pytest.mark.slow
def test_ddp_wrapper_on_two_ranks(tmp_path):
    context = multiprocessing.get_context("spawn")
    port = _free_port()
    ranks = [context.Process(target=_rank_checks, args=(r, port, str(tmp_path))) for r in (0, 1)]
    for p in ranks:
        p.start()
    for p in ranks:
        p.join(timeout=300)
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in ranks] == [0, 0]
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen["joined"] and seen["rank"] == rank
        assert seen["shard"] == list(range(5 * rank, 5 * rank + 5))
        assert seen["attributes_reach_the_model"] and seen["edit_applied"]
        assert seen["gradients_synchronised"]
        assert "without calling the model" in seen["bypass"]
        assert "different number of optimizer updates" in seen["rank_dependent"]


def test_without_torchrun_nothing_changes():
    model = torch.nn.Linear(2, 2)
    assert not distributed.init_from_env(use_cuda=False)
    assert distributed.wrap(model, torch.device("cpu")) is model
    assert distributed.world_size() == 1 and distributed.is_main()
    x = torch.arange(6)
    assert distributed.shard(x)[0] is x and distributed.rank0_value("v") == "v"
    updates = [{"a": torch.tensor(1.0)}]
    assert list(distributed.checked_updates(iter(updates), model, "m")) == updates

