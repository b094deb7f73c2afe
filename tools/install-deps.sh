#!/usr/bin/env bash
# What sekisho's demo or its tests run on, installed only where it is
# missing, so that `make demo` or `make test` can be the first command on
# a fresh Debian machine (both run this first; .ci/run too).
#
#   tools/install-deps.sh demo   what make demo needs
#   tools/install-deps.sh test   what make test needs (the default)
#   tools/install-deps.sh ha     what make demo-ha needs
#
# A package is installed only when the file that shows it is absent; with
# everything present nothing runs, apt-get included. Installing needs
# root; anyone else is told which packages to install.
set -euo pipefail

set=${1:-test}

# package:file present once the package is installed. npm is looked for
# at /usr/bin/npm: nodesource's nodejs brings its own there, and Debian's
# npm package conflicts with it.
demo=(
	openssh-server:/usr/sbin/sshd openssh-client:/usr/bin/ssh rsync:/usr/bin/rsync
	ca-certificates:/etc/ssl/certs/ca-certificates.crt nodejs:/usr/bin/node npm:/usr/bin/npm
)
# Several nodes share PostgreSQL (Debian 12's is 15) behind HAProxy.
ha=(
	"${demo[@]}" postgresql:/usr/lib/postgresql/15/bin/initdb haproxy:/usr/sbin/haproxy
)
# The end-to-end tests drive terminals through tmux, record with
# asciinema, limit descriptors with prlimit, and test the web console in
# Chromium through ChromeDriver; zsh and fish are among the login shells
# whose reading of a command sekisho's must match; Ansible (ansible-core)
# is a real SSH client of ProxyJump through sekisho; gcc is cgo's
# compiler, which the race detector (go test -race) needs;
# systemd-analyze checks the shipped unit; rsyslog is a real collector of
# the audit log's syslog copy.
test=(
	"${demo[@]}" make:/usr/bin/make tmux:/usr/bin/tmux asciinema:/usr/bin/asciinema
	procps:/usr/bin/pgrep util-linux:/usr/bin/prlimit bsdutils:/usr/bin/script
	chromium:/usr/bin/chromium chromium-driver:/usr/bin/chromedriver
	zsh:/usr/bin/zsh fish:/usr/bin/fish ansible-core:/usr/bin/ansible
	gcc:/usr/bin/gcc systemd:/usr/bin/systemd-analyze rsyslog:/usr/sbin/rsyslogd
	postgresql:/usr/lib/postgresql/15/bin/initdb haproxy:/usr/sbin/haproxy
)
case $set in
demo) want=("${demo[@]}") ;;
test) want=("${test[@]}") ;;
ha) want=("${ha[@]}") ;;
*)
	echo "usage: $0 [demo|test|ha]" >&2
	exit 2
	;;
esac

# Go is not a Debian package here: go.mod asks for a newer one than
# Debian ships.
go=${GO:-go}
if ! command -v "$go" >/dev/null; then
	hint="install Go $(sed -n 's/^go //p' "$(dirname "$0")/../go.mod") or newer from https://go.dev/dl/ (Debian's golang-go is too old)"
	if [ -x /usr/local/go/bin/go ]; then
		hint="add /usr/local/go/bin to PATH"
	fi
	echo "sekisho: Go ($go) is not on PATH: $hint" >&2
	exit 1
fi

need=()
for pkg_file in "${want[@]}"; do
	[ -e "${pkg_file#*:}" ] || need+=("${pkg_file%%:*}")
done
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
	echo "sekisho: missing, and this is not a Debian machine (no apt-get): install the equivalents of the Debian packages ${need[*]}" >&2
	exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "sekisho: missing Debian packages: ${need[*]}" >&2
	echo "install them as root, then run make $set again:" >&2
	echo "  sudo apt-get update && sudo apt-get install --no-install-recommends ${need[*]}" >&2
	exit 1
fi
echo "sekisho: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
