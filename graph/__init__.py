"""The RAG serving graph: core modules (config, pipeline, errors) and the
packages `gate`, `routing`, `api`, `serve` and `cli`, floors in that order.

Composes every lower package; none of them imports this one.
"""
