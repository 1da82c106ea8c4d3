from tests.governance.pii.test_canary import seeded, viewer  # noqa: F401  (fixture re-export)
