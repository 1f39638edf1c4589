#!/usr/bin/env bash
# Installs what kiln needs to run functions: containerd and runc, from
# Debian's (or Ubuntu's) packages; Prometheus, whose promtool and server
# the tests use to check kilnd's metrics and the deploy/ files; and what
# `kiln build` and the image tests use: debootstrap (python and node
# bases), busybox-static (the shell runtime) and docker-registry (a
# loopback registry for the pull tests).
# Idempotent: installs only what is missing. Used by `make run` and by CI.
set -euo pipefail

need_ctr=()
for bin in containerd runc containerd-shim-runc-v2; do
	command -v "$bin" >/dev/null 2>&1 || need_ctr+=("$bin")
done
need_prom=()
for bin in prometheus promtool; do
	command -v "$bin" >/dev/null 2>&1 || need_prom+=("$bin")
done
need_img=()
[ -x /usr/sbin/debootstrap ] || need_img+=(debootstrap)
[ -x /usr/bin/docker-registry ] || need_img+=(docker-registry)
# Debian's plain "busybox" is dynamically linked and cannot run in an image
# without a C library, so the package is checked, not only the binary.
if ! [ -x /bin/busybox ] || ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
	need_img+=(busybox-static)
fi
if [ ${#need_ctr[@]} -eq 0 ] && [ ${#need_prom[@]} -eq 0 ] && [ ${#need_img[@]} -eq 0 ]; then
	echo "install-deps: containerd $(containerd --version | awk '{print $3}'), runc, prometheus, debootstrap, busybox-static and docker-registry present"
	exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=sudo
	else
		echo "install-deps: run as root (or install sudo) to install ${need_ctr[*]} ${need_prom[*]} ${need_img[*]}" >&2
		exit 1
	fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q

if [ ${#need_ctr[@]} -gt 0 ]; then
	echo "install-deps: missing ${need_ctr[*]}; installing containerd and runc"
	$SUDO apt-get install -y -q containerd runc
	# The Debian package starts a system containerd; kiln never uses it (it
	# runs its own under its data dir), so it is left as the package set it up.
	containerd --version
	runc --version | head -n1
fi

if [ ${#need_prom[@]} -gt 0 ]; then
	echo "install-deps: missing ${need_prom[*]}; installing prometheus (for the tests)"
	# Without recommends: they pull in node-exporter, another service.
	$SUDO apt-get install -y -q --no-install-recommends prometheus
	# The tests start their own Prometheus on a free port. The package's
	# system service, which this script just installed and which nobody
	# asked for, would listen on :9090 at every boot: switch it off.
	if [ -d /run/systemd/system ]; then
		$SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
	fi
	promtool --version | head -n1
fi

if [ ${#need_img[@]} -gt 0 ]; then
	echo "install-deps: missing ${need_img[*]}; installing them (for kiln build and the image tests)"
	# Without recommends: docker-registry's would pull in a monitoring stack.
	$SUDO apt-get install -y -q --no-install-recommends "${need_img[@]}"
	# The tests start their own registry on a free loopback port; the
	# package's system service would listen on :5000 at every boot.
	if [ -d /run/systemd/system ]; then
		$SUDO systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
	fi
fi
