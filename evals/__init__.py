"""Answer quality offline: labelled question sets, retrieval and answer
metrics, results as plain data (`ragserve eval`)."""
