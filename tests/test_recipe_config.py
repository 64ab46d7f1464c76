"""mmenc.recipe_config: a frozen dataclass read from a mapping, every key and type checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from mmenc.errors import ConfigError
from mmenc.recipe_config import RecipeConfig


@dataclass(frozen=True)
class Head:
    dim: int
    kind: Literal["linear", "mlp"] = "linear"

    def __post_init__(self) -> None:
        if self.dim % 2:
            raise ValueError(f"dim must be even, got {self.dim}")


@dataclass(frozen=True, kw_only=True)
class Recipe(RecipeConfig):
    towers: dict[str, dict[str, Any]]
    head: Head
    order: tuple[str, ...] = ("text", "image")
    temp: float = 0.07
    pretraining: bool = False
    embed_dim: int | None = None
    seed: int = 0
    mask_token_id: int | None = None
    pooling: dict[str, str] = field(default_factory=dict)


GOOD = {"towers": {"text": {"kind": "text"}}, "head": {"dim": 8}, "order": ["image", "text"],
        "temp": 1, "embed_dim": None}


def test_a_mapping_reads_into_the_dataclass_and_back() -> None:
    typed = Recipe.read(GOOD)
    assert typed.head == Head(8) and typed.order == ("image", "text")
    assert typed.temp == 1.0 and isinstance(typed.temp, float) and typed.embed_dim is None
    written = typed.to_dict()
    assert written["order"] == ["image", "text"] and written["head"] == {"dim": 8,
                                                                         "kind": "linear"}
    assert Recipe.read(written) == typed
    assert {k: written[k] for k in GOOD} == {**GOOD, "temp": 1.0,
                                             "head": {"dim": 8, "kind": "linear"}}


@pytest.mark.parametrize("change,message", [
    ({"tmep": 0.1}, r"config\.tmep: unknown key; did you mean 'temp'\? \(known: towers, head"),
    ({"head": {"dim": 8, "knid": "mlp"}}, r"config\.head\.knid: unknown key; did you mean 'kind'"),
    ({"head": {"dim": 8, "kind": "conv"}}, r"config\.head\.kind: expected one of 'linear', 'mlp'"),
    ({"head": {"dim": 7}}, r"config\.head: dim must be even, got 7"),
    ({"head": 8}, r"config\.head: expected a mapping, got 8"),
    ({"pretraining": "yes"}, r"config\.pretraining: expected true or false"),
    ({"seed": True}, r"config\.seed: expected an integer, got True"),
    ({"embed_dim": True}, r"config\.embed_dim: a size must be an integer, got True"),
    ({"embed_dim": 1 << 30}, r"config\.embed_dim: 1073741824 is outside 1\.\.65536"),
    ({"temp": float("nan")}, r"config\.temp: nan is not a finite number"),
    ({"order": "text"}, r"config\.order: expected a list, got 'text'"),
    ({"order": ["text", 3]}, r"config\.order\[1\]: expected a string, got 3"),
    ({"towers": {"text": 3}}, r"config\.towers\.text: must be a mapping, got int 3"),
    ({"pooling": 3}, r"config\.pooling: expected a mapping, got 3"),
    ({"pooling": {"text": None}}, r"config\.pooling\.text: expected a string, got None"),
    ({"mask_token_id": -1}, r"config\.mask_token_id: token id -1 is outside"),
])
def test_a_malformed_mapping_is_a_config_error_naming_the_key(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^model\.json: {message}"):
        Recipe.read({**GOOD, **change}, "model.json")


def test_a_missing_required_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^config\.head: required key is missing$"):
        Recipe.read({"towers": {}})
