"""``mmenc bind train CONFIG.yaml`` and ``mmenc bind add MODEL --modality M --config M.yaml``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    from mmenc.errors import ConfigError

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top")
    return data


@click.group("bind")
def bind() -> None:
    """Bind modalities into one space: a frozen hub and one tower per modality."""


@bind.command("train")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Override the config's output_dir.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train_cmd(config: Path, output_dir: Path | None, as_json: bool) -> None:
    """Train the towers of CONFIG (YAML) against its hub; the model goes to
    OUTPUT_DIR/model."""
    from mmenc.bind.train import train_bound

    data = _read_yaml(config)
    if output_dir is not None:
        data["output_dir"] = str(output_dir)
    result = train_bound(data, echo=(lambda _: None) if as_json else click.echo)
    _report(result, as_json)


@bind.command("add")
@click.argument("model_dir", metavar="MODEL",
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--modality", "-m", required=True, help="The modality to add.")
@click.option("--config", "config", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML of the modality: tower, train, steps, ... (as one entry of "
                   "`modalities` in a bind config); may also set loss, negatives, seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def add_cmd(model_dir: Path, modality: str, config: Path, as_json: bool) -> None:
    """Train a tower of a new modality for the bound MODEL and add it in place; the other
    towers' files are not touched."""
    from mmenc.bind.train import add_modality

    data = _read_yaml(config)
    settings = {k: data.pop(k) for k in ("loss", "negatives", "seed", "cache_dir", "pairs")
                if k in data}
    result = add_modality(model_dir, modality, data,
                          echo=(lambda _: None) if as_json else click.echo, **settings)
    _report(result, as_json)


def _report(result: Any, as_json: bool) -> None:
    data = {"model": str(result.model_dir), "seconds": round(result.seconds, 1),
            "logs": result.logs, "cache": result.cache}
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(f"bound model: {result.model_dir} ({data['seconds']} s; hub cache "
                   f"{result.cache['misses']} new, {result.cache['hits']} cached)")
