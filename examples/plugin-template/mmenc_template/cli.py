"""``mmenc template-info``: a sub-command added through ``mmenc_register_commands``.

mmenc imports this module only when the sub-command runs.
"""

from __future__ import annotations

import json

import click

PLUGIN_MODULE = "mmenc_template.plugin"
KINDS = ("modality", "tokenizer", "model", "command")


@click.command("template-info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def template_info(as_json: bool) -> None:
    """Show the modalities, tokenizers, recipes and commands mmenc-template registered."""
    from mmenc.registry import catalogue
    from mmenc.specs import spec_key

    cat = catalogue()
    names = {
        kind: [spec_key(e.spec) for e in cat.entries(kind) if e.plugin.module == PLUGIN_MODULE]
        for kind in KINDS
    }
    if as_json:
        click.echo(json.dumps(names, indent=2))
        return
    for kind, found in names.items():
        click.echo(f"{kind}: {', '.join(found) or '-'}")
