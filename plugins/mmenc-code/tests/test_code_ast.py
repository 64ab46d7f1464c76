"""The AST view: one-to-one flattening, syntax errors marked, deep trees without recursion."""

from __future__ import annotations

import tree_sitter

from mmenc_code.ast_view import flatten, language, markers, unflatten

CODE = '''
@cache
def area(r: float = 1.0) -> float:
    """Circle."""
    return 3.14159 * r ** 2  # pi r squared
'''


def as_nested(node):
    """tree-sitter's tree in unflatten's form (named non-terminals, leaf texts)."""
    if node.child_count == 0:
        return node.text.decode()
    children = []
    for child in node.children:
        sub = as_nested(child)
        if isinstance(sub, list):
            children.extend(sub)
        elif sub != "" and (not isinstance(sub, str) or sub.strip()):
            children.append(sub)
    if not node.is_named:
        return children
    return (node.type, children)


def test_flattening_is_one_to_one():
    flat = flatten(CODE)
    assert flat.errors == flat.missing == 0
    tree = tree_sitter.Parser(language("python")).parse(CODE.encode())
    assert unflatten(flat.tokens) == as_nested(tree.root_node)
    assert flat.tokens[0] == "<module,left>" and flat.tokens[-1] == "<module,right>"
    leaves = [t for t in flat.tokens if not (t.startswith("<") and t.endswith(("left>", "right>")))]
    # every code token in order (a comment or string is one leaf, spaces included)
    assert "".join("".join(leaf.split()) for leaf in leaves) == "".join(CODE.split())


def test_every_marker_is_in_the_marker_list():
    known = set(markers("python"))
    flat = flatten(CODE + "\nasync def g():\n    async with a as b:\n"
                   "        yield [x async for x in b]\n")
    assert {t for t in flat.tokens if t.endswith(("left>", "right>"))} <= known


def test_syntax_errors_are_marked_and_still_flattened():
    flat = flatten("def broken(:\n    return")
    assert flat.errors + flat.missing >= 1
    assert "<ERROR,left>" in flat.tokens or flat.missing
    unflatten(flat.tokens)  # still balanced


def test_deep_nesting_does_not_recurse():
    code = "x = " + "(" * 3000 + "1" + ")" * 3000
    flat = flatten(code)
    assert flat.tokens.count("<parenthesized_expression,left>") == 3000
