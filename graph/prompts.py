"""Prompt templates for the graph; the registry lives in `releases.templates`
(a lower floor), so release manifests can pin a template without importing
`graph`."""

from __future__ import annotations

from releases.templates import TEMPLATES, PromptTemplate, get_template

__all__ = ["TEMPLATES", "PromptTemplate", "get_template"]
