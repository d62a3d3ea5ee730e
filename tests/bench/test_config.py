"""`--set` overrides are parsed against the typed Config dataclasses."""

from dataclasses import dataclass

import pytest

from robustbench_lite.bench import settings
from robustbench_lite.bench.config import apply_overrides, stable_hash
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.settings import Settings


@dataclass(frozen=True)
class Cfg:
    alpha: float = 1.0
    steps: int = 10
    taps: tuple[str, ...] = ("input",)
    flag: bool = False
    name: str = "x"
    limit: int | None = None


def test_values_are_converted_to_field_types():
    pairs = ["alpha=0.4", "steps=20", "taps=input,stage1", "flag=true", "name=y", "limit=none"]
    cfg = apply_overrides(Cfg(), settings.parse(pairs)["method"], "m")
    assert cfg == Cfg(alpha=0.4, steps=20, taps=("input", "stage1"), flag=True, name="y", limit=None)


def test_fractions_are_accepted_for_floats():
    assert apply_overrides(Cfg(), {"alpha": "8/255"}, "m").alpha == pytest.approx(8 / 255)


@pytest.mark.parametrize("pair, fragment", [
    ({"beta": "1"}, "has no setting 'beta'"),
    ({"steps": "2.5"}, "expected an integer"),
    ({"steps": "ten"}, "expected an integer"),
    ({"flag": "maybe"}, "expected true or false"),
])
def test_bad_overrides_are_one_line_errors(pair, fragment):
    with pytest.raises(UserError, match=fragment) as err:
        apply_overrides(Cfg(), pair, "method m")
    assert "\n" not in str(err.value)


def test_malformed_pair_is_an_error():
    with pytest.raises(UserError, match="key=value"):
        settings.parse(["alpha"])


def test_prefixes_route_settings_to_their_owner():
    scoped = settings.parse(["alpha=1", "protocol.n=2", "recipe.lr=3", "mixup.beta=4",
                             "clean.m=5"])
    assert settings.for_run(scoped, "mixup", "clean") == Settings(
        {"alpha": "1", "beta": "4"}, {"n": "2", "m": "5"}, {"lr": "3"})
    with pytest.raises(UserError, match="neither recipe, protocol, nor this run's method"):
        settings.for_run(scoped, "erm", "clean")


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
