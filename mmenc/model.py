"""The base class of every catalogue model and mmenc's checkpoint format.

A saved model is a directory: ``model.safetensors`` (weights), ``config.json`` (recipe name,
configuration, tokenizer configurations, versions) and the tokenizers' own files. Loading it
reads JSON and safetensors only.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmenc.batch import Features, TokenBatch, Tokenizer
from mmenc.checkpoint import MAX_WEIGHTS_BYTES, check_finite, read_json, regular_file
from mmenc.conventions import as_item_list, convert_output, merge_aliases, pick_modality
from mmenc.errors import CheckpointError, ConfigError, EncodeError, UnknownNameError

FORMAT = "mmenc"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
MAX_CONFIG_BYTES = 16 << 20  # a config.json is read whole: larger ones are not configurations


class Encoder(nn.Module):
    """A model of the catalogue: tokenizers, towers, an optional fusion and projections.

    Subclasses implement :meth:`forward_features` and :meth:`embed`; the base class gives
    tokenization, ``encode``, gradient checkpointing and saving.

    Args:
        config: the configuration that rebuilds the same architecture (stored in config.json).
        tokenizers: one tokenizer per modality the model encodes.
    """

    directory: Path | None = None  # the folder it was loaded from (exports live there)
    # the catalogue name of the recipe that built the model: set by whoever names it
    # (mmenc.create_model, mmenc.load, a converter), saved in config.json
    recipe: str = ""

    def __init__(self, config: dict[str, Any], tokenizers: dict[str, Tokenizer]) -> None:
        super().__init__()
        self.config = dict(config)
        self.tokenizers = dict(tokenizers)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.tokenizers)

    # -- the model contract -----------------------------------------------------------------
    def forward_features(
        self, batch: TokenBatch, modality: str, output_hidden_states: bool = False
    ) -> Features:
        """Token states of one modality.

        Inputs:
            batch: a tokenized batch of ``modality``.
        Returns:
            :class:`Features` with ``hidden`` ``[b n d]``, its mask and ``pooled`` ``[b d]``.
        """
        raise NotImplementedError

    def embed(self, batch: TokenBatch, modality: str) -> Tensor:
        """Items of one modality in the shared space, ``[b e]``, not normalised."""
        raise NotImplementedError

    def forward(self, batch: TokenBatch, modality: str) -> Tensor:
        return self.embed(batch, modality)

    def check_modality(self, modality: str) -> None:
        if modality not in self.tokenizers:
            raise UnknownNameError(f"modality of {self.recipe}", modality, self.tokenizers)

    # -- raw items -> vectors -----------------------------------------------------------
    def tokenize(self, items: Sequence[Any], modality: str) -> TokenBatch:
        """Load and validate raw items with the modality's loader, then tokenize them."""
        from mmenc.registry import catalogue
        from mmenc.specs import resolve

        self.check_modality(modality)
        load = resolve(catalogue().get("modality", modality).loader)
        return self.tokenizers[modality]([load(item) for item in items])

    @torch.inference_mode()
    def encode(
        self,
        items: Any,
        modality: str | None = None,
        batch_size: int = 32,
        normalize: bool = True,
        dim: int | None = None,
        show_progress_bar: bool | None = None,
        *,
        backend: str = "torch",
        normalize_embeddings: bool | None = None,
        truncate_dim: int | None = None,
        convert_to_numpy: bool = False,
        convert_to_tensor: bool | None = None,
    ) -> Any:
        """Embed raw items of any modality of the model.

        sentence-transformers' keyword names are accepted beside mmenc's:
        ``normalize_embeddings`` (``normalize``), ``truncate_dim`` (``dim``),
        ``convert_to_numpy`` / ``convert_to_tensor`` (a tensor by default).

        Args:
            items: one raw item (a string, path, bytes, PIL image or audio array) or an
                iterable of them, validated by the modality's loader.
            modality: which of :attr:`modalities` the items are; may be left out for a model
                of one modality.
            batch_size: items per forward pass.
            normalize: L2-normalise the embeddings (after truncation to ``dim``).
            dim: keep the first ``dim`` dimensions (Matryoshka truncation).
            show_progress_bar: a tqdm bar; by default only for more than 4 batches on a terminal.
            backend: ``"torch"`` (eager), or ``"onnx"`` / ``"onnx-int8"``: the graphs that
                ``mmenc export`` wrote into the model's folder, run by ONNX Runtime.
        Returns:
            ``[len(items) e]`` float32 embeddings on the CPU, ``[e]`` for one item.
        """
        single, items = as_item_list(items)
        modality = pick_modality(modality, self.modalities, self.recipe)
        normalize, dim = merge_aliases(normalize, dim, normalize_embeddings, truncate_dim)
        self.check_modality(modality)
        run: Callable[[TokenBatch, str], Tensor] = self.embed
        if backend != "torch":
            from mmenc.export.runtime import onnx_runner

            run = onnx_runner(self, modality, backend)
        was_training = self.training
        self.eval()
        device = next(iter(self.parameters()), torch.empty(0)).device
        # batches of similar length waste less compute on padding; the order is restored below
        order = sorted(range(len(items)), key=lambda i: -len(items[i])) \
            if all(isinstance(x, str) for x in items) else list(range(len(items)))
        starts = range(0, len(items), batch_size)
        if show_progress_bar is None:
            show_progress_bar = len(starts) > 4 and os.isatty(2)
        if show_progress_bar:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"encode {modality}", unit="batch")  # type: ignore[assignment]
        out = []
        for start in starts:
            chunk = [items[i] for i in order[start : start + batch_size]]
            batch = self.tokenize(chunk, modality).to(device)
            out.append(run(batch, modality).float().cpu())
        self.train(was_training)
        if not out:
            raise ValueError("encode() got no items")
        emb = torch.empty_like(torch.cat(out))
        emb[torch.tensor(order)] = torch.cat(out)
        bad = (~torch.isfinite(emb).all(dim=1)).nonzero().flatten().tolist()
        if bad:
            shown = ", ".join(f"{i} ({_short(items[i])})" for i in bad[:4])
            more = f", ... ({len(bad)} in all)" if len(bad) > 4 else ""
            raise EncodeError(f"{self.recipe}: non-finite (NaN or Inf) embeddings for item "
                              f"{shown}{more}; the model's weights or these inputs overflow")
        if dim is not None:
            if not 0 < dim <= emb.shape[1]:
                raise ValueError(f"dim={dim} is outside 1..{emb.shape[1]}")
            emb = emb[:, :dim]
        emb = F.normalize(emb, dim=-1) if normalize else emb
        return convert_output(emb, single, convert_to_numpy, convert_to_tensor)

    def encode_text(self, texts: Any, normalize: bool = False, **kwargs: Any) -> Any:
        """open_clip's spelling: ``encode(texts, "text", normalize=normalize, ...)`` (raw
        strings in, not token ids; not normalised by default, as in open_clip)."""
        return self.encode(texts, "text", normalize=normalize, **kwargs)

    def encode_image(self, images: Any, normalize: bool = False, **kwargs: Any) -> Any:
        """open_clip's spelling: ``encode(images, "image", normalize=normalize, ...)`` (paths or
        PIL images in, not pixel tensors; not normalised by default, as in open_clip)."""
        return self.encode(images, "image", normalize=normalize, **kwargs)

    similarity_fn_name = "cosine"

    def similarity(self, a: Any, b: Any) -> Tensor:
        """sentence-transformers' ``model.similarity``: the cosine similarity ``[n m]`` of two
        sets of embeddings (or single ``[e]`` vectors)."""
        from mmenc.retrieval.search import similarity as score

        return score(a, b, self.similarity_fn_name)

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu"
                        ) -> Encoder:
        """A model saved by :meth:`save_pretrained` (the same as :func:`mmenc.load`)."""
        model = load(path, map_location)
        if not isinstance(model, cls):
            raise CheckpointError(f"{path}: holds a {type(model).__name__} "
                                  f"({model.recipe!r}), not a {cls.__name__}; use mmenc.load")
        return model

    # -- training helpers -----------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute layer activations in the backward pass to save memory."""
        for module in self.modules():
            switch = getattr(module, "set_grad_checkpointing", None)
            if module is not self and callable(switch):
                switch(enable)

    # -- checkpoint format ------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``model.safetensors``, ``config.json`` and tokenizer files into ``path``.

        A model without a recipe name (``recipe``, set by :func:`mmenc.create_model`,
        :func:`mmenc.load` and the converters) is a ConfigError and nothing is written: the
        folder could not be loaded, since loading builds the model from that recipe."""
        from safetensors.torch import save_model

        from mmenc import __version__

        path = Path(path)
        if not isinstance(self.recipe, str) or not self.recipe.strip():
            raise ConfigError(
                f"{path}: not saved: the {type(self).__name__} has no recipe name "
                f"(recipe={self.recipe!r}), so {CONFIG} could not name what to build; set "
                "model.recipe to its catalogue name, or build it with mmenc.create_model")
        path.mkdir(parents=True, exist_ok=True)
        for tok in self.tokenizers.values():
            tok.save(str(path))
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "recipe": self.recipe,
            "config": {**self.config,
                       "tokenizers": {m: t.config() for m, t in self.tokenizers.items()}},
            "versions": {
                "mmenc": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }
        with tempfile.NamedTemporaryFile(dir=path, suffix=".tmp", delete=False) as tmp:
            tmp_name = tmp.name
        save_model(self, tmp_name, metadata={"format": "pt", "recipe": self.recipe})
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path / WEIGHTS)
        (path / CONFIG).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return path


def _short(item: object) -> str:
    """A short label of a raw item for an error message."""
    label = f"<{len(item)} bytes>" if isinstance(item, bytes | bytearray) else repr(item)
    return label if len(label) <= 40 else label[:37] + "..."


def read_config(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a saved model, checked for the fields mmenc needs."""
    path = Path(path)
    meta = read_json(path / CONFIG, MAX_CONFIG_BYTES)  # a regular file only, its size checked
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path / CONFIG}: not an mmenc model (format={meta.get('format')!r}); "
            "import foreign checkpoints with `mmenc convert`"
        )
    for key, kind in (("recipe", str), ("config", dict)):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{path / CONFIG}: '{key}' must be a {kind.__name__}")
    return meta


def load(path: str | Path, map_location: str | torch.device = "cpu") -> Encoder:
    """Load a model saved by :meth:`Encoder.save_pretrained` (or ``mmenc convert``).

    Nothing in the folder is imported or called: ``config.json`` names catalogue entries only,
    and its sizes are checked, first each against a bound, then the whole architecture built
    on the ``meta`` device against the shapes in the weights' header, before anything is
    allocated (:mod:`mmenc.trust`).
    """
    from copy import deepcopy

    from safetensors import SafetensorError, safe_open

    from mmenc.registry import catalogue
    from mmenc.specs import resolve
    from mmenc.trust import build_skeleton, check_names, check_shapes, check_sizes, read_header

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory holding config.json and {WEIGHTS}")
    meta = read_config(path)
    config_file, weights = path / CONFIG, path / WEIGHTS
    try:
        spec = catalogue().get("model", meta["recipe"])
    except UnknownNameError as exc:
        raise CheckpointError(f"{config_file}: recipe: {exc}") from None
    check_sizes(meta["config"], str(config_file))
    check_names(meta["config"], str(config_file))
    regular_file(weights, MAX_WEIGHTS_BYTES, "weights file")
    header = read_header(weights)
    builder = resolve(spec.builder)

    def build() -> Encoder:
        from mmenc.factory import call_plugin

        try:
            return call_plugin(  # type: ignore[no-any-return]
                "model", spec.name, builder, (deepcopy(meta["config"]),), {"directory": path},
                returns=Encoder, config_error=CheckpointError, where=str(config_file))
        except CheckpointError as exc:
            message = str(exc)
            raise CheckpointError(message if str(path) in message
                                  else f"{config_file}: {message}") from None
        except UnknownNameError as exc:  # a catalogue name in the config that is not registered
            raise CheckpointError(f"{config_file}: config does not fit recipe "
                                  f"{meta['recipe']!r} (UnknownNameError: {exc})") from None
        except ConfigError as exc:  # a value a part (a tokenizer) refuses: the folder's fault
            raise CheckpointError(f"{config_file}: {exc}") from None

    skeleton = build_skeleton(build)
    check_shapes(skeleton, header, weights, config_file)
    if torch.get_default_device().type == "meta":  # a part of a model being checked: shapes only
        skeleton.recipe = spec.name
        return skeleton
    model = build()
    model.recipe = spec.name
    try:
        with safe_open(str(weights), framework="pt", device=str(map_location)) as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: cannot read weights ({exc})") from None
    check_finite(state, weights)
    _load_with_ties(model, state, str(weights))
    model.directory = path  # where exported graphs (onnx/) of these weights live
    return model.to(map_location)


def _load_with_ties(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Strict load that accepts tied parameters saved once (as safetensors' save_model does)."""
    from mmenc.checkpoint import fit_state_dict

    own = model.state_dict()
    by_storage: dict[tuple[int, int], list[str]] = {}
    for key, tensor in own.items():
        by_storage.setdefault((tensor.untyped_storage().data_ptr(), tensor.storage_offset()),
                              []).append(key)
    full = dict(state)
    for group in by_storage.values():
        present = [k for k in group if k in state]
        if present:
            for k in group:
                full.setdefault(k, state[present[0]])
    fit_state_dict(model, full, source)
