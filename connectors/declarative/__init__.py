"""Declarative sources: a YAML file, validated and compiled, instead of Python code."""
