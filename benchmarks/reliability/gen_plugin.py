"""Broken plugins: installed as entry points of a throw-away distribution on ``sys.path``.

Each case writes a plugin module and its ``.dist-info`` into a fresh folder; the worker puts the
folder on ``sys.path``, rebuilds the catalogue and uses what the plugin registered.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

MUTATIONS = ("valid", "import_error", "import_runtime_error", "import_system_exit",
             "import_syntax_error", "import_recursion", "hook_raises", "hook_system_exit",
             "hook_no_register", "unknown_hook", "register_wrong_type", "bad_spec_name",
             "target_nowhere", "target_attribute_missing", "target_not_callable",
             "config_nowhere", "builder_raises", "builder_system_exit", "builder_returns_none",
             "duplicate_builtin", "entry_point_nowhere", "entry_point_attribute",
             "many_registrations")
HEAVY = ("many_registrations",)
"""Mutations that cost seconds per input: left out of quick runs."""

HEADER = ("from mmenc.hookspecs import hookimpl\n"
          "from mmenc.specs import ModelSpec\n")
TEXT = "'mmenc.builtin.recipes:TEXT_TINY'"
BUILD = "'mmenc.builtin.towers:build_tower_encoder'"


def _model(name: str, builder: str = BUILD, config: str = TEXT) -> str:
    return (f"@hookimpl\ndef mmenc_register_models(register):\n"
            f"    register(ModelSpec({name!r}, ('text',), {builder}, {config}, tiny=True))\n")


def _body(mutation: str, module: str, model: str) -> tuple[str, dict[str, str]]:
    """The plugin module's source and extra modules it needs."""
    extra: dict[str, str] = {}
    if mutation == "valid":
        return HEADER + _model(model), extra
    if mutation == "import_error":
        return "raise ImportError('needs libfoo')\n", extra
    if mutation == "import_runtime_error":
        return "raise RuntimeError('initialisation failed')\n", extra
    if mutation == "import_system_exit":
        return "import sys\nsys.exit(3)\n", extra
    if mutation == "import_syntax_error":
        return "def broken(:\n", extra
    if mutation == "import_recursion":
        return "def f():\n    return f()\nf()\n", extra
    if mutation == "hook_raises":
        return HEADER + "@hookimpl\ndef mmenc_register_models(register):\n" \
            "    raise ValueError('hook failed')\n", extra
    if mutation == "hook_system_exit":
        return HEADER + "@hookimpl\ndef mmenc_register_models(register):\n" \
            "    raise SystemExit(2)\n", extra
    if mutation == "hook_no_register":
        return HEADER + "@hookimpl\ndef mmenc_register_models():\n    pass\n", extra
    if mutation == "unknown_hook":
        return HEADER + "@hookimpl\ndef mmenc_register_everything(register):\n    pass\n", extra
    if mutation == "register_wrong_type":
        return HEADER + "@hookimpl\ndef mmenc_register_models(register):\n" \
            "    register('os:system')\n", extra
    if mutation == "bad_spec_name":
        return HEADER + _model("Bad Name!"), extra
    if mutation == "target_nowhere":
        return HEADER + _model(model, builder="'mmenc_fuzz_nowhere:build'"), extra
    if mutation == "target_attribute_missing":
        return HEADER + _model(model, builder="'mmenc.builtin.towers:no_such_builder'"), extra
    if mutation == "target_not_callable":
        return HEADER + _model(model, builder="'mmenc.builtin.recipes:BYTE_VOCAB'"), extra
    if mutation == "config_nowhere":
        return HEADER + _model(model, config="'mmenc_fuzz_nowhere:CONFIG'"), extra
    if mutation in ("builder_raises", "builder_system_exit", "builder_returns_none"):
        raise_line = {"builder_raises": "    raise RuntimeError('cannot build')\n",
                      "builder_system_exit": "    raise SystemExit(1)\n",
                      "builder_returns_none": "    return None\n"}[mutation]
        extra[f"{module}_build"] = f"def build(config, directory=None):\n{raise_line}"
        return HEADER + _model(model, builder=f"'{module}_build:build'"), extra
    if mutation == "duplicate_builtin":
        return HEADER + _model("text-tiny"), extra
    if mutation == "many_registrations":
        return HEADER + "@hookimpl\ndef mmenc_register_models(register):\n" \
            f"    for i in range(5000):\n" \
            f"        register(ModelSpec(f'{model}-{{i}}', ('text',), {BUILD}, {TEXT}))\n", extra
    return HEADER + _model(model), extra  # entry_point_*: the module is fine, the pointer is not


def make(mutation: str, rng: random.Random, base: Any, tmp: Path) -> tuple[str, Any]:
    """A plugin folder; returns ``(mutation, {"site", "plugin", "model"})``."""
    tag = f"{rng.randrange(10**9)}"
    module, plugin, model = f"mmenc_fuzz_{tag}", f"fuzz{tag}", f"fuzz-{tag}".replace("_", "-")
    site = tmp / f"site-{tag}"
    site.mkdir(parents=True)
    source, extra = _body(mutation, module, model)
    (site / f"{module}.py").write_text(source, encoding="utf-8")
    for name, text in extra.items():
        (site / f"{name}.py").write_text(text, encoding="utf-8")
    target = {"entry_point_nowhere": f"{module}_missing",
              "entry_point_attribute": f"{module}:no_such_attribute"}.get(mutation, module)
    dist = f"mmenc_fuzz_plugin_{tag}"
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mmenc]\n{plugin} = {target}\n")
    return mutation, {"site": str(site), "plugin": plugin, "model": model}


def load_base(cache: Path) -> None:
    """Plugins are written from scratch: there is no base corpus."""
    return None
