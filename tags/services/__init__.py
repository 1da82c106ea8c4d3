"""Every write to tags goes through these modules (store, definitions, recompute)."""
