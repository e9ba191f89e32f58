#!/usr/bin/env bash
# System packages some checks use: promtool (Debian `prometheus`) for the alert rules, wrk for
# `make bench`, and
# Chromium for the offline docs check. Installed only where we are root with apt; elsewhere
# the tests that need them say so (and fail on CI, where they must run).
set -u
need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
command -v wrk >/dev/null || need+=(wrk)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "setup-system: missing ${need[*]}; install them with your package manager" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || echo "setup-system: could not install ${need[*]}" >&2
# The prometheus package may start a server; this service only needs promtool.
pkill -x prometheus 2>/dev/null || true
exit 0
