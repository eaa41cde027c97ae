#!/usr/bin/env bash
# Installs the Debian packages the project needs, only when they are missing.
# Usage: scripts/bootstrap-system.sh [build|test|bench]
set -euo pipefail
want=("$@")
[ ${#want[@]} -gt 0 ] || want=(build)

pkgs=()
need() { dpkg -s "$1" >/dev/null 2>&1 || pkgs+=("$1"); }
# For tools that may come from elsewhere than Debian (e.g. a vendor nodejs that bundles npm).
need_cmd() { command -v "$1" >/dev/null 2>&1 || pkgs+=("$2"); }
for w in "${want[@]}"; do
  case "$w" in
    build) need libcap-dev; need gcc; need libc6-dev; need python3-venv ;;  # python-prctl compiles against libcap; openshell-init is a static C binary (libc.a)
    test)  need curl; need_cmd node nodejs; need_cmd npm npm; need iproute2; need openssl; need libseccomp2 ;;  # curl/node agents, seccomp tests
    bench) need nginx; need tinyproxy; need wrk; need apache2-utils; need curl ;;  # curl: bulk legs
    *) echo "unknown set: $w" >&2; exit 2 ;;
  esac
done
[ ${#pkgs[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${pkgs[*]} (run as root or install them)" >&2
  exit 1
fi
echo "installing Debian packages: ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
