"""Reproductions: one module per paper, a registry, and the ``reproduce`` runner (the CLI and colabs call these)."""

from jaxgen.experiments.registry import info, load, make_config, names, reproduce, reproduce_all

__all__ = ["info", "load", "make_config", "names", "reproduce", "reproduce_all"]
