"""Soak test: the proxy under mixed traffic and injected faults for N minutes.

``python -m integration.soak.run --minutes N``: see ``run`` for the targets it enforces.
"""
