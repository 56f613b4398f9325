#!/bin/sh
# Prints, one per line, the Debian/Ubuntu packages that own the shared libraries BINARY loads
# (ldd, then dpkg -S on each resolved path). The container files run it in the build stage and
# install exactly that list in the runtime stage, so the runtime image carries what the binary
# needs and nothing else, without a hand-kept list that drifts from the link line.
# Libraries that ldd cannot resolve (libcuda.so.1 comes from the host's driver through the
# NVIDIA container toolkit) or that no package owns are reported on stderr and skipped.
set -eu
binary=${1:?usage: runtime-packages.sh BINARY}
ldd "$binary" | awk '/=> not found/ { print "unresolved: " $1 > "/dev/stderr"; next }
                    /=> \// { print $3 }' |
while read -r lib; do
  # dpkg records the path it installed, which may be the symlink or its target.
  owner=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null || true)
  if [ -z "$owner" ]; then
    echo "no package owns $lib" >&2
    continue
  fi
  # "libfoo1:amd64: /usr/lib/..." -> "libfoo1:amd64"; a path shared by several packages is
  # listed as "a, b: /path" (any of them provides it; installing all is harmless).
  echo "$owner" | head -n 1 | sed 's/: .*//' | tr ',' '\n' | tr -d ' '

done | sort -u
