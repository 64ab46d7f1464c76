"""mmenc-audio: the ``audio`` modality, Kaldi-fbank patch tokens, BEATs on mmenc's shared trunk,
its acoustic tokenizers, objectives, converters and parity mappings.

Nothing heavy is imported here: mmenc reaches the code through ``mmenc_audio.plugin``.
"""

__version__ = "0.1.0"
