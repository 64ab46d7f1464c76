"""The parity-fixture builder of the test suite: random HF BERT / RoBERTa models and
transformers' outputs on them, in the layout of ../shared/parity (see
:mod:`mmenc.testing.parity_fixture`, which docs and users run as a module)."""

from mmenc.testing.parity_fixture import make_hf_fixture

__all__ = ["make_hf_fixture"]
