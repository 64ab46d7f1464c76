"""The plugin manager isolates plugins: one broken plugin is recorded and the others keep working.

In-process tests build catalogues from small plugin modules; the environment switches read fake
entry points (a ``.dist-info`` folder on ``sys.path``); the CLI runs in a fresh process.
"""

from __future__ import annotations

import json
import types
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import mmenc
from mmenc.errors import PluginError, UnknownNameError
from mmenc.hookspecs import hookimpl
from mmenc.plugins import PluginSource
from mmenc.registry import Catalogue, build_catalogue
from mmenc.specs import ModelSpec

NO_AUTOLOAD = {"MMENC_DISABLE_PLUGIN_AUTOLOAD": "1"}


def _model(name: str) -> ModelSpec:
    return ModelSpec(name, ("text",), "nowhere.at_all:build", {}, tiny=True)


def _plugin(name: str, **hooks: Any) -> PluginSource:
    """A plugin module with ``hooks`` (hook name -> function of ``register``)."""
    module = types.ModuleType(f"test_plugin_{name}")
    for hook_name, function in hooks.items():
        setattr(module, hook_name, hookimpl(function))
    return PluginSource(name, f"{name}-dist", "1.0", module=module)


def _registers(*specs: Any) -> Any:
    def hook(register: Any) -> None:
        for spec in specs:
            register(spec)

    return hook


def _good() -> PluginSource:
    return _plugin("good", mmenc_register_models=_registers(_model("good-tiny")))


def _build(*sources: PluginSource, **env: str) -> Catalogue:
    return build_catalogue(env={**NO_AUTOLOAD, **env}, sources=list(sources))


def _assert_error_kept_others(cat: Catalogue, name: str, message: str) -> None:
    record = cat.plugin(name)
    assert record.status == "error"
    assert message in record.error
    assert record.registered == {}
    assert cat.plugin("good").status == "ok" and cat.plugin("mmenc").status == "ok"
    assert {"good-tiny", "clip-tiny"} <= set(cat.names("model"))


# -- one broken plugin -------------------------------------------------------------------------
def test_import_error(tmp_path, monkeypatch):
    (tmp_path / "needs_libfoo.py").write_text("raise ImportError('needs_libfoo wants libfoo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    missing = metadata.EntryPoint("missing", "mmenc_no_such_module", "mmenc")
    failing = metadata.EntryPoint("failing", "needs_libfoo", "mmenc")
    cat = _build(PluginSource("missing", "missing-dist", "0.1", entry_point=missing),
                 PluginSource("failing", "failing-dist", "0.2", entry_point=failing), _good())
    _assert_error_kept_others(cat, "missing", "ModuleNotFoundError")
    _assert_error_kept_others(cat, "failing", "ImportError: needs_libfoo wants libfoo")
    assert "needs_libfoo.py" in cat.plugin("failing").traceback
    assert cat.plugin("missing").module == "mmenc_no_such_module"


def test_raising_hook_keeps_none_of_its_registrations():
    def hook(register: Any) -> None:
        register(_model("partial-tiny"))
        raise RuntimeError("boom in hook")

    cat = _build(_plugin("raising", mmenc_register_models=hook), _good())
    _assert_error_kept_others(cat, "raising", "RuntimeError: boom in hook")
    assert "in hook" in cat.plugin("raising").traceback  # the hook's own frame
    assert "partial-tiny" not in cat.names("model")


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ({"mmenc_register_models": lambda register: register(_model("Bad Name"))},
         "SpecError: model name 'Bad Name'"),
        ({"mmenc_register_modalities": _registers(_model("typo-tiny"))},
         "expected a ModalitySpec"),
        ({"mmenc_register_models": _registers("text-tiny")}, "expected a ModelSpec"),
        ({"mmenc_register_models": _registers(_model("kept-tiny")),
          "mmenc_register_widgets": _registers()},
         "PluginError: unknown hook(s) mmenc_register_widgets"),
    ],
    ids=["bad-name", "wrong-spec-type", "not-a-spec", "unknown-hook"],
)
def test_invalid_registrations(hooks, message):
    cat = _build(_plugin("invalid", **hooks), _good())
    _assert_error_kept_others(cat, "invalid", message)
    assert "kept-tiny" not in cat.names("model")


def test_a_name_registered_twice_names_both_plugins():
    first = _plugin("first", mmenc_register_models=_registers(_model("dup-tiny")))
    second = _plugin("second", mmenc_register_models=_registers(_model("dup-tiny")))
    cat = _build(first, second, _good())
    _assert_error_kept_others(cat, "second", "'dup-tiny' is registered by plugin 'first'")
    assert "again by plugin 'second' (second-dist 1.0)" in cat.plugin("second").error
    assert cat.entry("model", "dup-tiny").plugin.name == "first"

    builtin_clash = _plugin("clash", mmenc_register_models=_registers(_model("clip-tiny")))
    cat = _build(builtin_clash)
    assert "registered by plugin 'mmenc'" in cat.plugin("clash").error
    assert cat.entry("model", "clip-tiny").plugin.name == "mmenc"

    twice = _plugin("twice", mmenc_register_models=_registers(_model("a-tiny"), _model("a-tiny")))
    assert "registered twice by plugin 'twice'" in _build(twice).plugin("twice").error


def test_strict_mode_reraises_the_original_error():
    def mmenc_register_models(register: Any) -> None:
        raise RuntimeError("boom in strict mode")

    with pytest.raises(RuntimeError, match="boom in strict mode") as info:
        _build(_plugin("raising", mmenc_register_models=mmenc_register_models),
               MMENC_STRICT_PLUGINS="1")
    assert Path(str(info.traceback[-1].path)) == Path(__file__)  # raised where the hook raised

    missing = metadata.EntryPoint("missing", "mmenc_no_such_module", "mmenc")
    with pytest.raises(ModuleNotFoundError, match="mmenc_no_such_module"):
        _build(PluginSource("missing", "m", "0", entry_point=missing), MMENC_STRICT_PLUGINS="1")
    with pytest.raises(PluginError, match="registered by plugin 'mmenc'"):
        _build(_plugin("clash", mmenc_register_models=_registers(_model("clip-tiny"))),
               MMENC_STRICT_PLUGINS="1")


def test_unknown_names_list_close_matches():
    with pytest.raises(UnknownNameError, match="did you mean 'clip-tiny'") as info:
        mmenc.catalogue().get("model", "clip-tny")
    assert isinstance(info.value, KeyError) and "clip-tiny" in info.value.close
    with pytest.raises(UnknownNameError, match="'merged'"):
        mmenc.catalogue().get("fusion", "merge")


# -- entry points and the environment switches ---------------------------------------------------
def _dist(site: Path, dist: str, version: str, entry_points: dict[str, str]) -> None:
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[mmenc]\n{lines}")


@pytest.fixture
def fake_site(tmp_path: Path) -> Path:
    """Two installed plugins: ``fake`` (dist fake-plug 1.2.3) whose targets live in a module that
    imports a sentinel, and ``broken`` (dist broken-plug 0.1) that fails to import."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "fake_plug.py").write_text(
        "from mmenc.hookspecs import hookimpl\n"
        "from mmenc.specs import CommandSpec, ModelSpec\n"
        "@hookimpl\n"
        "def mmenc_register_models(register):\n"
        "    register(ModelSpec('fake-tiny', ('text',), 'fake_plug_heavy:build', tiny=True))\n"
        "@hookimpl\n"
        "def mmenc_register_commands(register):\n"
        "    register(CommandSpec('fake-hello', 'fake_plug_heavy:hello', 'say hello'))\n"
    )
    (site / "fake_plug_heavy.py").write_text(
        "import click\n"
        "import fake_plug_sentinel  # stands for a heavy dependency\n"
        "@click.command()\n"
        "def hello():\n"
        "    click.echo('hello from fake')\n"
        "def build(config, directory=None):\n"
        "    raise NotImplementedError\n"
    )
    (site / "fake_plug_sentinel.py").write_text("")
    (site / "broken_plug.py").write_text("raise ImportError('broken_plug needs libfoo')\n")
    _dist(site, "fake-plug", "1.2.3", {"fake": "fake_plug"})
    _dist(site, "broken-plug", "0.1", {"broken": "broken_plug"})
    return site


@pytest.mark.parametrize(
    ("env", "status"),
    [
        ({}, {"fake": "ok", "broken": "error"}),
        ({"MMENC_PLUGINS": "fake"}, {"fake": "ok", "broken": "disabled"}),
        ({"MMENC_PLUGINS": "broken-plug, fake-plug"}, {"fake": "ok", "broken": "error"}),
        ({"MMENC_PLUGINS": ""}, {"fake": "disabled", "broken": "disabled"}),
        ({"MMENC_DISABLE_PLUGIN_AUTOLOAD": "1"}, {}),
        ({"MMENC_DISABLE_PLUGIN_AUTOLOAD": "1", "MMENC_PLUGINS": "fake"}, {}),
    ],
    ids=["all", "allow-name", "allow-distribution", "allow-none", "no-autoload",
         "no-autoload-wins"],
)
def test_environment_switches(fake_site, monkeypatch, env, status):
    monkeypatch.syspath_prepend(str(fake_site))
    cat = build_catalogue(env=env)
    assert {n: cat.plugins[n].status for n in ("fake", "broken") if n in cat.plugins} == status
    assert cat.plugin("mmenc").status == "ok" and "clip-tiny" in cat.names("model")
    assert ("fake-tiny" in cat.names("model")) == (status.get("fake") == "ok")
    if status.get("broken") == "disabled":
        assert cat.plugin("broken").error == "not in MMENC_PLUGINS"
    if "fake" in cat.plugins:
        fake = cat.plugin("fake")
        assert (fake.distribution, fake.version, fake.module) == ("fake-plug", "1.2.3", "fake_plug")


def test_cli_lists_plugins_and_models_without_importing_targets(fake_site, run_cli):
    heavy = ["fake_plug_heavy", "fake_plug_sentinel"]
    plugins, models, clip, image, listing, hello = run_cli(
        [["plugins", "--json"], ["models", "--json"], ["models", "clip-*", "--json"],
         ["models", "--modality", "image", "--json"], ["--help"], ["fake-hello"]],
        fake_site, watch=heavy,
    )
    records = {r["name"]: r for r in json.loads(plugins["stdout"])}
    assert set(records["fake"]) >= {"name", "distribution", "version", "hooks", "registered",
                                    "status", "error"}
    assert records["fake"] | {"module": None} == {
        "name": "fake", "distribution": "fake-plug", "version": "1.2.3", "module": None,
        "hooks": ["mmenc_register_models", "mmenc_register_commands"],
        "registered": {"model": ["fake-tiny"], "command": ["fake-hello"]},
        "status": "ok", "error": None,
    }
    assert records["broken"]["status"] == "error"
    assert records["broken"]["error"] == "ImportError: broken_plug needs libfoo"
    assert records["mmenc"]["status"] == "ok"

    # the broken plugin changes nothing for the others, and listing imports no target
    assert models["code"] == 0
    names = {m["name"] for m in json.loads(models["stdout"])}
    assert {"fake-tiny", "clip-tiny", "text-tiny"} <= names
    clip_names = [m["name"] for m in json.loads(clip["stdout"])]
    assert "clip-tiny" in clip_names and all(n.startswith("clip-") for n in clip_names)
    image_models = json.loads(image["stdout"])
    assert all("image" in m["modalities"] for m in image_models)
    assert {"vit-tiny", "clip-tiny", "merged-tiny"} <= {m["name"] for m in image_models}
    assert "fake-hello" in listing["stdout"]
    for result in (plugins, models, clip, image, listing):
        assert result["imported"] == []
    # running the command is what imports its module (the check above could fail)
    assert hello["code"] == 0 and hello["stdout"] == "hello from fake\n"
    assert hello["imported"] == heavy


@pytest.mark.parametrize(
    ("env", "shown"),
    [({"MMENC_PLUGINS": "fake"}, {"mmenc": "ok", "fake": "ok", "broken": "disabled"}),
     ({"MMENC_DISABLE_PLUGIN_AUTOLOAD": "1"}, {"mmenc": "ok"})],
    ids=["allow-list", "no-autoload"],
)
def test_cli_follows_the_environment(fake_site, run_cli, env, shown):
    plugins, models = run_cli([["plugins", "--json"], ["models", "fake-*", "--json"]],
                              fake_site, **env)
    status = {r["name"]: r["status"] for r in json.loads(plugins["stdout"])}
    assert {n: status[n] for n in status if n in ("mmenc", "fake", "broken")} == shown
    # any other installed plugin is listed as disabled, or not at all without autoload
    assert all(status[n] == "disabled" for n in status if n not in shown)
    assert [m["name"] for m in json.loads(models["stdout"])] == (
        ["fake-tiny"] if "fake" in shown else [])


def test_cli_models_table(run_cli):
    (table,) = run_cli([["models", "clip-*"]], None)
    rows = [line.split() for line in table["stdout"].splitlines()]
    assert ["clip-tiny", "text,image", "dual", "mmenc"] in [row[:4] for row in rows]
    assert all(row[0].startswith("clip-") for row in rows)


def test_cli_unknown_command_suggests(run_cli):
    (result,) = run_cli([["modles"]], None)
    assert result["code"] == 2 and "did you mean 'models'" in result["output"]


# -- plugins that exit, and targets that point nowhere -------------------------------------------
def test_a_plugin_raising_system_exit_is_contained(tmp_path, monkeypatch):
    (tmp_path / "exits_at_import.py").write_text("raise SystemExit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    at_import = metadata.EntryPoint("exits", "exits_at_import", "mmenc")

    def hook(register: Any) -> None:
        raise SystemExit("bye from a hook")

    cat = _build(PluginSource("exits", "exits-dist", "0.1", entry_point=at_import),
                 _plugin("quits", mmenc_register_models=hook), _good())
    _assert_error_kept_others(cat, "exits", "SystemExit: 3")
    _assert_error_kept_others(cat, "quits", "SystemExit: bye from a hook")
    with pytest.raises(SystemExit):  # strict mode re-raises it as it is
        _build(_plugin("quits", mmenc_register_models=hook), MMENC_STRICT_PLUGINS="1")


def test_keyboard_interrupt_in_a_plugin_is_the_users():
    def hook(register: Any) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _build(_plugin("interrupted", mmenc_register_models=hook), _good())


@pytest.fixture
def lost(tmp_path, monkeypatch):
    """The process's catalogue with plugin ``lost``: well-formed targets that point nowhere, at
    a missing attribute, and at a module that exits while importing."""
    from mmenc import registry
    from mmenc.specs import ConverterSpec

    (tmp_path / "lost_exits.py").write_text("raise SystemExit(4)\n")
    (tmp_path / "lost_empty.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = _plugin("lost", mmenc_register_models=_registers(
        _model("lost-tiny"),
        ModelSpec("lost-attr-tiny", ("text",), "lost_empty:build", {}, tiny=True),
        ModelSpec("lost-exit-tiny", ("text",), "lost_exits:build", {}, tiny=True),
        ConverterSpec("lost-format", "nowhere.at_all:convert")))
    cat = _build(plugin)
    assert cat.plugin("lost").status == "ok"  # well-formed: the targets are checked at first use
    monkeypatch.setitem(registry._CACHE, "default", cat)
    return tmp_path


@pytest.mark.parametrize(("name", "target", "cause"), [
    ("lost-tiny", "nowhere.at_all:build", "ModuleNotFoundError"),
    ("lost-attr-tiny", "lost_empty:build", "AttributeError"),
    ("lost-exit-tiny", "lost_exits:build", "SystemExit: 4"),
])
def test_a_target_that_points_nowhere_names_its_plugin(lost, name, target, cause):
    from mmenc.errors import TargetError

    with pytest.raises(TargetError) as info:
        mmenc.create_model(name)
    assert isinstance(info.value, PluginError) and isinstance(info.value, ImportError)
    assert f"target {target!r} (registered by plugin 'lost') cannot be loaded: {cause}" \
        in str(info.value)
    assert (info.value.plugin, info.value.target) == ("lost", target)


def test_convert_with_a_lost_converter_is_a_typed_error(lost):
    from mmenc.errors import TargetError

    with pytest.raises(TargetError, match="'nowhere.at_all:convert' .*plugin 'lost'"):
        mmenc.convert("lost-format", lost)


@pytest.fixture
def faulty(tmp_path, monkeypatch):
    """The process's catalogue with plugin ``faulty``: builders that import fine but raise,
    exit, return no model or are not callable, and a converter that raises."""
    from mmenc import registry
    from mmenc.specs import ConverterSpec

    (tmp_path / "faulty_build.py").write_text(
        "def raises(config, directory=None):\n    raise RuntimeError('cannot build')\n"
        "def exits(config, directory=None):\n    raise SystemExit(1)\n"
        "def nothing(config, directory=None):\n    return None\n"
        "NOT_CALLABLE = 3\n"
        "def convert(src, **options):\n    raise RuntimeError('cannot convert')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    specs = [ModelSpec(f"faulty-{name}-tiny", ("text",), f"faulty_build:{target}", {},
                       tiny=True)
             for name, target in (("raises", "raises"), ("exits", "exits"),
                                  ("none", "nothing"), ("int", "NOT_CALLABLE"))]
    cat = _build(_plugin("faulty", mmenc_register_models=_registers(
        *specs, ConverterSpec("faulty-format", "faulty_build:convert"))))
    assert cat.plugin("faulty").status == "ok"
    monkeypatch.setitem(registry._CACHE, "default", cat)
    return tmp_path


@pytest.mark.parametrize(("name", "reason"), [
    ("faulty-raises-tiny", "failed (RuntimeError: cannot build)"),
    ("faulty-exits-tiny", "failed (SystemExit: 1)"),
    ("faulty-none-tiny", "returned NoneType, not an mmenc.model.Encoder"),
    ("faulty-int-tiny", "its target is int 3, not a callable"),
])
def test_a_failing_builder_is_a_plugin_error_naming_plugin_and_recipe(faulty, name, reason):
    with pytest.raises(PluginError) as info:
        mmenc.create_model(name)
    assert str(info.value) == f"plugin 'faulty': recipe {name!r}: {reason}"


def test_a_failing_converter_is_a_plugin_error(faulty):
    with pytest.raises(PluginError, match=r"plugin 'faulty': converter 'faulty-format': failed "
                                          r"\(RuntimeError: cannot convert\)"):
        mmenc.convert("faulty-format", faulty)


def test_a_builder_failing_in_load_is_a_plugin_error(faulty, tmp_path):
    from mmenc import registry

    folder = tmp_path / "saved"
    model = mmenc.create_model("text-tiny")
    model.save_pretrained(folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["recipe"] = "faulty-raises-tiny"
    (folder / "config.json").write_text(json.dumps(meta))
    assert "faulty-raises-tiny" in registry._CACHE["default"].names("model")
    with pytest.raises(PluginError, match=r"recipe 'faulty-raises-tiny': failed \(RuntimeError"):
        mmenc.load(folder)


def test_cli_survives_exiting_plugins_and_lost_targets(tmp_path, run_cli):
    site = tmp_path / "site"
    site.mkdir()
    (site / "exiting_plug.py").write_text("raise SystemExit('exiting_plug gives up')\n")
    (site / "lost_plug.py").write_text(
        "from mmenc.hookspecs import hookimpl\n"
        "from mmenc.specs import ConverterSpec\n"
        "@hookimpl\n"
        "def mmenc_register_models(register):\n"
        "    register(ConverterSpec('lost', 'lost_plug_nowhere:convert'))\n")
    _dist(site, "exiting-plug", "0.1", {"exiting": "exiting_plug"})
    _dist(site, "lost-plug", "0.2", {"lost": "lost_plug"})
    plugins, convert, models = run_cli(
        [["plugins", "--json"], ["convert", "--from", "lost", str(tmp_path), str(tmp_path / "o")],
         ["models", "clip-*", "--json"]], site)
    records = {r["name"]: r for r in json.loads(plugins["stdout"])}
    assert records["exiting"]["status"] == "error"
    assert records["exiting"]["error"] == "SystemExit: exiting_plug gives up"
    assert records["lost"]["status"] == "ok" and records["mmenc"]["status"] == "ok"
    assert convert["code"] == 1 and convert["exception"] is None
    errors = [line for line in convert["output"].splitlines() if "rror" in line]
    assert len(errors) == 1 and "Traceback" not in convert["output"], convert["output"]
    assert "'lost_plug_nowhere:convert' (registered by plugin 'lost')" in errors[0]
    assert models["code"] == 0 and "clip-tiny" in models["stdout"]
