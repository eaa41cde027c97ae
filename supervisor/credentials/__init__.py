"""Static credentials the agent never sees (ARCHITECTURE.md 9).

The agent's environment holds ``<VAR>=openshell:resolve:env:<VAR>``; the proxy swaps the
placeholder for the real value only in requests to the endpoints of the profiles that
declare ``VAR``. Every module here except ``sources`` is a pure core without I/O.
"""
