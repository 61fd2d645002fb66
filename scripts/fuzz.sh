#!/usr/bin/env bash
# Runs every fuzz target in the module for FUZZTIME each (default 10m), then
# copies up to KEEP (default 40) inputs of each target's generated corpus into
# the package's testdata/fuzz/<Target>/ so that plain `go test` replays them.
#
#   scripts/fuzz.sh              # every target, 10 minutes each
#   FUZZTIME=30s scripts/fuzz.sh ./crdt/ ./internal/wire/
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10m}
keep=${KEEP:-40}
pkgs=("$@")
[ ${#pkgs[@]} -eq 0 ] && pkgs=(./...)
cache=$(go env GOCACHE)/fuzz
module=$(go list -m)
for pkg in $(go list "${pkgs[@]}"); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "== $pkg $target ($fuzztime)"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
    src="$cache/$pkg/$target"
    dst="$dir/testdata/fuzz/$target"
    if [ -d "$src" ]; then
      mkdir -p "$dst"
      # Keep the committed corpus small: the smallest inputs first.
      ls -S -r "$src" | head -n "$keep" | while read -r f; do cp "$src/$f" "$dst/$f"; done
    fi
  done
done
echo "fuzzing done for module $module"
