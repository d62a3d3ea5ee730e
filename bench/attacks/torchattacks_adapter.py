"""Any attack of the optional `torchattacks` zoo, by class name, as a bounded L∞ attack.

Install without its dependencies (it pins an old `requests`): `pip install --no-deps torchattacks`.

An attack is built as `getattr(torchattacks, name)(model, ...)` with its own defaults, plus
`eps=ε`, `n_classes` and `seed` where its constructor takes them. Its output is then projected onto
the L∞ ε-ball around the input (and [0, 1]), so every result is a valid L∞-ε example: attacks with an
L∞ budget are unchanged by the projection, unbounded ones (CW, DeepFool, ...) are cut to the ball,
and an attack whose `eps` is an L2 budget (PGDL2) is mostly meaningless here. The global torch
generator, which torchattacks draws from, is seeded for the call and restored afterwards.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from .pgd import autograd_always
from ..errors import UserError

INSTALL = "pip install --no-deps torchattacks"


class TorchattacksAttack:
    """The torchattacks attack `name`, run at any ε."""

    def __init__(self, name: str, num_classes: int, seed: int) -> None:
        self.cls = _attack_class(name)
        self.name, self.num_classes, self.seed = name, num_classes, seed
        self.params = inspect.signature(self.cls).parameters

    @property
    def takes_eps(self) -> bool:
        """False for unbounded attacks: one run serves every ε (projected afterwards)."""
        return "eps" in self.params

    def run(self, model: nn.Module, x: Tensor, y: Tensor, eps: float | None) -> Tensor:
        """Raw adversarial examples (not projected); `eps` is passed when the attack takes one."""
        kwargs = {"eps": eps} if self.takes_eps else {}
        if "n_classes" in self.params:
            kwargs["n_classes"] = self.num_classes
        if "seed" in self.params:
            kwargs["seed"] = self.seed
        try:
            attack = self.cls(autograd_always(model), **kwargs)
        except TypeError as err:
            raise UserError(f"torchattacks.{self.name} cannot be built from (model, eps): {err}; "
                            f"pick an attack with default settings") from None
        cuda = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.seed)
            return attack(x, y).detach()


def project_linf(x: Tensor, x_adv: Tensor, eps: float) -> Tensor:
    """`x_adv` moved into the L∞ ε-ball around `x` and into [0, 1]."""
    return (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)


def _attack_class(name: str) -> type:
    try:
        import torchattacks
    except ImportError:
        raise UserError(f"the torchattacks attacks need the optional torchattacks package: {INSTALL}"
                        ) from None
    cls = getattr(torchattacks, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torchattacks.attack.Attack)):
        known = ", ".join(n for n in torchattacks.__all__ if n not in ("MultiAttack", "LGV"))
        raise UserError(f"torchattacks has no attack {name!r}; known attacks: {known}")
    return cls
