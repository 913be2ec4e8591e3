#!/usr/bin/env bash
# Installs the system packages pgkraft's build and tests need on a fresh Debian
# machine: the C toolchain, QEMU (cross-boot tests), PostgreSQL's build tools
# (bison, flex, perl: PostgreSQL 17 tarballs ship no generated parsers), patch,
# curl (pool downloads in fetch-sources.sh), setpriv (initdb as nobody) and
# PostgreSQL's client programs (psql, pgbench, pg_dump) for the server tests,
# chromium (headless) for the report page test, skopeo and docker-registry
# (the OCI artifact test round-trips through a registry on 127.0.0.1), and
# the SPDX validator the SBOM test runs (PyPI's spdx-tools, in a venv at
# $PGKRAFT_SPDX_VENV).
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
# `pgkraft package`'s test: a real OCI tool and a real registry. The
# registry package's service needs systemd, which a CI container lacks: the
# test starts its own, on loopback only.
command -v skopeo >/dev/null || need+=(skopeo)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
# The SBOM test's validator lives in a venv (Debian's pip refuses to
# install into the system Python).
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)

if [ ${#need[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/tmp/pgkraft-bootstrap.log 2>&1 || { cat /tmp/pgkraft-bootstrap.log >&2; exit 1; }
fi

# PyPI's SPDX validator (`pyspdxtools -i FILE`), pinned, for tests/sbom.rs;
# tests/sbom.rs looks for it here ($PGKRAFT_SPDX_VENV, the same default).
SPDX_VENV="${PGKRAFT_SPDX_VENV:-$HOME/.local/share/pgkraft/spdx-venv}"
SPDX_TOOLS_VERSION=0.8.5
installed=$("$SPDX_VENV/bin/pip" show spdx-tools 2>/dev/null || true)
if ! grep -qx "Version: $SPDX_TOOLS_VERSION" <<<"$installed"; then
  echo "bootstrap: installing spdx-tools $SPDX_TOOLS_VERSION into $SPDX_VENV" >&2
  python3 -m venv "$SPDX_VENV"
  "$SPDX_VENV/bin/pip" install -q "spdx-tools==$SPDX_TOOLS_VERSION" >/tmp/pgkraft-bootstrap-pip.log 2>&1 \
    || { cat /tmp/pgkraft-bootstrap-pip.log >&2; exit 1; }
fi
