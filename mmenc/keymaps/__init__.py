"""Converters from official checkpoint formats to mmenc state dicts."""
