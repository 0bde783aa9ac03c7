"""Utilities shared by every layer of segtron: file access, distributed helpers, logging, env."""
