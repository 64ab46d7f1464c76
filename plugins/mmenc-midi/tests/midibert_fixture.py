"""Parity fixtures of any size, built offline from HF ``transformers.BertModel``.

The reference is the structure both official repositories use: per-field lookup tables scaled by
``sqrt(256)``, concatenated, a linear layer, then ``BertModel(inputs_embeds=...)`` with
``position_embedding_type="relative_key_query"`` (eager attention). Every tensor is redrawn so
that LayerNorm weights are not 1 and biases not 0: a converter that drops or swaps one fails.
The checkpoint is written in the official container (``{"epoch", "state_dict", ...}`` for
MIDI-BERT, the bare state dict for Adversarial-MidiBERT).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

SYSTEMS = {
    "midibert": ("cp", "model_best.ckpt"),
    "adv_midibert": ("octuple", "midibert_pretrain.pth"),
}


class _Lut(nn.Module):
    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        self.lut = nn.Embedding(n, d)
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lut(x) * math.sqrt(self.d)


class ReferenceMidiBert(nn.Module):
    """The official model's structure on HF BertModel (used as the reference here)."""

    def __init__(self, config, sizes: list[int], emb: int = 256,
                 attention_linear: bool = False) -> None:
        from transformers import BertModel

        super().__init__()
        self.bert = BertModel(config)
        self.word_emb = nn.ModuleList(_Lut(v, emb) for v in sizes)
        self.in_linear = nn.Linear(emb * len(sizes), config.hidden_size)
        if attention_linear:
            width = emb * len(sizes)
            self.attention_linear = nn.Sequential(
                nn.Linear(width, width // 2), nn.ReLU(), nn.Linear(width // 2, width // 2),
                nn.ReLU(), nn.Linear(width // 2, width), nn.Sigmoid())

    def embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        return self.in_linear(torch.cat([e(ids[..., i]) for i, e in enumerate(self.word_emb)],
                                        dim=-1))

    def forward(self, ids: torch.Tensor, attn_mask: torch.Tensor):
        return self.bert(inputs_embeds=self.embeddings(ids), attention_mask=attn_mask,
                         output_hidden_states=True)


def _randomise(model: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.02 * noise)
            else:
                p.copy_(0.05 * noise)


def make_midibert_fixture(directory: Path, system: str = "midibert", seed: int = 0,
                          hidden: int = 48, layers: int = 2, heads: int = 4, ffn: int = 96,
                          max_pos: int = 32, emb: int = 256, batch: int = 2,
                          length: int = 20) -> Path:
    """Write ``fixture.json``, inputs, reference outputs and the checkpoint into ``directory``."""
    from safetensors.torch import save_file
    from transformers import BertConfig

    from mmenc_midi.vocab import load_vocab

    scheme, filename = SYSTEMS[system]
    vocab = load_vocab(scheme)
    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=ffn, max_position_embeddings=max_pos,
                        position_embedding_type="relative_key_query",
                        attn_implementation="eager")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ReferenceMidiBert(config, list(vocab.sizes), emb,
                              attention_linear=system == "adv_midibert")
    _randomise(model, g)
    model.eval()

    regular = vocab.regular_counts()
    ids = torch.stack([torch.randint(0, r, (batch, length), generator=g) for r in regular],
                      dim=-1)  # [b n f]
    real = torch.ones(batch, length, dtype=torch.bool)
    real[1:, length - length // 4:] = False  # later items are padded
    ids[~real] = torch.tensor(vocab.pad_ids)
    attn_mask = (ids[..., 0] != vocab.pad_ids[0]).float()
    with torch.no_grad():
        out = model(ids, attn_mask)
        refs = {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output,
                "in_linear_output": model.embeddings(ids)}
        for i, h in enumerate(out.hidden_states):
            refs[f"hidden_states_{i:02d}"] = h

    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if system == "midibert":
        state["bert.embeddings.position_ids"] = torch.arange(max_pos)[None]  # legacy buffer
        torch.save({"epoch": 3, "state_dict": state, "best_acc": 0.5, "valid_acc": 0.5,
                    "valid_loss": 1.0, "train_loss": 1.0, "optimizer": {}},
                   directory / filename)
    else:
        torch.save(state, directory / filename)
    save_file({"input_ids": ids.contiguous(), "attn_mask": attn_mask.contiguous()},
              str(directory / "inputs.safetensors"))
    save_file({k: v.clone().contiguous() for k, v in refs.items()},
              str(directory / "reference_outputs.safetensors"))
    fixture = {"system": system, "seed": seed, "checkpoint_file": filename,
               "bert_config_full": {k: config.to_dict()[k] for k in (
                   "hidden_size", "num_hidden_layers", "num_attention_heads",
                   "intermediate_size", "hidden_act", "max_position_embeddings",
                   "layer_norm_eps", "position_embedding_type")}}
    (directory / "fixture.json").write_text(json.dumps(fixture, indent=1))
    return directory


class _ReferenceSequenceHead(nn.Module):
    """The official sequence head's structure: r attention rows over all positions (pads
    included), concatenated weighted sums, an MLP."""

    def __init__(self, hs: int, classes: int, da: int = 128, r: int = 4) -> None:
        super().__init__()
        self.attention = nn.Module()
        self.attention.ws1 = nn.Linear(hs, da, bias=False)
        self.attention.ws2 = nn.Linear(da, r, bias=False)
        self.classifier = nn.Sequential(nn.Linear(hs * r, 256), nn.ReLU(), nn.Linear(256, classes))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = torch.softmax(self.attention.ws2(torch.tanh(self.attention.ws1(h))), dim=1)
        return self.classifier(torch.bmm(a.permute(0, 2, 1), h).flatten(1))


def make_finetuned_checkpoint(path: Path, task: str, system: str = "midibert", seed: int = 0,
                              hidden: int = 32, layers: int = 2, heads: int = 4,
                              classes: int = 5):
    """A fine-tuned checkpoint (``midibert.`` prefix + head) and the reference logits.

    Returns:
        ``(ids, attn_mask, logits)``.
    """
    from transformers import BertConfig

    from mmenc_midi.vocab import load_vocab

    vocab = load_vocab(SYSTEMS[system][0])
    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * hidden, max_position_embeddings=32,
                        position_embedding_type="relative_key_query",
                        attn_implementation="eager")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ReferenceMidiBert(config, list(vocab.sizes))
    if task == "token":
        head = nn.Sequential(nn.Dropout(0.1), nn.Linear(hidden, 256), nn.ReLU(),
                             nn.Linear(256, classes))
    else:
        head = _ReferenceSequenceHead(hidden, classes)
    _randomise(model, g)
    _randomise(head, g)
    model.eval()
    head.eval()
    ids = torch.stack([torch.randint(0, r, (2, 16), generator=g)
                       for r in vocab.regular_counts()], dim=-1)
    ids[1, 12:] = torch.tensor(vocab.pad_ids)
    attn_mask = (ids[..., 0] != vocab.pad_ids[0]).float()
    with torch.no_grad():
        logits = head(model(ids, attn_mask).hidden_states[-1])
    state = {f"midibert.{k}": v for k, v in model.state_dict().items()}
    prefix = "classifier." if task == "token" else ""
    state.update({f"{prefix}{k}": v for k, v in head.state_dict().items()})
    torch.save({"epoch": 1, "state_dict": state, "best_acc": 0.9}, path)
    return ids, attn_mask, logits
