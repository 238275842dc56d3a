"""Training losses and the query-to-instance matcher."""
