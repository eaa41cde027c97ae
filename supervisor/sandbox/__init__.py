"""Sandbox preparation: namespaces, privilege drop, spawning, signals, isolation checks."""
