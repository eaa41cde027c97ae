"""Development servers (Workload API, token issuer, demo services) used by `demo` and tests."""
