"""The reliability campaign: deterministic hostile inputs for every public entry point.

``run.py`` generates the corpora from a seed and the data installed on the machine, mutates
them, feeds each input through mmenc's public path in long-lived worker processes under a time
and memory limit, and tabulates what happened to each input.
"""
