"""The whole plugin contract: every hook a plugin may implement.

A plugin is a module (usually exposed through the ``mmenc`` entry-point group) with functions
decorated by :data:`hookimpl` and named after these specs. Each hook is called once per plugin,
when the catalogue is first built (the first ``mmenc.catalogue()`` call in a process, or a
CLI command that needs it), with a ``register`` callback. A plugin calls ``register(spec)``
once per thing it provides; the core records which plugin registered what. A hook that
registers nothing simply returns; its return value is ignored (``None`` is the norm).

Specs point at code with ``"module:attribute"`` strings, so registering must stay cheap:
import heavy dependencies (torchaudio, symusic, tree-sitter, ...) inside the targets,
never at the top of the module that holds the hooks.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from mmenc.specs import (
    CleanerSpec,
    CommandSpec,
    ConverterSpec,
    FusionSpec,
    ModalitySpec,
    ModelSpec,
    ObjectiveSpec,
    ParitySpec,
    TokenizerSpec,
    TowerSpec,
)

PROJECT = "mmenc"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def mmenc_register_modalities(register: Callable[[ModalitySpec], None]) -> None:
    """Register modalities: a name, how to load and validate a raw item, example items.

    Called once when the catalogue is built. ``register`` takes a :class:`ModalitySpec`.
    """


@hookspec
def mmenc_register_tokenizers(register: Callable[[TokenizerSpec | CleanerSpec], None]) -> None:
    """Register tokenizers: raw items of one modality -> ``TokenBatch``.

    Called once when the catalogue is built, after modalities. ``register`` takes a
    :class:`TokenizerSpec` (its modality may come from another plugin) or a
    :class:`CleanerSpec` (a text cleaner that tokenizer configurations name by catalogue name).
    """


@hookspec
def mmenc_register_fusions(register: Callable[[FusionSpec], None]) -> None:
    """Register fusions: how hidden states of several modalities are combined.

    Called once when the catalogue is built. ``register`` takes a :class:`FusionSpec`.
    """


@hookspec
def mmenc_register_towers(register: Callable[[TowerSpec], None]) -> None:
    """Register tower kinds: modules that turn a batch of one modality into token states
    (``forward_features(batch, *, output_hidden_states=False) -> Features``).

    Called once when the catalogue is built. ``register`` takes a :class:`TowerSpec`; a model
    configuration names the kind of each tower (``"kind": NAME``).
    """


@hookspec
def mmenc_register_objectives(register: Callable[[ObjectiveSpec], None]) -> None:
    """Register training objectives (contrastive, masked modelling, matching, ...).

    Called once when the catalogue is built. ``register`` takes an :class:`ObjectiveSpec`; one
    whose target is a class following :class:`mmenc.objectives.protocol.Objective` (``name``,
    ``arity``, ``params``, ``step(model, batches, generator)``) is one ``mmenc pretrain`` trains.
    """


@hookspec
def mmenc_register_models(
    register: Callable[[ModelSpec | ConverterSpec | ParitySpec], None],
) -> None:
    """Register model recipes with their checkpoint converters and parity mappings.

    Called once when the catalogue is built. ``register`` takes a :class:`ModelSpec` (a named
    recipe), a :class:`ConverterSpec` (``mmenc convert --from FORMAT``) or a
    :class:`ParitySpec` (how ``mmenc parity`` computes a fixture's outputs).
    """


@hookspec
def mmenc_register_commands(register: Callable[[CommandSpec], None]) -> None:
    """Register sub-commands of the ``mmenc`` CLI.

    Called when the CLI starts. ``register`` takes a :class:`CommandSpec` whose target is a
    ``click.Command``; it is imported only when that sub-command runs.
    """
