"""Ignite iteration functions and handlers used by the bundles (import submodules directly in configs)."""
