"""UniXcoder parity fixtures of any size, in the layout of ../shared/parity/unixcoder/small.

The reference is HF ``RobertaModel`` (transformers 4.x, eager attention) used the way the official
``unixcoder.py`` uses it: a plain 2-D mask for ``RobertaModel``; ``is_decoder=True`` with the 3-D
mask ``m[:, None, :] * m[:, :, None]`` for ``UniXcoder.forward``; a lower-triangular 3-D mask for
the decoder-only mode. Every tensor is redrawn (LayerNorm weights around 1, biases non-zero), so a
dropped or swapped LayerNorm or bias fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def make_unixcoder_fixture(out: Path, seed: int = 0, layers: int = 2, dim: int = 64,
                           heads: int = 4, ffn: int = 256, vocab: int = 1200,
                           positions: int = 1026, type_vocab: int = 10, length: int = 16,
                           pad_tail: int = 5) -> Path:
    transformers = __import__("transformers")
    torch.manual_seed(seed)
    config = transformers.RobertaConfig(
        vocab_size=vocab, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn, max_position_embeddings=positions, type_vocab_size=type_vocab,
        layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
    model = transformers.RobertaModel(config).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    ids = torch.randint(9, vocab, (2, length), generator=g)
    ids[:, :3] = torch.tensor([0, 5, 2])
    ids[0, -1] = 2
    ids[1, length - pad_tail - 1] = 2
    ids[1, length - pad_tail:] = 1
    mask = ids.ne(1)
    dec = torch.randint(9, vocab, (1, length - 4), generator=g)
    dec[0, :3] = torch.tensor([0, 6, 2])
    with torch.no_grad():
        plain = model(ids, attention_mask=mask.long())
        h = plain.last_hidden_state
        mean = (h * mask[..., None]).sum(1) / mask.sum(-1, keepdim=True)
        config.is_decoder = True
        uni = transformers.RobertaModel(config).eval()
        uni.load_state_dict(model.state_dict())
        tokens = uni(ids, attention_mask=mask[:, None, :] * mask[:, :, None]).last_hidden_state
        sentence = (tokens * mask[..., None]).sum(1) / mask.sum(-1, keepdim=True)
        n = dec.shape[1]
        causal = torch.tril(torch.ones(n, n, dtype=torch.uint8))[None]
        decoded = uni(dec, attention_mask=causal).last_hidden_state
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint"
    ckpt.mkdir(exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["embeddings.position_ids"] = torch.arange(positions)[None]
    torch.save(state, ckpt / "pytorch_model.bin")
    hf = config.to_dict()
    hf.update(is_decoder=False, architectures=["RobertaModel"], model_type="roberta")
    (ckpt / "config.json").write_text(json.dumps(hf))
    save_file({"input_ids": ids, "attention_mask": mask.long(), "decoder_only_ids": dec},
              str(out / "inputs.safetensors"))
    save_file({"roberta_last_hidden_state": h.contiguous(),
               "roberta_pooler_output": plain.pooler_output.contiguous(),
               "code_search_embedding": torch.nn.functional.normalize(mean, dim=-1),
               "unixcoder_token_embeddings": tokens.contiguous(),
               "unixcoder_sentence_embeddings": sentence.contiguous(),
               "decoder_only_last_hidden_state": decoded.contiguous()},
              str(out / "reference_outputs.safetensors"))
    (out / "fixture.json").write_text(json.dumps(
        {"system": "unixcoder", "seed": seed, "checkpoint_dir": "checkpoint/",
         "config": hf}))
    return out
