"""Registries: strict names, duplicates rejected, unknown names listed with a suggestion."""

import pytest

from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.method import METHODS, Method
from robustbench_lite.bench.registry import Registry


def test_duplicate_name_is_an_error():
    reg = Registry("thing")
    reg.add("alpha", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("alpha", 2)


def test_unknown_name_lists_known_names_and_suggests():
    reg = Registry("thing")
    reg.add("mixup", 1)
    reg.add("cutmix", 2)
    with pytest.raises(UserError) as err:
        reg.get("mixpu")
    message = str(err.value)
    assert "cutmix, mixup" in message and "Did you mean 'mixup'" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["Mixup", "1mix", "mix-up", ""])
def test_names_are_validated(name):
    with pytest.raises(ValueError):
        Registry("thing").add(name, 1)


def test_method_registry_rejects_non_methods_and_undocumented_classes():
    with pytest.raises(TypeError):
        METHODS.add("not_a_method", object)

    class Undocumented(Method):
        pass

    Undocumented.__doc__ = None
    with pytest.raises(TypeError):
        METHODS.add("undocumented_method", Undocumented)
    assert "undocumented_method" not in METHODS.names()


def test_builtin_erm_is_registered():
    assert "erm" in METHODS.names()
    assert METHODS.source("erm") == "builtin"
