"""mmenc-template: a ``timeseries`` modality, the ``timeseries-patches`` tokenizer and the
``timeseries-tiny`` recipe, added to mmenc through its plugin hooks.

Nothing is imported here: mmenc reaches the code through ``mmenc_template.plugin``.
"""

__version__ = "0.1.0"
