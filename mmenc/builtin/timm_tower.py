"""The ``timm`` tower kind: any timm image model as a tower of a tower encoder.

Configuration (a tower section of a model configuration)::

    {"kind": "timm", "model": "vit_tiny_patch16_224",     # a name of timm.list_models()
     "options": {"img_size": 32, "depth": 2}}             # keyword options of timm.create_model

The model is ``timm.create_model(model, pretrained=False, num_classes=0, **options)``; the
adapter gives :class:`~mmenc.batch.Features` with the tokens of timm's ``forward_features``
(a CNN's ``[b c h w]`` map becomes ``[b h*w c]`` tokens) and, as ``pooled``, timm's own
pooling: ``forward_head(tokens, pre_logits=True)`` (pooling ``"pooler"`` in the recipe).

The model name and the options are data: the name must be one timm lists, an option is a plain
value (a number, a string, a boolean or a list of numbers) and never one of timm's options that
read files or build something else (``pretrained*``, ``checkpoint_path``, ``features_only``, ...).

``pretrained_file`` (only when a model is created, never stored) loads timm's own weights from a
local ``.safetensors`` file through timm's ``pretrained_cfg_overlay=dict(file=PATH)``: the weights
of a timm model saved on this machine, since mmenc reaches no model hub. Other formats are
refused (they would be unpickled).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from mmenc.batch import Features, TokenBatch
from mmenc.errors import CheckpointError, ConfigError

KIND = "timm"
_OPTION = re.compile(r"^[a-z_][a-z0-9_]*$")
# timm options that load files, reach a hub or change what the model is; the adapter sets
# num_classes itself
REFUSED_OPTIONS = frozenset({
    "checkpoint_path", "cache_dir", "features_only", "feature_cfg", "feature_cls", "out_indices",
    "num_classes", "scriptable", "exportable", "no_jit", "model_cfg",
})
MAX_OPTION_INT = 1 << 16


def known_models() -> set[str]:
    """timm's model names (architectures, and architectures with a pretrained tag)."""
    import timm

    return set(timm.list_models()) | set(timm.list_models(pretrained=True))


def check_model_name(name: object, where: str = "model") -> str:
    """``name`` if timm lists it.

    Raises:
        ConfigError: naming ``where`` and up to three close timm names.
    """
    import difflib

    models = known_models()
    if isinstance(name, str) and name in models:
        return name
    close = difflib.get_close_matches(str(name), sorted(models), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ConfigError(f"{where}: {name!r} is not a timm model (timm.list_models()){hint}")


def _plain(value: object) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, int):
        return -MAX_OPTION_INT <= value <= MAX_OPTION_INT
    if isinstance(value, float):
        return math.isfinite(value)
    return False


def check_options(options: object, where: str = "options") -> dict[str, Any]:
    """The keyword options for ``timm.create_model``, checked (see the module docstring).

    Raises:
        ConfigError: naming the option and why it is refused.
    """
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: must be a mapping of timm keyword options, got "
                          f"{type(options).__name__}")
    for key, value in options.items():
        at = f"{where}.{key}"
        if not isinstance(key, str) or not _OPTION.match(key):
            raise ConfigError(f"{at}: not a keyword option name")
        if key in REFUSED_OPTIONS or key.startswith("pretrained"):
            raise ConfigError(f"{at}: this timm option is not taken from a configuration "
                              "(pretrained weights: pretrained_file when the model is created)")
        items = value if isinstance(value, list | tuple) else [value]
        if not all(_plain(v) and not isinstance(v, list | tuple) for v in items):
            raise ConfigError(f"{at}: must be a number, a string, a boolean or a list of them "
                              f"(integers within +-{MAX_OPTION_INT}), got {value!r:.60}")
    return dict(options)


def _tokens(x: Tensor) -> Tensor:
    """``[b n d]`` tokens from timm's features: a ``[b c h w]`` map becomes ``[b h*w c]``."""
    if x.dim() == 4:
        return x.flatten(2).transpose(1, 2)
    if x.dim() == 3:
        return x
    raise ValueError(f"timm features of shape {tuple(x.shape)} are neither [b n d] nor [b c h w]")


class TimmTower(nn.Module):
    """A timm model behind the tower protocol (:class:`mmenc.batch.Tower`).

    Args:
        model: a timm model created with ``num_classes=0``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def width(self) -> int:
        return int(self.model.num_features)  # type: ignore[arg-type]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)  # type: ignore[operator]

    def forward_features(self, batch: TokenBatch, *,
                         output_hidden_states: bool = False) -> Features:
        """Inputs: ``values`` pixels ``[b c H W]``. Returns: hidden ``[b n d]``, no mask,
        ``pooled`` ``[b d]`` (timm's ``forward_head(..., pre_logits=True)``) and, when asked,
        the token states of timm's ``forward_intermediates`` (without prefix tokens)."""
        if batch.values is None:
            raise ValueError("a timm tower reads pixels [b c H W], got a batch without values")
        hidden_states = None
        if output_hidden_states:
            intermediates = getattr(self.model, "forward_intermediates", None)
            if intermediates is None:
                raise ValueError(f"{type(self.model).__name__} gives no intermediate states "
                                 "(timm's forward_intermediates)")
            features, layers = intermediates(batch.values)
            hidden_states = tuple(_tokens(t) for t in layers)
        else:
            features = self.model.forward_features(batch.values)  # type: ignore[operator]
        pooled = self.model.forward_head(features, pre_logits=True)  # type: ignore[operator]
        return Features(_tokens(features), None, pooled, hidden_states)


def _pretrained_file(path: object, where: str) -> Path:
    from mmenc.checkpoint import MAX_WEIGHTS_BYTES, regular_file

    if not isinstance(path, str | Path):
        raise ConfigError(f"{where}: must be the path of a .safetensors file, got {path!r:.60}")
    file = Path(path)
    if file.suffix != ".safetensors":
        raise CheckpointError(f"{file}: timm weights are read from .safetensors files only "
                              "(other formats would be unpickled)")
    regular_file(file, MAX_WEIGHTS_BYTES, "timm weights file")
    return file


def timm_tower(config: dict[str, Any], tokenizer: object = None) -> TimmTower:
    """Factory of the ``timm`` kind (see the module docstring)."""
    import timm

    unknown = sorted(set(config) - {"model", "options", "pretrained_file"})
    if unknown:
        raise ConfigError(f"timm tower: unknown key(s) {', '.join(unknown)} (known: model, "
                          "options, pretrained_file)")
    name = check_model_name(config.get("model"), "timm tower: model")
    options = check_options(config.get("options"), "timm tower: options")
    file = config.get("pretrained_file")
    if file is None:
        model = timm.create_model(name, pretrained=False, num_classes=0, **options)
    else:
        path = _pretrained_file(file, "timm tower: pretrained_file")
        try:
            model = timm.create_model(name, pretrained=True, num_classes=0,
                                      pretrained_cfg_overlay={"file": str(path)}, **options)
        except RuntimeError as exc:  # the file's tensors do not fit the model
            raise CheckpointError(f"{path}: does not hold {name} weights with these options "
                                  f"({exc})") from None
    head = getattr(model, "head_hidden_size", None)
    if isinstance(head, int) and head != model.num_features:
        raise ConfigError(f"timm tower: {name} pools to {head} features but its tokens have "
                          f"{model.num_features}; pick a model whose pooled and token widths "
                          "agree")
    return TimmTower(model)
