"""The agent's egress proxy: strict HTTP/1.1, policy, injection, TLS interception."""
