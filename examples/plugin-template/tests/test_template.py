"""The template's tests: mmenc's contract checks on what it registers, and the series it refuses.

Run them after ``pip install -e examples/plugin-template`` (the entry point is then what puts the
plugin in mmenc's catalogue). From a checkout where the plugin is not installed they register
``mmenc_template.plugin`` in-process instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import mmenc
from mmenc.errors import InputError
from mmenc.testing import MODEL_CHECKS, check_modality, check_name, check_tokenizer, with_plugins

try:
    import mmenc_template  # noqa: F401
except ImportError:  # not installed: use the package next to these tests
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmenc_template.modality import MAX_LENGTH, load_timeseries
from mmenc_template.tokenizer import PatchTokenizer


@pytest.fixture(scope="module", autouse=True)
def plugin() -> Iterator[None]:
    if "timeseries-tiny" in mmenc.catalogue().names("model"):
        yield
        return
    import mmenc_template.plugin

    with with_plugins(mmenc_template.plugin):
        yield


@pytest.mark.parametrize("check", MODEL_CHECKS, ids=check_name)
def test_model_contract(check):
    check(mmenc.catalogue().get("model", "timeseries-tiny"))


def test_modality_contract():
    check_modality(mmenc.catalogue().get("modality", "timeseries"))


def test_tokenizer_contract():
    check_tokenizer(mmenc.catalogue().get("tokenizer", "timeseries-patches"))


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (["a", "b"], "non-numeric"),
        ([1.0, None], "non-numeric"),
        ([True, False], "non-numeric"),
        ([], "empty"),
        (np.array([], dtype=np.float32), "empty"),
        ([1.0, float("nan")], "NaN or Inf at index 1"),
        (np.array([0.0, 1.0, np.inf]), "NaN or Inf at index 2"),
        ([1e300], "NaN or Inf at index 0"),
        ([[1.0, 2.0], [3.0, 4.0]], "1-D"),
        (np.zeros((2, 3)), "1-D"),
        ([1.0, [2.0, 3.0]], "flat sequence"),
        (np.zeros(MAX_LENGTH + 1), "too long"),
        (5.0, "expected a list"),
        (object(), "expected a list"),
        ({"a": 1.0}, "expected a list"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_series_are_refused(item, reason):
    with pytest.raises(InputError, match=reason):
        load_timeseries(item)


def test_npy_files(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.arange(5, dtype=np.float64))
    assert load_timeseries(good).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert load_timeseries(str(good)).dtype == np.float32

    np.save(tmp_path / "table.npy", np.zeros((3, 2)))
    np.save(tmp_path / "objects.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "archive.npz", a=np.zeros(3))
    (tmp_path / "archive.npz").rename(tmp_path / "archive.npy")
    (tmp_path / "garbage.npy").write_bytes(b"\x00\x01 not numpy")
    (tmp_path / "series.csv").write_text("1,2,3\n")
    for name, reason in [("table.npy", "1-D"), ("objects.npy", "not a readable .npy"),
                         ("archive.npy", "archive"), ("garbage.npy", "not a readable .npy"),
                         ("series.csv", "expected a .npy file"), ("missing.npy", "not found")]:
        with pytest.raises(InputError, match=reason) as info:
            load_timeseries(tmp_path / name)
        assert name in str(info.value)  # the error names the file


def test_patches_pad_the_last_patch_and_the_batch():
    tokenizer = PatchTokenizer(patch_size=4, max_patches=8, normalize=False, pad_value=-1.0)
    batch = tokenizer([[1.0, 2.0, 3.0, 4.0, 5.0], list(range(10)), np.ones(100)])
    assert batch.values.shape == (3, 8, 4) and batch.ids is None
    assert batch.mask.sum(dim=1).tolist() == [2, 3, 8]  # 100 samples are cut to 8 patches
    assert batch.values[0, 1].tolist() == [5.0, -1.0, -1.0, -1.0]
    assert batch.values[0, 2:].eq(-1.0).all()


def test_normalised_series_do_not_depend_on_scale():
    tokenizer = PatchTokenizer(patch_size=4)
    series = np.sin(np.linspace(0, 6, 30))
    a, b = tokenizer([series]).values, tokenizer([1000 * series + 7]).values
    assert float((a - b).abs().max()) < 1e-4
    assert tokenizer([[2.0, 2.0, 2.0]]).values[0, 0, :3].tolist() == [0.0, 0.0, 0.0]


def test_tokenizer_config_names_it_and_save_writes_nothing(tmp_path):
    tokenizer = PatchTokenizer(patch_size=16, max_patches=4)
    assert tokenizer.config()["tokenizer"] == "timeseries-patches"
    tokenizer.save(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_saved_model_rebuilds_its_tokenizer(tmp_path):
    model = mmenc.create_model("timeseries-tiny", tokenizers={"timeseries": {"patch_size": 4}})
    model.save_pretrained(tmp_path)
    loaded = mmenc.load(tmp_path)
    assert loaded.tokenizers["timeseries"].patch_size == 4
    assert loaded.encode([[1.0, 2.0, 3.0]], "timeseries").shape == (1, 32)
