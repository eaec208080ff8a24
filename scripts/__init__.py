"""Developer scripts the Makefile runs (trace viewer, screenshots); not runtime code."""
