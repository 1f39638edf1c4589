#!/usr/bin/env bash
# Installs what kiln needs to run functions: containerd and runc, from
# Debian's (or Ubuntu's) packages; Prometheus, whose promtool and server
# the tests use to check kilnd's metrics and the deploy/ files; and what
# `kiln build` and the image tests use: debootstrap (python and node
# bases), busybox-static (the shell runtime) and docker-registry (a
# loopback registry for the pull tests); and the engines a kiln cluster
# runs on, for the cluster tests and deploy/: postgresql (--store),
# nats-server (--queue, JetStream) and haproxy (placement in front of the
# nodes; deploy/ checks and runs deploy/haproxy.cfg with it).
# Idempotent: installs only what is missing. Used by `make run` and by CI.
#
# Packages that come with a system service (prometheus, docker-registry,
# postgresql, nats-server, haproxy) have it switched off: the tests start
# their own instances on free loopback ports under temp dirs, and a system
# one nobody asked for would hold the default port (9090, 5000, 5432,
# 4222) at every boot.
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
# The cluster engines, by the binaries the tests run. Debian 12 has
# PostgreSQL 15 (Ubuntu another major), so any version's server will do.
need_cluster=()
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need_cluster+=(postgresql)
[ -x /usr/sbin/nats-server ] || need_cluster+=(nats-server)
[ -x /usr/sbin/haproxy ] || need_cluster+=(haproxy)
if [ ${#need_ctr[@]} -eq 0 ] && [ ${#need_prom[@]} -eq 0 ] && [ ${#need_img[@]} -eq 0 ] && [ ${#need_cluster[@]} -eq 0 ]; then
	echo "install-deps: containerd $(containerd --version | awk '{print $3}'), runc, prometheus, debootstrap, busybox-static, docker-registry, postgresql, nats-server and haproxy present"
	exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=sudo
	else
		echo "install-deps: run as root (or install sudo) to install ${need_ctr[*]} ${need_prom[*]} ${need_img[*]} ${need_cluster[*]}" >&2
		exit 1
	fi
fi

# listening tells whether anything listens on TCP port $1 (IPv4 or IPv6),
# from /proc so that it needs neither ss nor netstat.
listening() {
	local hex
	hex=$(printf '%04X' "$1")
	awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
		/proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# no_service makes sure the system service of package $1, which this run
# just installed, does not run now nor at boot, and that nothing listens
# on its default port $2 because of the install.
no_service() {
	local svc=$1 port=$2
	if [ -d /run/systemd/system ]; then
		$SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
	else
		# No systemd running (a container): the package's postinst started
		# the service through invoke-rc.d, from its sysv script, unless
		# policy-rc.d denied it (most container images deny: exit 101).
		# Stop whatever it started and take it out of the sysv runlevels.
		# (Only packages this run installed get here: what runs is theirs.)
		if [ -x "/etc/init.d/$svc" ]; then
			$SUDO "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
			$SUDO update-rc.d "$svc" disable >/dev/null 2>&1 || true
		fi
		# The postinst also enabled the systemd unit (a symlink in
		# multi-user.target.wants): remove it, so that the same disk booted
		# with systemd does not start the service either. systemctl enable
		# and disable work on the unit files without a running systemd.
		if command -v systemctl >/dev/null 2>&1; then
			$SUDO systemctl disable "$svc.service" >/dev/null 2>&1 || true
		fi
	fi
	if [ "$port" -ne 0 ] && listening "$port"; then
		echo "install-deps: warning: something still listens on port $port after installing $svc; the tests use free ports of their own, but check what it is" >&2
	fi
}

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
	no_service prometheus 9090
	promtool --version | head -n1
fi

if [ ${#need_img[@]} -gt 0 ]; then
	echo "install-deps: missing ${need_img[*]}; installing them (for kiln build and the image tests)"
	# Without recommends: docker-registry's would pull in a monitoring stack.
	$SUDO apt-get install -y -q --no-install-recommends "${need_img[@]}"
	# The tests start their own registry on a free loopback port; the
	# package's system service would listen on :5000 at every boot.
	case " ${need_img[*]} " in *" docker-registry "*) no_service docker-registry 5000 ;; esac
fi

if [ ${#need_cluster[@]} -gt 0 ]; then
	echo "install-deps: missing ${need_cluster[*]}; installing them (for the cluster tests and deploy/)"
	# Without recommends: postgresql's pull in sysstat, another service.
	$SUDO apt-get install -y -q --no-install-recommends "${need_cluster[@]}"
	for pkg in "${need_cluster[@]}"; do
		case $pkg in
		# postgresql-common's postinst also creates a cluster "main" on
		# 5432 (/var/lib/postgresql/*/main); it is left in place, stopped.
		postgresql) no_service postgresql 5432 ;;
		nats-server) no_service nats-server 4222 ;;
		# Debian's /etc/haproxy/haproxy.cfg has no frontend: it would
		# listen on nothing, but it is a process nobody asked for.
		haproxy) no_service haproxy 0 ;;
		esac
	done
	for bin in /usr/lib/postgresql/*/bin/postgres; do "$bin" --version; done
	/usr/sbin/nats-server --version
	# sed, not head: head would close the pipe on haproxy's later lines,
	# and pipefail would make that SIGPIPE the script's exit status.
	/usr/sbin/haproxy -v | sed -n 1p
fi
