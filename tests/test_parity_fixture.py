"""``python -m mmenc.testing.parity_fixture``: the fixture a clone makes offline for the docs."""

from __future__ import annotations

import json

import pytest
import torch

from mmenc.errors import ConfigError
from mmenc.testing.parity_fixture import main, make_hf_fixture


@pytest.mark.parametrize("kwargs,message", [
    ({"model_type": "gpt2"}, r"system 'gpt2': expected one of"),
    ({"dim": 30, "heads": 4}, r"dim 30 does not divide into 4 heads"),
    ({"vocab": 5}, r"vocab 5 leaves no ids"),
    ({"length": 8, "pad_tail": 8}, r"pad_tail 8 must be in \[0, 8\)"),
])
def test_bad_sizes_are_refused_before_anything_is_written(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_hf_fixture(tmp_path / "fx", **kwargs)
    assert not (tmp_path / "fx").exists()


def test_the_command_refuses_bad_sizes(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "fx"), "--dim", "10", "--heads", "3"])
    assert exit_info.value.code == 2
    assert "dim 10 does not divide into 3 heads" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "fx"), "--layers", "0"])
    assert "0 is not a positive integer" in capsys.readouterr().err


def test_the_reference_is_transformers_on_the_written_checkpoint(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    main([str(tmp_path / "fx"), "--system", "bert", "--seed", "3", "--layers", "1",
          "--dim", "32", "--heads", "2", "--ffn", "64", "--length", "9"])
    assert "wrote" in capsys.readouterr().out
    fx = tmp_path / "fx"
    fixture = json.loads((fx / "fixture.json").read_text())
    assert fixture["system"] == "bert" and fixture["checkpoint_dir"] == "checkpoint/"
    # an independent reload of the official container gives the stored reference outputs
    config = transformers.BertConfig.from_pretrained(fx / "checkpoint",
                                                     attn_implementation="eager")
    model = transformers.BertModel(config).eval()
    state = torch.load(fx / "checkpoint" / "pytorch_model.bin", weights_only=True)
    model.load_state_dict(state)
    inputs = load_file(str(fx / "inputs.safetensors"))
    refs = load_file(str(fx / "reference_outputs.safetensors"))
    assert inputs["attention_mask"][-1, -3:].eq(0).all()  # the last row is padded
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    torch.testing.assert_close(out.last_hidden_state, refs["last_hidden_state"], rtol=0,
                               atol=1e-6)
    assert set(refs) == {"last_hidden_state", "pooler_output", "hidden_states_00",
                         "hidden_states_01"}
    # the weights are redrawn: LayerNorm biases are not the zeros of a default init
    assert state["embeddings.LayerNorm.bias"].abs().min() > 0
    # the same seed writes the same weights
    again = make_hf_fixture(tmp_path / "again", "bert", seed=3, layers=1, dim=32, heads=2,
                            ffn=64, length=9, pad_tail=3)
    state2 = torch.load(again / "checkpoint" / "pytorch_model.bin", weights_only=True)
    assert state.keys() == state2.keys()
    assert all(torch.equal(state[k], state2[k]) for k in state)
