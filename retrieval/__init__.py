"""Documents to chunks to vectors to a FAISS index on disk, and search over it.

Knows files, chunking, FAISS and the index manifest; knows nothing of Ray
Serve, HTTP or how the query vectors it is handed were computed.
"""
