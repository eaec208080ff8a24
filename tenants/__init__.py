"""Tenants: hashed keys in a real database, limits, fair share, audit, feedback.

Pure logic and storage, no Ray: the graph wires these into its ingress and
into one shared ledger actor (`graph/gate/ledger_actor.py`).
"""
