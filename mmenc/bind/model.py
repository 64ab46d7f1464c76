"""The bound model: a frozen hub and one tower per other modality, in one space.

Files (a folder, loaded by :func:`mmenc.load` through the ``bound`` recipe)::

    config.json                 recipe "bound": hub spec, tower modalities, Matryoshka dims
    model.safetensors           what the bound model itself owns: the hub-space rotation; its
                                metadata holds the sha256 of every part's weights, so a store
                                made with the model notices when any part changes
    hub/                        the hub (any mmenc model folder)
    towers/<modality>/          one tower each (encoder/, projection.safetensors, tower.json)

Adding a modality writes ``towers/<new>/`` and the two top files; the other towers' files are
left as they are.

The space is the hub's, turned by a fixed rotation (the principal axes of the hub's training
texts, computed once) so that the first dimensions carry the most variance: the hub side then
keeps its ranking under Matryoshka truncation, and towers are trained to match those prefixes.
The rotation is orthogonal, so full-width similarities are the hub's own.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmenc.batch import Features, TokenBatch, Tokenizer
from mmenc.bind.towers import EncoderTower, load_tower
from mmenc.errors import CheckpointError, ConfigError
from mmenc.model import CONFIG, FORMAT, FORMAT_VERSION, WEIGHTS, Encoder

RECIPE = "bound"
HUB_DIR = "hub"
TOWERS_DIR = "towers"
_PARTS = ("hub.", "towers.")


class BoundEncoder(Encoder):
    """A hub and towers meeting in the hub's (rotated) space.

    Args:
        config: ``{"hub": spec, "hub_dim": int, "anchor": "text", "dims": [32, 64, ...],
            "towers": [modality, ...]}``.
        hub: the frozen hub model.
        towers: bound modality -> tower (never a modality the hub encodes).
        rotation: ``[hub_dim hub_dim]`` orthogonal matrix (identity when None).
    """

    rotation: Tensor  # a buffer
    recipe = RECIPE  # the one recipe of this class, whoever builds it

    def __init__(self, config: dict[str, Any], hub: Encoder,
                 towers: dict[str, EncoderTower], rotation: Tensor | None = None) -> None:
        clash = set(towers) & set(hub.modalities)
        if clash:
            raise ConfigError(f"towers {sorted(clash)} duplicate modalities the hub encodes")
        tokenizers: dict[str, Tokenizer] = dict(hub.tokenizers)
        tokenizers.update({m: t.tokenizer for m, t in towers.items()})
        super().__init__(config, tokenizers)
        self.hub = hub
        for p in hub.parameters():
            p.requires_grad_(False)
        self.towers = nn.ModuleDict(towers)
        dim = int(config["hub_dim"])
        self.register_buffer("rotation", torch.eye(dim) if rotation is None else rotation.float())
        self.config["towers"] = list(towers)

    @property
    def hub_dim(self) -> int:
        return int(self.config["hub_dim"])

    @property
    def dims(self) -> list[int]:
        """Matryoshka widths, the full one last."""
        return sorted({*map(int, self.config.get("dims") or []), self.hub_dim})

    def train(self, mode: bool = True) -> BoundEncoder:
        super().train(mode)
        self.hub.eval()  # frozen: no dropout, no batch statistics
        return self

    def forward_features(self, batch: TokenBatch, modality: str,
                         output_hidden_states: bool = False) -> Features:
        self.check_modality(modality)
        if modality in self.towers:
            return self.towers[modality].forward_features(  # type: ignore[no-any-return,operator]
                batch, output_hidden_states=output_hidden_states)
        return self.hub.forward_features(batch, modality, output_hidden_states)

    def embed(self, batch: TokenBatch, modality: str) -> Tensor:
        self.check_modality(modality)
        if modality in self.towers:
            return self.towers[modality](batch)  # type: ignore[no-any-return]
        return self.hub_embed(batch, modality)

    def hub_embed(self, batch: TokenBatch, modality: str) -> Tensor:
        """The hub's embeddings, unit length, in the rotated space."""
        with torch.no_grad():
            emb = torch.nn.functional.normalize(self.hub.embed(batch, modality).float(), dim=-1)
        return emb @ self.rotation

    def add_tower(self, tower: EncoderTower) -> None:
        if tower.modality in self.hub.modalities or tower.modality in self.towers:
            raise ConfigError(f"the bound model already encodes {tower.modality!r}")
        self.towers[tower.modality] = tower
        self.tokenizers[tower.modality] = tower.tokenizer
        self.config["towers"] = list(self.towers)

    # -- weights: only the bound model's own tensors; the parts have their own files ----------
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        full = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        for key in [k for k in full if k.startswith(tuple(prefix + p for p in _PARTS))]:
            del full[key]
        return full  # type: ignore[no-any-return]

    def load_state_dict(self, state_dict: Any, strict: bool = True,
                        assign: bool = False) -> Any:
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith(_PARTS)]
        if strict and (missing or result.unexpected_keys):
            raise CheckpointError(f"bound model weights: missing {missing}, unexpected "
                                  f"{result.unexpected_keys}")
        return result

    # -- files ----------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, parts: Iterable[str] | None = None) -> Path:
        """Write the model; ``parts`` limits which parts are (re)written (``"hub"`` and tower
        modalities; None: all); the two top files are always written."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        wanted = set(parts) if parts is not None else {"hub", *self.towers}
        if "hub" in wanted:
            self.hub.save_pretrained(path / HUB_DIR)
        for modality, tower in self.towers.items():
            if modality in wanted:
                tower.save(path / TOWERS_DIR / modality)  # type: ignore[operator]
        self._write_top(path)
        return path

    def part_digests(self, path: Path) -> dict[str, str]:
        from mmenc.retrieval.store import sha256_file

        digests = {"hub": sha256_file(path / HUB_DIR / WEIGHTS)}
        for m in self.towers:
            folder = path / TOWERS_DIR / m
            digests[f"tower:{m}"] = sha256_file(folder / "encoder" / WEIGHTS)
            digests[f"projection:{m}"] = sha256_file(folder / "projection.safetensors")
        return digests

    def _write_top(self, path: Path) -> None:
        from safetensors.torch import save_file

        from mmenc import __version__

        missing = [m for m in self.towers if not (path / TOWERS_DIR / m / "tower.json").is_file()]
        if missing or not (path / HUB_DIR / CONFIG).is_file():
            raise CheckpointError(f"{path}: parts not written yet: {missing or ['hub']}")
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "recipe": RECIPE,
                "config": self.config,
                "versions": {"mmenc": __version__, "torch": torch.__version__,
                             "python": platform.python_version()}}
        with tempfile.NamedTemporaryFile(dir=path, suffix=".tmp", delete=False) as tmp:
            tmp_name = tmp.name
        save_file({"rotation": self.rotation.detach().contiguous().cpu()}, tmp_name,
                  metadata={"format": "pt", "recipe": RECIPE,
                            "parts": json.dumps(self.part_digests(path), sort_keys=True)})
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path / WEIGHTS)
        (path / CONFIG).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def build_bound(config: dict[str, Any], directory: Path | None = None) -> BoundEncoder:
    """The builder of the ``bound`` recipe: parts read from ``directory`` (a saved model), or,
    without one, a new model whose hub is built from ``config["hub"]`` and towers from
    ``config["tower_specs"]``."""
    from mmenc.bind.hubs import build_hub
    from mmenc.bind.towers import build_tower

    towers_cfg = config.get("towers") or []
    if not isinstance(towers_cfg, list) or not all(isinstance(m, str) for m in towers_cfg):
        raise ConfigError("bound model: 'towers' must be a list of modality names")
    if directory is not None:
        from mmenc.model import load

        directory = Path(directory)
        hub = load(directory / HUB_DIR)
        towers = {}
        for m in towers_cfg:
            tower = load_tower(directory / TOWERS_DIR / m)
            if tower.modality != m:
                raise CheckpointError(f"{directory / TOWERS_DIR / m}: holds a "
                                      f"{tower.modality!r} tower")
            towers[m] = tower
    else:
        hub, parsed = build_hub(config.get("hub"))
        config = {**config, "hub": parsed}
        specs = config.get("tower_specs") or {}
        config["hub_dim"] = config.get("hub_dim") or hub_width(hub)
        towers = {m: build_tower(m, s, int(config["hub_dim"])) for m, s in specs.items()}
    config = {k: v for k, v in config.items() if k != "tower_specs"}
    config.setdefault("anchor", "text")
    if "hub_dim" not in config:
        config["hub_dim"] = hub_width(hub)
    return BoundEncoder(config, hub, towers)


def hub_width(hub: Encoder) -> int:
    """The hub's embedding width, measured on one text."""
    anchor = "text" if "text" in hub.modalities else hub.modalities[0]
    from mmenc.registry import catalogue
    from mmenc.specs import resolve

    example = resolve(catalogue().get("modality", anchor).example)()[:1]
    with torch.no_grad():
        return int(hub.embed(hub.tokenize(example, anchor).to("cpu"), anchor).shape[-1])
