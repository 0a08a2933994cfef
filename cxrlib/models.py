"""Model registry: torchvision backbones with the head replaced for a task, weights, freezing, checkpoints.

Each architecture names its classification head, its stages in forward order (what ``model.freeze`` may
name) and its Grad-CAM layers, shallow to deep (for ResNets the five layers of the original figure).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torchvision
from torch import hub, nn

from . import io
from .config import IMAGENET_WEIGHTS
from .errors import ArtifactError, ConfigError

WEIGHT_CHOICES = "imagenet | imagenet_v1 | none | /path/to/state_dict.pth"


@dataclass(frozen=True)
class ArchSpec:
    head: str  # dotted name of the module replaced for the task
    stages: tuple[str, ...]  # top-level blocks in forward order; model.freeze may name one
    cam: tuple[tuple[str, str], ...]  # (label, dotted module name), shallow -> deep


_RESNET = ArchSpec(
    head="fc",
    stages=("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"),
    cam=(("relu", "relu"), ("layer1", "layer1"), ("layer2", "layer2"), ("layer3", "layer3"), ("layer4", "layer4")),
)

ARCHS: dict[str, ArchSpec] = {
    "resnet10": _RESNET,  # torchvision's ResNet with one BasicBlock per stage: no ImageNet weights, for from scratch
    "resnet18": _RESNET,
    "resnet34": _RESNET,
    "resnet50": _RESNET,
    "resnet101": _RESNET,
    "resnet152": _RESNET,
    "densenet121": ArchSpec(
        head="classifier",
        stages=tuple(f"features.{n}" for n in (
            "conv0", "norm0", "relu0", "pool0", "denseblock1", "transition1", "denseblock2", "transition2",
            "denseblock3", "transition3", "denseblock4", "norm5")),
        cam=(("relu0", "features.relu0"), ("denseblock1", "features.denseblock1"),
             ("denseblock2", "features.denseblock2"), ("denseblock3", "features.denseblock3"),
             ("norm5", "features.norm5")),
    ),
    "efficientnet_b0": ArchSpec(
        head="classifier",
        stages=tuple(f"features.{i}" for i in range(9)),
        cam=(("stem", "features.0"), ("stage2", "features.2"), ("stage3", "features.3"),
             ("stage5", "features.5"), ("head_conv", "features.8")),
    ),
}


# architectures torchvision's ResNet class builds but its model registry does not name
_UNREGISTERED = {
    "resnet10": lambda: torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1]),
}


def _spec(arch: str) -> ArchSpec:
    if arch not in ARCHS:
        raise ConfigError(f"model.arch = {arch!r} is not supported (known: {sorted(ARCHS)})")
    return ARCHS[arch]


def cam_layers(arch: str) -> dict[str, str]:
    """Grad-CAM layers of ``arch``: {label: dotted module name}, ordered shallow -> deep."""
    return dict(_spec(arch).cam)


def head_name(arch: str) -> str:
    """Dotted name of the classification head that ``build_model`` replaces."""
    return _spec(arch).head


def get_module(model: nn.Module, dotted: str) -> nn.Module:
    return model.get_submodule(dotted)


def set_module(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


class GroupedLinear(nn.Linear):
    """A linear head with one output per fine label (``train.fine_labels``) that predicts their groups (the task
    classes): in eval mode each group's logit is the log-sum-exp of its members' logits, so the softmax over
    groups is the sum of the members' softmax probabilities. In training mode it returns the fine logits, which
    the loss is taken on. ``groups[j]`` is the group of fine output j; every group 0..G-1 needs a member."""

    def __init__(self, in_features: int, groups: Sequence[int]):
        groups = [int(g) for g in groups]
        n = max(groups, default=-1) + 1
        if n < 2 or sorted(set(groups)) != list(range(n)):
            raise ValueError(f"head groups must cover 0..G-1 with G >= 2, got {groups}")
        super().__init__(in_features, len(groups))
        member = torch.zeros((n, len(groups)), dtype=torch.bool)
        member[torch.tensor(groups), torch.arange(len(groups))] = True
        # (G, F): fine output j belongs to group g. Boolean, so a weight average (train.ema_decay) leaves it be
        self.register_buffer("member", member, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = nn.functional.linear(x, self.weight, self.bias)
        if self.training:
            return z
        return torch.logsumexp(z.unsqueeze(1).masked_fill(~self.member, float("-inf")), dim=2)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, groups={self.member.to(torch.int64).argmax(0).tolist()}"


def _new_head(old: nn.Module, num_classes: int, groups: Optional[Sequence[int]] = None) -> nn.Module:
    if isinstance(old, nn.Linear):
        return GroupedLinear(old.in_features, groups) if groups else nn.Linear(old.in_features, num_classes)
    if isinstance(old, nn.Sequential):  # efficientnet: Dropout + Linear
        layers = [_new_head(m, num_classes, groups) if isinstance(m, nn.Linear) else copy.deepcopy(m) for m in old]
        return nn.Sequential(*layers)
    raise TypeError(f"cannot replace head of type {type(old).__name__}")  # pragma: no cover - registry bug


def build_model(arch: str, num_classes: int, weights: str = "none", freeze: str = "none",
                head_groups: Optional[Sequence[int]] = None) -> nn.Module:
    """A torchvision ``arch`` with a ``num_classes`` head.

    ``weights``: ``imagenet`` (torchvision's DEFAULT weights, cached in TORCH_HOME; may be newer than a
    published study), ``imagenet_v1`` (the original IMAGENET1K_V1 release, pinned), ``none`` (random init,
    from torch's global RNG) or a path to a local state dict (torchvision's, or a cxrlib checkpoint).
    ``freeze``: ``none``, ``backbone`` (all but the head) or a stage name up to which parameters are frozen.
    Frozen modules are listed in ``model.cxr_frozen`` and kept in eval mode by ``set_train_mode``.
    ``head_groups``: the head is a ``GroupedLinear`` with one output per entry (its class index): trained on
    fine labels, it predicts the ``num_classes`` classes.
    """
    spec = _spec(arch)
    if num_classes < 2:
        raise ConfigError(f"a model needs at least two classes, got {num_classes}")
    if head_groups is not None and max(head_groups, default=-1) + 1 != num_classes:
        raise ValueError(f"head_groups {list(head_groups)} do not name {num_classes} classes")
    weights = str(weights)
    model = _UNREGISTERED[arch]() if arch in _UNREGISTERED else torchvision.models.get_model(arch, weights=None)
    if weights in IMAGENET_WEIGHTS:
        model.load_state_dict(_imagenet_state_dict(arch, weights))
    set_module(model, spec.head, _new_head(get_module(model, spec.head), num_classes, head_groups))
    if weights not in (*IMAGENET_WEIGHTS, "none"):
        _load_local_weights(model, spec, arch, Path(weights))
    model.cxr_arch = arch
    model.cxr_frozen = _freeze(model, spec, arch, freeze)
    return model


def imagenet_weights(arch: str, name: str = "imagenet"):
    """The torchvision weights enum member that ``model.weights = name`` (imagenet | imagenet_v1) selects."""
    if arch in _UNREGISTERED:
        raise ConfigError(f"model.weights={name}: torchvision publishes no ImageNet weights for {arch}; train it "
                          "from scratch (model.weights=none) or give a local state dict")
    enum = torchvision.models.get_model_weights(arch)
    member = IMAGENET_WEIGHTS[name]
    if not hasattr(enum, member):
        raise ConfigError(f"model.weights={name}: torchvision has no {member} weights for {arch}")
    return getattr(enum, member)


def _imagenet_state_dict(arch: str, name: str = "imagenet") -> dict[str, torch.Tensor]:
    default = imagenet_weights(arch, name)
    try:
        return hub.load_state_dict_from_url(default.url, progress=False, check_hash=True)
    except Exception as exc:  # URLError, HTTPError, SSL, hash mismatch: all mean "not available here"
        home = hub.get_dir()
        fname = os.path.basename(default.url)
        raise ConfigError(
            f"model.weights={name}: cannot download {default} ({type(exc).__name__}: {exc}). "
            f"Either copy {fname} into {home}/checkpoints/ (or set TORCH_HOME) on a machine without internet, "
            f"pass a local file with model.weights=/path/to/{arch}.pth, "
            f"or train from scratch with model.weights=none (use a from-scratch recipe such as params/cpu.yaml)."
        ) from exc


def _load_local_weights(model: nn.Module, spec: ArchSpec, arch: str, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(
            f"model.weights = {str(path)!r}: no such file (expected {WEIGHT_CHOICES})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"model.weights = {str(path)!r}: not a readable PyTorch state dict ({exc})") from exc
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"model.weights = {str(path)!r}: not a state dict (a mapping of parameter tensors)")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from a DDP wrapper
    own = model.state_dict()
    head_prefix = spec.head + "."
    # A head of another class count (ImageNet's 1000, another task's) is dropped: the new head stays random.
    state = {k: v for k, v in state.items()
             if not (k.startswith(head_prefix) and k in own and own[k].shape != v.shape)}
    missing = [k for k in own if k not in state and not k.startswith(head_prefix)]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        what = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                else f"shape mismatch at {wrong[:3]}")
        raise ConfigError(
            f"model.weights = {str(path)!r}: does not fit model.arch={arch} "
            f"({what}; {len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} mismatched keys)")
    model.load_state_dict(state, strict=False)


def _freeze(model: nn.Module, spec: ArchSpec, arch: str, freeze: str) -> list[str]:
    if freeze == "none":
        return []
    if freeze == "backbone":
        frozen = [name for name, _ in model.named_children() if name != spec.head.split(".")[0]]
    elif freeze in spec.stages:
        frozen = list(spec.stages[: spec.stages.index(freeze) + 1])
    else:
        raise ConfigError(
            f"model.freeze = {freeze!r} is not none, backbone or a stage of {arch} (stages: {list(spec.stages)})")
    for name in frozen:
        for p in get_module(model, name).parameters():
            p.requires_grad_(False)
    return frozen


def set_train_mode(model: nn.Module) -> nn.Module:
    """``model.train()``, except frozen modules stay in eval mode (their BatchNorm statistics do not move)."""
    model.train()
    for name in getattr(model, "cxr_frozen", []):
        get_module(model, name).eval()
    return model


def split_backbone(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(backbone, head): a copy of ``model`` whose head is the identity (it returns pooled features), and the head itself."""
    name = head_name(model.cxr_arch)
    backbone = copy.deepcopy(model)
    set_module(backbone, name, nn.Identity())
    return backbone, get_module(model, name)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel, torch.compile and train.speed.CompiledOrEager wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "eager", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def save_checkpoint(path: str | os.PathLike, model: nn.Module | dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``{"state_dict", **meta}`` atomically; ``model`` is a module or its state dict, ``meta`` holds arch,
    classes, resize, image_size, epoch, params (and head_groups, fine_classes for a ``GroupedLinear`` head)."""
    required = ("arch", "classes", "resize", "image_size", "epoch", "params")
    missing = [k for k in required if k not in meta]
    if missing:
        raise ValueError(f"checkpoint meta lacks {missing}")
    weights = model if isinstance(model, dict) else unwrap(model).state_dict()
    state = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    with io.atomic_path(path) as tmp:
        torch.save({"state_dict": state, **meta}, tmp)
    return Path(path)


def set_checkpoint_meta(path: str | os.PathLike, **items: Any) -> Path:
    """Add or replace meta entries of a checkpoint written by ``save_checkpoint`` (atomically; weights kept)."""
    path = Path(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise ArtifactError(f"{path}: not a cxrlib checkpoint (needs state_dict)")
    reserved = sorted(set(items) & {"state_dict", "arch", "classes", "head_groups", "fine_classes"})
    if reserved:
        raise ValueError(f"set_checkpoint_meta: {reserved} cannot be changed")
    with io.atomic_path(path) as tmp:
        torch.save({**obj, **items}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode on ``device``, meta) from a checkpoint written by ``save_checkpoint``."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found (has this fold been trained?)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(f"{path}: unreadable checkpoint ({exc})") from exc
    if not isinstance(obj, dict) or "state_dict" not in obj or "arch" not in obj or "classes" not in obj:
        raise ArtifactError(f"{path}: not a cxrlib checkpoint (needs state_dict, arch, classes)")
    return model_from_checkpoint(obj, device), {k: v for k, v in obj.items() if k != "state_dict"}


def model_from_checkpoint(obj: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """The model in eval mode on ``device`` from a checkpoint's contents (state_dict, arch, classes, head_groups)."""
    model = build_model(obj["arch"], len(obj["classes"]), weights="none", head_groups=obj.get("head_groups"))
    model.load_state_dict(obj["state_dict"])
    return model.to(device).eval()


def model_cost(arch: str, num_classes: int, image_size: int) -> dict[str, float]:
    """Parameters and multiply-adds of one forward pass at ``image_size`` (convolutions and linear layers)."""
    model = build_model(arch, num_classes, weights="none").eval()
    macs = 0

    def count(module: nn.Module, inputs, output) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs += output.numel() * kernel
        elif isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
    return {"parameters": float(sum(p.numel() for p in model.parameters())), "macs": float(macs)}
