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

# One line per source package: <package>/<Debian suite> [FALLBACK...].
# A FALLBACK is a Debian version (as in the .dsc name) to download from the
# pool when the suite's own version cannot be: a mirror can lag behind its
# index (this happens at point releases). Fallbacks are listed newest
# first; the first one that downloads and verifies wins.
PACKAGES=(
  "musl/bookworm"                           # musl_1.2.3.orig.tar.gz == musl-1.2.3.tar.gz
  "postgresql-17/trixie 17.11-0+deb13u1"    # the trixie index names 17.12; mirrors answered 404 for it
  "postgresql-15/bookworm"
  "postgresql-18/sid 18.6-3"                # only unstable carries 18 (18.6-3 when pinned)
)

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${PGKRAFT_SOURCES_DIR:-$repo/sources}
# The deb-src entry names the suites of every package, chosen or not, so
# runs for different packages leave the same entry (and apt indexes).
ALL_PACKAGES=("${PACKAGES[@]}")
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
  suites=$(printf '%s\n' "${ALL_PACKAGES[@]}" | sed 's|^[^/]*/||; s| .*||' | sort -u | tr '\n' ' ')
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
for entry in "${PACKAGES[@]}"; do
  [ -n "$(orig_of "${entry%% *}")" ] || missing_index=1
done
if [ "$missing_index" = 1 ]; then
  ensure_deb_src
  apt_update
fi

# The scratch directory of the download under way, removed however we exit.
tmp=""
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT

# Moves a verified download into $dest and prints the line a recipe pin
# is copied from.
keep() {
  local file=$1 what=$2 sha=$3
  mv -f "$tmp/$file" "$dest/$file"
  rm -rf "$tmp"
  tmp=""
  echo "fetch-sources: $file downloaded ($what, sha256 $sha)"
}

# Prints "<file> <sha256>" of the .orig tarball a .dsc lists.
dsc_orig() {
  awk '/^Checksums-Sha256:/ { s = 1; next } /^[^ ]/ { s = 0 }
       s && $3 ~ /\.orig\.tar\./ { print $3, $1 }' "$1"
}

# Downloads Debian version $2 of source package $1 straight from the pool,
# for versions the indexes no longer (or not yet) name.
#
# Trust: the .dsc is fetched over plain HTTP and its OpenPGP signature is
# NOT checked (there is no Debian keyring with the uploaders' keys here), so
# the tarball is only as trustworthy as the connection to the mirror: the
# sha256 check below catches a damaged download, not a substituted .dsc.
# That is why the sha256 is printed: pin it in the recipe after comparing it
# once with upstream's (https://ftp.postgresql.org/pub/source/v<version>/
# publishes a .sha256 next to each tarball; Debian's PostgreSQL .orig is
# meant to be that very file, so the two should match).
fetch_pool() {
  local pkg=$1 version=$2 dir base url file sha got
  command -v curl >/dev/null || { echo "fetch-sources: $pkg $version: curl is needed for pool downloads (apt-get install curl)" >&2; return 1; }
  case $pkg in lib?*) dir=${pkg:0:4} ;; *) dir=${pkg:0:1} ;; esac
  # The epoch is not part of file names; '+' is escaped as apt does.
  base="$(mirror)/pool/main/$dir/$pkg/"
  url="$base${pkg}_${version#*:}.dsc"
  tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
  if ! curl -fsS -o "$tmp/dsc" "${url//+/%2b}" 2>"$tmp/err"; then
    echo "fetch-sources: $pkg $version: $(cat "$tmp/err")" >&2
    rm -rf "$tmp"; tmp=""
    return 1
  fi
  read -r file sha <<<"$(dsc_orig "$tmp/dsc")"
  if [ -z "$file" ]; then
    echo "fetch-sources: $pkg $version: $url lists no .orig tarball" >&2
    rm -rf "$tmp"; tmp=""
    return 1
  fi
  if [ -f "$dest/$file" ] && [ "$(sha256_of "$dest/$file")" = "$sha" ]; then
    rm -rf "$tmp"; tmp=""
    echo "fetch-sources: $file already present ($pkg $version, sha256 $sha)"
    return 0
  fi
  if ! curl -fsS -o "$tmp/$file" "${base//+/%2b}${file//+/%2b}" 2>"$tmp/err"; then
    echo "fetch-sources: $pkg $version: $(cat "$tmp/err")" >&2
    rm -rf "$tmp"; tmp=""
    return 1
  fi
  got=$(sha256_of "$tmp/$file")
  if [ "$got" != "$sha" ]; then
    echo "fetch-sources: $pkg $version: $file has sha256 $got, its .dsc says $sha" >&2
    rm -rf "$tmp"; tmp=""
    return 1
  fi
  keep "$file" "$pkg $version from the pool, .dsc signature not checked" "$sha"
}

# Fetches one package's .orig tarball into $dest; returns nonzero (after
# printing why) on failure so the other packages are still tried.
fetch_one() {
  local entry=$1 pkg info file sha out got version
  pkg=${entry%% *}
  read -r -a fallbacks <<<"${entry#"$pkg"}"
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
      tmp=""
      for version in "${fallbacks[@]}"; do
        echo "fetch-sources: $pkg: the indexed $file does not download; trying $version from the pool" >&2
        fetch_pool "${pkg%%/*}" "$version" && return 0
      done
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
  # The hash is what a recipe pins; print it for whoever updates one.
  keep "$file" "$pkg" "$sha"
}

failed=()
for entry in "${PACKAGES[@]}"; do
  fetch_one "$entry" || failed+=("${entry%% *}")
done
[ ${#failed[@]} = 0 ] || die "FAILED: ${failed[*]} (the others are in $dest)"
