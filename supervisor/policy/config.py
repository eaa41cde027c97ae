"""The loader ``run --policy`` uses: profiles plus the policy's network entries.

The static part (filesystem_policy, landlock, process) is what the sandbox started with;
a reload that changes it is logged and ignored (only ``network_policies`` is dynamic).
"""

from __future__ import annotations

from collections.abc import Sequence

from supervisor import logs
from supervisor.policy.loader import load_config
from supervisor.policy.model import SandboxPolicy
from supervisor.profiles.profileset import ProfileSet

log = logs.get("supervisor.policy")  # logging is imported on first use


class PolicyConfig:
    def __init__(self, policy_path: str) -> None:
        self.path = policy_path
        self.started: SandboxPolicy | None = None  # the policy of the first load

    def __call__(self, profile_paths: Sequence[str]) -> ProfileSet:
        profiles, policy = load_config(profile_paths, self.path)
        assert policy is not None  # load_config raised otherwise
        if self.started is None:
            self.started = policy
        elif policy.static_part() != self.started.static_part():
            log.warning("%s: filesystem_policy, landlock and process are fixed at start: "
                        "their change is ignored until restart (network_policies reloaded)",
                        self.path)
        return profiles
