"""Which release answers a request: the live releases and their weights, sticky
assignment, pins, shadows, canary outcomes, and the releases a graph serves."""
