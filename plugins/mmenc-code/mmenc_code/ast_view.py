"""UniXcoder's AST view: a syntax tree flattened one-to-one into a token sequence.

A non-terminal node becomes a pair of marker tokens around its children, ``<kind,left>`` ...
``<kind,right>``; a leaf becomes its code text. The mapping is invertible (the markers bracket the
tree), so the sequence carries the whole tree. Parsing is tree-sitter's: code with syntax errors
still gives a tree, with ``ERROR`` nodes around the broken region and zero-width ``MISSING``
leaves (which contribute their marker pair and no text).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

# grammar name (a tokenizer's ``lang``, saved in config.json) -> its tree-sitter package; a
# name read from a file is looked up here, never turned into an import path
GRAMMARS = {lang: f"tree_sitter_{lang}"
            for lang in ("python", "java", "javascript", "go", "ruby", "php")}


@cache
def language(name: str = "python") -> Any:
    """The tree-sitter ``Language`` of a grammar package (``tree-sitter-<name>``).

    Raises:
        ValueError: ``name`` is not in :data:`GRAMMARS`, or its package is not installed.
    """
    import importlib

    import tree_sitter

    if not isinstance(name, str) or name not in GRAMMARS:
        raise ValueError(f"no tree-sitter grammar {name!r} (known: {', '.join(GRAMMARS)})")
    try:
        module = importlib.import_module(GRAMMARS[name])
    except ImportError:
        raise ValueError(f"no tree-sitter grammar for {name!r}: pip install "
                         f"tree-sitter-{name}") from None
    return tree_sitter.Language(module.language())


def markers(lang: str = "python") -> list[str]:
    """Every marker token the grammar can produce (two per named node kind), sorted."""
    grammar = language(lang)
    kinds = {grammar.node_kind_for_id(i) for i in range(grammar.node_kind_count)
             if grammar.node_kind_is_named(i) and grammar.node_kind_is_visible(i)}
    kinds |= {"ERROR"}
    return sorted(f"<{k},{side}>" for k in kinds for side in ("left", "right"))


class TooDeep(ValueError):
    """A syntax tree nested deeper than the depth :func:`flatten` was allowed."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(f"syntax tree nested deeper than {max_depth} levels")
        self.max_depth = max_depth


@dataclass(frozen=True)
class Flattened:
    """A flattened tree: its tokens, and how many ``ERROR`` / ``MISSING`` nodes it holds."""

    tokens: list[str]
    errors: int
    missing: int


def flatten(code: str, lang: str = "python", max_depth: int | None = None) -> Flattened:
    """Flatten the syntax tree of ``code`` (iteratively: deep trees do not recurse).

    Raises:
        TooDeep: a node lies more than ``max_depth`` levels below the root (the walk stops
            there: its cost is bounded by the depth, not by the whole tree).
    """
    import tree_sitter

    parser = tree_sitter.Parser(language(lang))
    tree = parser.parse(code.encode("utf-8"))
    tokens: list[str] = []
    errors = missing = 0
    stack: list[tuple[Any, bool, int]] = [(tree.root_node, False, 0)]
    while stack:
        node, closing, depth = stack.pop()
        if max_depth is not None and depth > max_depth:
            raise TooDeep(max_depth)
        if closing:
            tokens.append(f"<{node.type},right>")
            continue
        if node.is_missing:
            missing += 1
            tokens += [f"<{node.type},left>", f"<{node.type},right>"] if node.is_named else []
            continue
        if node.type == "ERROR":
            errors += 1
        if node.child_count == 0:
            text = (node.text or b"").decode("utf-8", "replace")
            if text.strip():
                tokens.append(text)
            continue
        if not node.is_named and node.type != "ERROR":
            # an anonymous node with children (rare): keep its children only
            stack.extend((child, False, depth + 1) for child in reversed(node.children))
            continue
        tokens.append(f"<{node.type},left>")
        stack.append((node, True, depth))
        stack.extend((child, False, depth + 1) for child in reversed(node.children))
    return Flattened(tokens, errors, missing)


def unflatten(tokens: list[str]) -> Any:
    """The tree a flattened sequence stands for, as nested ``(kind, [children])`` tuples with
    leaves as strings; raises ``ValueError`` on unbalanced markers."""
    stack: list[tuple[str, list[Any]]] = [("", [])]
    for token in tokens:
        if token.startswith("<") and token.endswith(",left>"):
            stack.append((token[1:-6], []))
        elif token.startswith("<") and token.endswith(",right>"):
            kind, children = stack.pop()
            if kind != token[1:-7] or not stack:
                raise ValueError(f"unbalanced marker {token!r}")
            stack[-1][1].append((kind, children))
        else:
            stack[-1][1].append(token)
    if len(stack) != 1:
        raise ValueError(f"{len(stack) - 1} marker(s) left open")
    return stack[0][1][0] if len(stack[0][1]) == 1 else stack[0][1]
