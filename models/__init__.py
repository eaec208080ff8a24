"""Model engines behind one small interface per step.

Knows how to load and run the embedder, the reranker and the generator; knows
nothing of Ray Serve, HTTP or the index on disk.
"""
