"""``mmenc pretrain CONFIG.yaml [--resume]``; under torchrun, every rank runs the same command:

    torchrun --nproc_per_node 2 -m mmenc.train.cli CONFIG.yaml
"""

from __future__ import annotations

import json
import os

import click

from mmenc.errors import MmencError


@click.command("pretrain")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--resume", is_flag=True,
              help="Continue from the newest complete checkpoint in output_dir.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def pretrain(config: str, resume: bool, as_json: bool) -> None:
    """Pretrain a model as CONFIG (YAML) says; see docs/training.md for every key.

    Writes checkpoints, metrics.jsonl/csv, loss.png and the final model/ into output_dir.
    """
    from mmenc.train.loop import pretrain as run

    try:
        result = run(config, resume=resume)
    except MmencError as exc:
        raise click.ClickException(str(exc)) from None
    if os.environ.get("RANK", "0") != "0":
        return
    summary = {"output_dir": str(result.output_dir), "step": result.step,
               "loss": result.metrics.get("loss"), "skipped": result.skipped,
               "checkpoint": str(result.checkpoint), "model": str(result.model_dir)}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    skipped = sum(result.skipped.values())
    reasons = "".join(f"\n  {n} x {reason}" for reason, n in sorted(result.skipped.items()))
    loss = summary["loss"]
    click.echo(f"trained {result.step} steps; final loss "
               f"{'n/a' if loss is None else f'{loss:.4f}'}; skipped {skipped} items{reasons}")
    click.echo(f"model: {result.model_dir}\ncheckpoint: {result.checkpoint}")


if __name__ == "__main__":
    pretrain()
