#!/usr/bin/env bash
# Puts the upstream source tarballs pgkraft builds from into <repo>/sources/,
# for machines that reach the Debian archive but not the rest of the
# internet. A Debian source package's .orig tarball is the upstream release
# tarball, and apt checks it against the archive's signed index, so it is as
# good as the upstream download. build::fetch then finds each file by the
# sha256 a recipe pins. A suite's version can move at a Debian point release
# (PostgreSQL's do); the line printed for a download gives its sha256.
#
# Idempotent: a tarball that is already there with the archive's hash is not
# downloaded again. Prints one line per source; on failure, everything.
#
# Usage: ci/fetch-sources.sh [PACKAGE...]
#   PACKAGE: a name from the list below (musl, postgresql-15, ...); default all.
#   PGKRAFT_SOURCES_DIR: where to put the tarballs (default <repo>/sources).
set -euo pipefail

# One line per source package: <package>/<Debian suite>.
PACKAGES=(
  musl/bookworm            # musl_1.2.3.orig.tar.gz == musl-1.2.3.tar.gz
  postgresql-17/trixie
  postgresql-15/bookworm
)

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${PGKRAFT_SOURCES_DIR:-$repo/sources}
if [ $# -gt 0 ]; then
  chosen=()
  for want in "$@"; do
    match=""
    for pkg in "${PACKAGES[@]}"; do
      [ "${pkg%%/*}" = "$want" ] && match=$pkg
    done
    [ -n "$match" ] || { echo "fetch-sources: unknown package '$want'; known: ${PACKAGES[*]%%/*}" >&2; exit 2; }
    chosen+=("$match")
  done
  PACKAGES=("${chosen[@]}")
fi
list=/etc/apt/sources.list.d/pgkraft-src.sources

die() {
  echo "fetch-sources: $*" >&2
  exit 1
}

sudo_if_needed() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian's own mirror, as this machine's apt already uses it.
mirror() {
  local m
  m=$(sed -n 's/^URIs:[[:space:]]*\(http[^[:space:]]*debian\)\/*[[:space:]]*$/\1/p' \
        /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
  echo "${m:-http://deb.debian.org/debian}"
}

ensure_deb_src() {
  local want suites
  suites=$(printf '%s\n' "${PACKAGES[@]}" | sed 's|.*/||' | sort -u | tr '\n' ' ')
  want="Types: deb-src
URIs: $(mirror)
Suites: ${suites% }
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  if [ ! -f "$list" ] || [ "$(cat "$list")" != "$want" ]; then
    printf '%s\n' "$want" | sudo_if_needed tee "$list" >/dev/null
  fi
}

apt_update() {
  local out
  if ! out=$(sudo_if_needed apt-get update 2>&1); then
    printf '%s\n' "$out" >&2
    die "apt-get update failed (see above)"
  fi
}

# Prints "<url> <file> <sha256>" of the package's .orig tarball, from the
# apt-get source --print-uris line "'url' file size SHA256:hash".
orig_of() {
  apt-get source --print-uris "$1" 2>/dev/null |
    awk -v q="'" '$2 ~ /\.orig\.tar\./ && $4 ~ /^SHA256:/ {
      gsub(q, "", $1); sub(/^SHA256:/, "", $4); print $1, $2, $4 }'
}

sha256_of() {
  sha256sum "$1" | cut -d' ' -f1
}

mkdir -p "$dest"

# The source indexes are only needed for packages not yet resolvable; an
# update is the slow part of a run that has nothing to do.
missing_index=0
for pkg in "${PACKAGES[@]}"; do
  [ -n "$(orig_of "$pkg")" ] || missing_index=1
done
if [ "$missing_index" = 1 ]; then
  ensure_deb_src
  apt_update
fi

# The scratch directory of the download under way, removed however we exit.
tmp=""
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT

# Fetches one package's .orig tarball into $dest; returns nonzero (after
# printing why) on failure so the other packages are still tried.
fetch_one() {
  local pkg=$1 info file sha out got
  info=$(orig_of "$pkg")
  if [ -z "$info" ]; then
    echo "fetch-sources: $pkg: no .orig tarball in the apt source indexes (is the deb-src entry in $list right?)" >&2
    return 1
  fi
  read -r _ file sha <<<"$info"

  if [ -f "$dest/$file" ] && [ "$(sha256_of "$dest/$file")" = "$sha" ]; then
    echo "fetch-sources: $file already present"
    return 0
  fi

  # Download into a scratch directory: apt-get source also fetches the .dsc
  # and the Debian packaging, which pgkraft does not use.
  tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
  if ! out=$(cd "$tmp" && apt-get source --download-only "$pkg" 2>&1); then
    # A point release may have replaced the file since the last update.
    apt_update
    if ! out=$(cd "$tmp" && apt-get source --download-only "$pkg" 2>&1); then
      rm -rf "$tmp"
      printf '%s\n' "$out" >&2
      echo "fetch-sources: $pkg: apt-get source failed (output above)" >&2
      return 1
    fi
  fi
  if [ ! -f "$tmp/$file" ]; then
    rm -rf "$tmp"
    printf '%s\n' "$out" >&2
    echo "fetch-sources: $pkg: $file was not downloaded (output above)" >&2
    return 1
  fi
  got=$(sha256_of "$tmp/$file")
  if [ "$got" != "$sha" ]; then
    rm -rf "$tmp"
    echo "fetch-sources: $pkg: $file has sha256 $got, the archive index says $sha" >&2
    return 1
  fi
  mv -f "$tmp/$file" "$dest/$file"
  rm -rf "$tmp"
  tmp=""
  # The hash is what a recipe pins; print it for whoever updates one.
  echo "fetch-sources: $file downloaded ($pkg, sha256 $sha)"
}

failed=()
for pkg in "${PACKAGES[@]}"; do
  fetch_one "$pkg" || failed+=("$pkg")
done
[ ${#failed[@]} = 0 ] || die "FAILED: ${failed[*]} (the others are in $dest)"
