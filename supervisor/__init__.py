"""openshell-supervisor: privileged entrypoint of an AI-agent sandbox container."""

__version__ = "0.1.0"
