"""Dynamic batching for the embed / retrieve / rerank nodes.

Knows how concurrent requests are grouped into batches (on `ray.serve.batch`)
and how long each waited; knows nothing of the models that run the batch.
"""
