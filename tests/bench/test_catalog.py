"""`robustbench-lite list` reads the sources without importing them, and says what the registries
hold: the same names, descriptions, settings and literal defaults."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys

import pytest

from robustbench_lite.bench import catalog
from robustbench_lite.bench.backbones import BACKBONES
from robustbench_lite.bench.datasets import DATASETS
from robustbench_lite.bench.method import METHODS
from robustbench_lite.bench.protocol import PROTOCOLS

REGISTRIES = {"methods": METHODS, "protocols": PROTOCOLS, "datasets": DATASETS,
              "backbones": BACKBONES}


@pytest.mark.parametrize("section", sorted(REGISTRIES))
def test_the_catalog_says_what_the_registry_holds(section):
    registry = REGISTRIES[section]
    entries = {e.name: e for e in catalog.entries(section)}
    assert set(entries) == set(registry.names())
    for name, entry in entries.items():
        obj = registry.get(name)
        assert entry.description == (obj.__doc__ or "").strip().splitlines()[0]
        config = getattr(obj, "Config", None)
        fields = dataclasses.fields(config) if config is not None else ()
        assert [s.name for s in entry.settings] == [f.name for f in fields], name
        for setting, f in zip(entry.settings, fields):
            try:
                written = ast.literal_eval(setting.default)
            except ValueError:
                continue  # an expression such as 8 / 255
            assert written == f.default, (name, f.name)


def test_list_names_the_range_and_comment_of_a_setting(capsys):
    from robustbench_lite.bench.cli import main

    assert main(["list", "tenet"]) == 0
    out = capsys.readouterr().out
    assert "groups: int = 6 (>= 1)  # channel groups per sample (N_G)" in out
    assert "warmup_cap: float = 0.1 (in [0, 1])" in out
    assert main(["list", "nothing_like_this"]) == 2


def test_help_and_list_do_not_import_torch():
    code = ("import sys; from robustbench_lite.bench.cli import main; main(['list']); "
            "assert 'torch' not in sys.modules, 'list imported torch'; "
            "import contextlib, io\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['run', '--help'])\n"
            "assert 'torch' not in sys.modules, 'help imported torch'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "methods:" in proc.stdout and "mixup" in proc.stdout
