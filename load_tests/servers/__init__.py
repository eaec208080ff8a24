"""The servers the benchmarks measure, each run as a subprocess by `make bench`.

Knows how to run the graph on a private Ray (and poll its replicas) and the
same pipeline in one process; `load_tests/` starts them by command line and
talks to them over HTTP only.
"""
