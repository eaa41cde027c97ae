"""Token grants: Workload API client, RFC 7523 exchange, token cache."""
