"""What identifies the agent's seccomp filter from inside (no imports: check-isolation loads
this in every sandbox, and the filter builder shares it).

Any filter refusing ``unshare`` with EPERM (a container runtime's default profile does)
would pass a check that only looks for refusals, so the agent filter also answers one call
no kernel and no other profile answers this way: ``prctl`` with an option number Linux does
not define fails with ``MARK_ERRNO`` instead of EINVAL.
"""

from __future__ import annotations

MARK_PRCTL_OPTION = 0x4F53_4846  # "OSHF": not a prctl option (the kernel says EINVAL)
MARK_ERRNO = 131  # ENOTRECOVERABLE, which prctl never returns

# Address families: the agent may open sockets of these only (AF_UNIX, AF_INET, AF_INET6,
# AF_NETLINK); netlink only with protocol NETLINK_ROUTE (libc's getaddrinfo and interface
# listing use it). Every other family number below FAMILY_LIMIT is refused with
# EAFNOSUPPORT (as if the kernel lacked it): AF_VSOCK, which network namespaces do not
# confine, AF_PACKET, AF_BLUETOOTH, ... Linux 6.x defines 46 families.
ALLOWED_FAMILIES = (1, 2, 10, 16)
AF_NETLINK = 16
NETLINK_ROUTE = 0
FAMILY_LIMIT = 64
