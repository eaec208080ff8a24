"""`make bench` / `python -m load_tests.bench`: side-by-side comparisons, one run.

Starts every server it measures as a subprocess it owns (the graph on a private
Ray with four variants side by side, the same pipeline in one process, vLLM's
own OpenAI server; all from `load_tests.servers` or vLLM), waits for them,
drives each comparison as interleaved short runs (A, B, A, B, ...) of the load
generator in its own process, reads every server's CPU-seconds from /proc
around each run, and writes `load_tests/results/<timestamp>/` with
`results.md`, `results.json`, PNGs, every run's report and every server's
log. Servers are always stopped, by PID, on the way out.

Each comparison is a ratio B/A per round, so slow drift of the machine (other
jobs, thermal) hits both sides of a round alike; the table gives the median
ratio and its spread (min-max over rounds).

This package imports no Ray and none of the graph: it writes configs as plain
YAML and talks to the servers over HTTP.
"""

from load_tests.bench.sections import tracing_note

__all__ = ["tracing_note"]
