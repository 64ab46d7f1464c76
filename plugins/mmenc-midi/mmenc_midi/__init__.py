"""mmenc-midi: the ``midi`` modality, CP / Octuple / REMI tokenizers, MIDI-BERT and
Adversarial-MidiBERT encoders, converters and parity mappings.

mmenc reaches the code through ``mmenc_midi.plugin``; importing this package imports nothing
heavy.
"""

__version__ = "0.1.0"
