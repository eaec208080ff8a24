"""Load tests for ragserve over HTTP: a load generator, reports, plots, `make bench`.

The generator (`runner`, `scenarios`, `sse`, `stats`, `report`, `plot`, `cli`)
speaks only the OpenAI wire protocol and imports nothing else of ours, so it
measures any OpenAI-style server. The servers the benchmarks measure live in
`load_tests.servers`, the only part that imports the graph; a few probes of
lower floors (`engine_memory`, `ledger_flush`, `lease_renewal`) import those.
"""
