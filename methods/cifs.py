"""CIFS: channel-wise importance-based feature selection (Yan et al., ICML 2021).

After every block of the backbone's last stage, a probe classifier reads the block output z; the
gradient of the probe's top-k logits with respect to z ranks the channels, and a softmax over those
relevances rescales z. Training is PGD adversarial training on the joint loss of the final logits
and the probes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_lite.bench.config import setting
from robustbench_lite.bench.attacks.pgd import ce_loss, pgd
from robustbench_lite.bench.backbones import Backbone
from robustbench_lite.bench.method import METHODS, Batch, Losses, Method, StepContext


def _probe(channels: int, num_classes: int, hidden: int, softplus_beta: float) -> nn.Module:
    """Pooled features -> logits: Linear-Softplus-Linear when `hidden` > 0, else one Linear."""
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if hidden:
        layers += [nn.Linear(channels, hidden), nn.Softplus(beta=softplus_beta),
                   nn.Linear(hidden, num_classes)]
    else:
        layers.append(nn.Linear(channels, num_classes))
    return nn.Sequential(*layers)


class CifsBlock(nn.Module):
    """Rescales the channels of a block output by their relevance to the probe's top-k classes.

    The relevance of channel c is the spatial sum of d(sum of the k target logits)/dz computed on a
    detached copy of z, so the mask depends on the probe's weights but passes no gradient to the
    backbone. Targets: in training the ground-truth label then the predictions ranked 2..k; in
    evaluation the top-k predictions (no labels). The mask is a softmax over channels.

    The owning `CifsNet` sets `labels` for a training forward and `probe_sink` (a list) when the raw
    probe logits are wanted for a loss.
    """

    def __init__(self, channels: int, num_classes: int, hidden: int = 0, softplus_beta: float = 5.0,
                 top_k: int = 2, temperature: float = 1.0) -> None:
        super().__init__()
        if not 1 <= top_k <= num_classes:
            raise ValueError(f"top_k must be in [1, {num_classes}], got {top_k}")
        self.probe = _probe(channels, num_classes, hidden, softplus_beta)
        self.top_k, self.temperature = top_k, temperature
        self.labels: Tensor | None = None
        self.probe_sink: list[Tensor] | None = None
        self.through_mask = False  # an attack differentiates through the mask (see channel_mask)

    def forward(self, z: Tensor) -> Tensor:
        if self.probe_sink is not None:
            self.probe_sink.append(self.probe(z))
        if self.training and self.labels is None:
            raise RuntimeError("a CIFS block in training mode needs the labels: call "
                               "CifsNet.forward_with_probes(x, y)")
        mask = self.channel_mask(z, self.labels if self.training else None)
        return z * mask[:, :, None, None]

    def channel_mask(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, C) channel weights, non-negative and summing to one; label-free when `labels` is None.

        Autograd is enabled locally, so the mask is also computed under `torch.no_grad()`. The mask
        keeps its graph to the probe's weights only in training, where the loss needs it. With
        `through_mask` (an attack's forward) the relevance is taken on z itself with its graph
        kept, so the input gradient also flows through the mask (second order), which the
        reference's detached mask hides from an attacker.
        """
        with torch.enable_grad():
            through = self.through_mask and z.requires_grad
            source = z if through else z.detach().requires_grad_(True)
            logits = self.probe(source)
            targets = self.targets(logits.detach(), labels)
            score = logits.gather(1, targets).sum()
            grad, = torch.autograd.grad(score, source, create_graph=self.training or through)
        relevance = grad.sum(dim=(2, 3))
        return torch.softmax(relevance / self.temperature, dim=1)

    def targets(self, logits: Tensor, labels: Tensor | None) -> Tensor:
        """(B, k) classes whose logits define the relevance."""
        ranked = logits.topk(self.top_k, dim=1).indices
        if labels is None:
            return ranked
        return torch.cat([labels[:, None], ranked[:, 1:]], dim=1)


class CifsNet(nn.Module):
    """A backbone with CIFS blocks; `forward(x)` returns the final logits only.

    CIFS differentiates inside its forward pass, also at inference: evaluation must keep autograd
    available (`needs_autograd_at_eval`; `torch.inference_mode` breaks it), and every forward costs
    an extra backward pass through the probes (small next to the backbone).
    """

    needs_autograd_at_eval = True

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    @property
    def cifs_blocks(self) -> list[CifsBlock]:
        return [m for m in self.modules() if isinstance(m, CifsBlock)]

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def forward_with_probes(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """Final logits and the raw probe logits (in depth order). In training mode the masks use
        the labels `y`, which are then required; in evaluation mode `y` is ignored."""
        blocks, probes = self.cifs_blocks, []
        for block in blocks:
            block.labels, block.probe_sink = y, probes
        try:
            logits = self.backbone(x)
        finally:
            for block in blocks:
                block.labels, block.probe_sink = None, None
        return logits, probes


def add_cifs(backbone: Backbone, hidden: int = 128, softplus_beta: float = 5.0,
             nonlinear_probes: int = 1, top_k: int = 2, temperature: float = 1.0) -> CifsNet:
    """Insert a CIFS block after every block of the backbone's last stage (in place).

    The reference (ResNet-18) feeds the last block's masked output to pooling and the classifier.
    On a pre-activation backbone the head starts with BatchNorm-ReLU, which in training normalises
    a per-channel mask away; there the last CIFS block goes after that BatchNorm-ReLU, so the mask
    reaches the classifier as in the reference."""
    name = list(backbone.stages)[-1]
    channels, num_classes = _output_sizes(backbone, name)
    blocks = list(backbone.stages[name])
    cifs = [CifsBlock(channels, num_classes, hidden if i < nonlinear_probes else 0, softplus_beta,
                      top_k, temperature) for i in range(len(blocks))]
    normalising = _leading_norm(backbone.head)
    layers: list[nn.Module] = []
    for i, block in enumerate(blocks):
        layers += [block] if normalising and i == len(blocks) - 1 else [block, cifs[i]]
    backbone.stages[name] = nn.Sequential(*layers)
    if normalising:
        head = list(backbone.head)
        backbone.head = nn.Sequential(*head[:normalising], cifs[-1], *head[normalising:])
    return CifsNet(backbone)


def _leading_norm(head: nn.Module) -> int:
    """How many leading modules of the head are BatchNorm (and the activation after it): 0 when
    the head starts with pooling."""
    if not isinstance(head, nn.Sequential) or not isinstance(head[0], nn.BatchNorm2d):
        return 0
    return 2 if len(head) > 1 and isinstance(head[1], (nn.ReLU, nn.GELU, nn.SiLU)) else 1


def _output_sizes(backbone: Backbone, stage: str) -> tuple[int, int]:
    """Channels at the end of `stage` and the number of classes, from one small forward pass."""
    seen: dict[str, int] = {}

    def record(h: Tensor) -> Tensor:
        seen["channels"] = h.shape[1]
        return h

    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        probe = torch.zeros(2, 3, 32, 32, device=backbone.normalize.mean.device)
        num_classes = backbone(probe, {stage: record}).shape[1]
    backbone.train(was_training)
    return seen["channels"], num_classes


def joint_loss_terms(logits: Tensor, probe_logits: list[Tensor], y: Tensor, beta: float,
                     reduction: str = "mean") -> tuple[Tensor, Tensor]:
    """The two parts of [CE(final) + beta/L * sum_l CE(probe_l)] * 3/(beta+1)."""
    scale = 3.0 / (beta + 1.0)
    final = F.cross_entropy(logits, y, reduction=reduction)
    probes = sum(F.cross_entropy(p, y, reduction=reduction) for p in probe_logits)
    return scale * final, scale * beta / len(probe_logits) * probes


def joint_loss(model: CifsNet, x: Tensor, y: Tensor, beta: float, reduction: str = "mean") -> Tensor:
    """The CIFS joint loss of `model` on (x, y); per sample with reduction="none"."""
    logits, probes = model.forward_with_probes(x, y)
    final, probe = joint_loss_terms(logits, probes, y, beta, reduction)
    return final + probe


@METHODS.register("cifs")
class Cifs(Method):
    """CIFS: channel masks from probe-gradient relevance in the last stage, PGD adversarial training.

    Yan et al. (ICML 2021). Reference: CIFS on both blocks of ResNet-18's last stage (first probe
    Linear(512->128)-Softplus(5)-Linear, second Linear), PGD-10 training (eps 8/255, step 2/255,
    random start, crafted in eval mode on the joint loss), one update on the adversarial batch.

    Deviations from the reference code:
    - Trained from scratch, like every method of the benchmark; the reference's CIFS PGD-AT run
      resumed from a clean-trained CIFS checkpoint.
    - The mask keeps its second-order graph only in training mode. In evaluation the graph would
      only reach the probe's weights, so outputs and input gradients are unchanged and memory drops.
    - The number of classes, top-k and the mask temperature are settings, not constants.
    """

    citation = ("Yan, Zhang, Niu, Feng, Tan, Sugiyama, CIFS: Improving Adversarial Robustness of "
                "CNNs via Channel-wise Importance-based Feature Selection (ICML 2021) "
                "<https://arxiv.org/abs/2102.05311>")
    masking_risk = ("its forward differentiates the probes and re-weights channels by the "
                    "gradients; PGD on the final logits through detached masks may overstate its "
                    "robustness (Tramer et al., NeurIPS 2020, on adaptive attacks)")

    @dataclass(frozen=True)
    class Config:
        probe_hidden: int = setting(128, low=1)  # hidden width of the non-linear probes
        # sharpness of the non-linear probes' Softplus
        softplus_beta: float = setting(5.0, low=0, low_open=True)
        # leading CIFS blocks with a non-linear probe; the rest are linear
        nonlinear_probes: int = setting(1, low=0)
        top_k: int = setting(2, low=1)  # classes whose logit gradients define channel relevance
        # softmax temperature of the channel mask
        temperature: float = setting(1.0, low=0, low_open=True)
        beta: float = setting(2.0, low=0)  # probe weight in the joint training loss
        adversarial: bool = True  # PGD adversarial training; False trains on clean batches
        # L-inf radius of the training attack on [0, 1] images
        eps: float = setting(8 / 255, low=0, high=1, low_open=True)
        steps: int = setting(10, low=1)  # PGD iterations of the training attack
        step_size: float = setting(2 / 255, low=0, low_open=True)  # PGD step of the training attack
        attack_loss: Literal["joint", "ce"] = "joint"  # objective of the training attack
        # probe weight in the joint attack loss (training and adaptive)
        beta_attack: float = setting(2.0, low=0)

    def build_model(self, backbone: Backbone) -> nn.Module:
        c = self.config
        return add_cifs(backbone, c.probe_hidden, c.softplus_beta, c.nonlinear_probes, c.top_k,
                        c.temperature)

    def training_step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Losses:
        x = self.adversarial_examples(model, batch, ctx) if self.config.adversarial else batch.x
        logits, probes = model.forward_with_probes(x, batch.y)
        final, probe = joint_loss_terms(logits, probes, batch.y, self.config.beta)
        return {"ce": final, "probe_ce": probe}

    def adversarial_examples(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Tensor:
        """PGD examples of the batch; `pgd` runs the model in evaluation mode, as the reference
        does (label-free masks, BN running statistics), and restores training mode."""
        c = self.config
        loss_fn = self.adaptive_attack_loss if c.attack_loss == "joint" else ce_loss
        return pgd(model, batch.x, batch.y, c.eps, c.steps, c.step_size, norm="linf",
                   random_start=True, loss_fn=loss_fn, rng=ctx.rng)

    def adaptive_attack_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Per-sample joint loss with `beta_attack` on the final and probe logits."""
        return joint_loss(model, x, y, self.config.beta_attack, reduction="none")

    def adaptive_attacks(self) -> dict:
        """`pgd_through_mask`: the joint loss with the gradient taken through the channel masks."""
        return {"pgd_through_mask": self.through_mask_loss}

    def through_mask_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        blocks = [m for m in model.modules() if isinstance(m, CifsBlock)]
        for block in blocks:
            block.through_mask = True
        try:
            return self.adaptive_attack_loss(model, x, y)
        finally:
            for block in blocks:
                block.through_mask = False
