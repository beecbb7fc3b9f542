"""Catalog commands: ``list-types``."""
from __future__ import annotations

commands: list = []  # list-types is added with the Linode provider
