"""Who is calling and whether they may: tenant keys, limits, fair-share slots,
token metering, the shared ledger actor and the audit record of each request."""
