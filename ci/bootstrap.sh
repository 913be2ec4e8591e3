#!/usr/bin/env bash
# Installs the system packages pgkraft's build and tests need on a fresh Debian
# machine: the C toolchain, QEMU (cross-boot tests), PostgreSQL's build tools
# (bison, flex, perl: PostgreSQL 17 tarballs ship no generated parsers), patch,
# curl (pool downloads in fetch-sources.sh), setpriv (initdb as nobody) and
# PostgreSQL's client programs (psql, pgbench, pg_dump) for the server tests
# and chromium (headless) for the report page test.
# Idempotent: does nothing when everything is already there.
set -euo pipefail

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v strace >/dev/null || need+=(strace)
command -v ld >/dev/null || need+=(binutils)
command -v gcc >/dev/null || need+=(gcc)
command -v make >/dev/null || need+=(make)
command -v patch >/dev/null || need+=(patch)
command -v curl >/dev/null || need+=(curl)
command -v bison >/dev/null || need+=(bison)
command -v flex >/dev/null || need+=(flex)
command -v perl >/dev/null || need+=(perl)
command -v setpriv >/dev/null || need+=(util-linux)
command -v dpkg-source >/dev/null || need+=(dpkg-dev)
# The tap test makes its own network namespace and tap device.
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
# Real PostgreSQL clients for the server tests: psql, pgbench, pg_dump.
command -v psql >/dev/null || need+=(postgresql-client-15)
command -v pgbench >/dev/null || need+=(postgresql-client-15)
# A real headless browser for the `bench report` page test (tests/report.rs).
command -v chromium >/dev/null || need+=(chromium)

if [ ${#need[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/tmp/pgkraft-bootstrap.log 2>&1 || { cat /tmp/pgkraft-bootstrap.log >&2; exit 1; }
fi
