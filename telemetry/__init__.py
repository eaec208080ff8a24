"""OpenTelemetry set-up, context propagation and span helpers for every hop.

Knows tracing, metrics and GPU memory sampling; knows nothing of the models or
the graph that call it.
"""
