"""Load tests for ragserve over HTTP: a load generator, reports, plots, `make bench`.

The generator (`runner`, `scenarios`, `sse`, `stats`, `report`, `plot`, `cli`)
speaks only the OpenAI wire protocol and imports nothing else of ours, so it
measures any OpenAI-style server. The bench drivers (`bench`, `graph_server`,
`local_server`) start the servers it measures and therefore import the graph.
"""
