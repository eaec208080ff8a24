"""Releases: the whole answer path as one immutable, content-addressed unit."""
