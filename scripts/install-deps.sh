#!/usr/bin/env bash
# Installs what kiln needs to run functions: containerd and runc, from
# Debian's (or Ubuntu's) packages. Idempotent: does nothing when they are
# already there. Used by `make run` and by CI.
set -euo pipefail

need=()
for bin in containerd runc containerd-shim-runc-v2; do
	command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
if [ ${#need[@]} -eq 0 ]; then
	echo "install-deps: containerd $(containerd --version | awk '{print $3}') and runc present"
	exit 0
fi

echo "install-deps: missing ${need[*]}; installing containerd and runc"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=sudo
	else
		echo "install-deps: run as root (or install sudo) to install containerd and runc" >&2
		exit 1
	fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q containerd runc
# The Debian package starts a system containerd; kiln never uses it (it
# runs its own under its data dir), so it is left as the package set it up.
containerd --version
runc --version | head -n1
