# syntax=docker/dockerfile:1
#
# openshell-supervisor: the privileged entrypoint of an AI-agent sandbox container.
#
# The entrypoint runs as root and runs the agent (the container's command) as uid/gid
# 65534 (nobody:nogroup) in its own mount, network and PID namespaces, with no capabilities,
# no_new_privs, and the supervisor's proxy as its only way out.
#
# Required capabilities (grant exactly these; drop the rest):
#   SYS_ADMIN   unshare mount/network/PID/IPC namespaces, tmpfs over the Workload API
#               socket's directory, /proc and /sys (sysfs, remounted read-only) of the
#               agent, setns
#   SYS_CHROOT  setns into a mount namespace (the kernel requires it beside SYS_ADMIN)
#   NET_ADMIN   bring up lo in the agent's network namespace
#   SETUID, SETGID  switch to the agent's uid, gid and groups
#   SETPCAP     empty the agent's capability bounding set
#   KILL        forward signals to the agent, which runs as another uid
#   SYS_PTRACE  read the agent's /proc/<pid>/exe and fd links (another uid, non-dumpable)
#               to know which executable opened a connection (binaries in profiles/policy)
#
# Seccomp: the runtimes' default profiles allow unshare/setns/mount/umount2 only when
# CAP_SYS_ADMIN is granted, and then for every process in the container, including user
# namespaces for the agent. Use deploy/seccomp/openshell-supervisor.json: the default shape
# plus mount/umount2/setns/unshare/clone for the supervisor, never CLONE_NEWUSER (setsid,
# prctl and seccomp, with which the sandbox's child loads the agent's own filter, are in the
# default shape). As a last resort, seccomp=unconfined.
# AppArmor: docker-default (and containerd's default) deny mount(2): run with
# apparmor=unconfined or a custom profile that allows the tmpfs, proc and sysfs mounts and
# the read-only bind remount of /sys.
#
# Example (the Workload API socket directory must be dedicated, never /run, /tmp, /var...):
#   docker build -t openshell-supervisor:0.1.0 .
#   docker run --rm -it \
#     --cap-drop ALL \
#     --cap-add SYS_ADMIN --cap-add SYS_CHROOT --cap-add NET_ADMIN \
#     --cap-add SETUID --cap-add SETGID --cap-add SETPCAP --cap-add KILL --cap-add SYS_PTRACE \
#     --security-opt seccomp=deploy/seccomp/openshell-supervisor.json \
#     --security-opt apparmor=unconfined \
#     -v "$PWD/profiles.yaml:/etc/openshell/profiles/profiles.yaml:ro" \
#     -v /run/spire/agent-sockets:/spiffe-workload-api:ro \
#     openshell-supervisor:0.1.0 curl -sS http://alpha.example.internal/
# The agent's identity is the supervisor's --user option (default 65534:65534); to change it,
# override the entrypoint:
#   docker run ... --entrypoint openshell-supervisor IMAGE run --user 10001:10001 -- CMD...
#
# Kubernetes: deploy/kubernetes/ (SPIFFE CSI driver, ClusterSPIFFEID, seccomp, AppArmor).

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: wheels of the project and of every dependency (python-prctl compiles) ----
FROM ${PYTHON_IMAGE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libcap-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY supervisor ./supervisor
# openshell-init, PID 1 of the agent's namespace: static, so it loads nothing at exec; the
# wheel carries it as package data.
RUN gcc -O2 -static -s -Wall -Wextra -Werror \
      -o supervisor/sandbox/openshell-init supervisor/sandbox/openshell-init.c \
 && pip wheel --no-cache-dir . -w /wheels

# ---- runtime: no compiler, no headers, only the shared libraries the wheels link ----
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="openshell-supervisor" \
      org.opencontainers.image.description="Privileged entrypoint of an AI-agent sandbox: namespaces, egress proxy, SPIFFE-backed token grants" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.openshell.required-capabilities="SYS_ADMIN,SYS_CHROOT,NET_ADMIN,SETUID,SETGID,SETPCAP,KILL,SYS_PTRACE"

# libcap2: python-prctl links it. curl: the demo agent's HTTP client (it honours http_proxy).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2 libseccomp2 curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Byte-compile the package at build time (and fail the build on a file that does not
# compile): the supervisor starts from .pyc files, with nothing to compile or write at start.
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels openshell-supervisor \
 && rm -rf /wheels \
 && site="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
 && test -f "$site/supervisor/__init__.py" \
 && test -x "$site/supervisor/sandbox/openshell-init" \
 && chmod 0711 "$site/supervisor/sandbox/openshell-init" \
 && python -m compileall -q "$site/supervisor"

# The agent's identity: nobody:nogroup (65534), the supervisor's default --user. Fail the
# build if the base image lacks it. The agent's working directory is the only place it owns.
# The Workload API socket's dedicated directory and the profiles directory exist even when
# nothing is mounted there, so the supervisor can always shadow the former.
RUN getent passwd 65534 && getent group 65534 \
 && mkdir -p /workspace /spiffe-workload-api /etc/openshell/profiles \
 && chown 65534:65534 /workspace && chmod 0750 /workspace

ENV OPENSHELL_SUPERVISOR_PROFILES=/etc/openshell/profiles/profiles.yaml \
    SPIFFE_ENDPOINT_SOCKET=unix:///spiffe-workload-api/spire-agent.sock \
    PYTHONUNBUFFERED=1

WORKDIR /workspace
# No USER: the supervisor must start as root; it drops the agent to 65534 itself.
# No HEALTHCHECK: the supervisor's liveness is its agent's; nothing here should dial out.
HEALTHCHECK NONE
STOPSIGNAL SIGTERM
ENTRYPOINT ["openshell-supervisor", "run", "--"]
CMD ["/bin/sh"]
