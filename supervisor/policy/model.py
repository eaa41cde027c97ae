"""The typed sandbox policy. Frozen: a reload swaps the whole object."""

from __future__ import annotations

from supervisor.profiles.model import Endpoint
from supervisor.record import record
from supervisor.sandbox.fsrules import FsPolicy


@record
class NetworkEntry:
    """One ``network_policies`` entry: endpoints usable by the listed binaries only."""

    key: str
    name: str
    endpoints: tuple[Endpoint, ...]
    # (endpoint, profile id) for endpoints with ``credential_binding``
    bound: tuple[tuple[Endpoint, str], ...]
    binaries: tuple[str, ...]  # empty: no process may use these endpoints (as OpenShell)


@record
class SandboxPolicy:
    source: str
    filesystem: FsPolicy | None  # None: no filesystem_policy, no Landlock
    run_as_user: str | None  # "sandbox" or a decimal id
    run_as_group: str | None
    network: tuple[NetworkEntry, ...]
    middlewares: tuple[str, ...]  # keys of network_middlewares (accepted, not supported)

    def static_part(self) -> tuple[object, ...]:
        """What is fixed at start: a reload that changes it is logged and ignored."""
        return (self.filesystem, self.run_as_user, self.run_as_group)
