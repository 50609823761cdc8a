#!/usr/bin/env bash
# Build the Go whereabouts CNI plugin (the one we replace) and its node-slice
# controller from the Go module proxy into a cache outside the repo, reusing
# them when present. Used by the compatibility tests (tests/compat), the
# node-slice tests (tests/ops/test_nodeslices.py) and the benchmarks (bench/).
#
#   GO_WHEREABOUTS_VERSION   module version to build (default v0.9.4)
#   WHEREABOUTS_CACHE        cache root (default ~/.cache/whereabouts-testenv)
#
# Output: the path of the plugin on stdout (last line); progress on stderr.
# The plugin is $CACHE/go-whereabouts-<version>/whereabouts, the controller
# `nodeslicecontroller` next to it.
set -euo pipefail

LOG_TAG="build-go-whereabouts"
# shellcheck source=hack/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

VERSION="${GO_WHEREABOUTS_VERSION:-v0.9.4}"
MODULE="github.com/k8snetworkplumbingwg/whereabouts"
OUT_DIR="$CACHE_ROOT/go-whereabouts-$VERSION"
BIN="$OUT_DIR/whereabouts"
CONTROLLER="$OUT_DIR/nodeslicecontroller"


[[ "$VERSION" =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]] \
  || fail "check GO_WHEREABOUTS_VERSION ('$VERSION' is not a module version like v0.9.4)"

if [[ -x "$BIN" && -x "$CONTROLLER" ]]; then
  say "whereabouts $VERSION cached"
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || fail "find go (install Go 1.25 or newer)"
mkdir -p "$OUT_DIR" || fail "create $OUT_DIR"

# Only one build of a version at a time (setup.sh, the test fixture and the
# benchmarks may all ask for it).
exec 8>"$OUT_DIR/.build.lock" || fail "open $OUT_DIR/.build.lock"
if command -v flock >/dev/null; then
  flock -n 8 || { say "another build of $VERSION is running: waiting for it"; flock 8; } \
    || fail "lock $OUT_DIR/.build.lock"
fi
if [[ -x "$BIN" && -x "$CONTROLLER" ]]; then
  say "whereabouts $VERSION built by another process meanwhile"
  echo "$BIN"
  exit 0
fi

# A scratch module that only requires upstream: the upstream go.mod's require
# lines apply (minimal version selection), its replace lines do not, so they
# are copied over below.
SRC="$CACHE_ROOT/src/go-whereabouts-$VERSION"
mkdir -p "$SRC" || fail "create $SRC"
cd "$SRC" || fail "cd $SRC"
export GOFLAGS=-mod=mod
[[ -f go.mod ]] || go mod init testenv-go-whereabouts >/dev/null 2>&1 || fail "go mod init in $SRC"

say "$VERSION: downloading $MODULE@$VERSION from the module proxy"
# On failure `go mod download -json` still prints JSON, with the reason in "Error".
upstream_mod="$(go mod download -json "$MODULE@$VERSION" | python3 -c '
import json, sys
info = json.load(sys.stdin)
if info.get("Error") or not info.get("GoMod"):
    sys.exit("[build-go-whereabouts] " + (info.get("Error") or "no go.mod in the answer"))
print(info["GoMod"])')" || fail "go mod download $MODULE@$VERSION (is the version published? is GOPROXY reachable?)"

say "$VERSION: copying the replace directives of its go.mod"
# Both forms: `replace a => b v` and a `replace ( ... )` block. Local (./..)
# replacements cannot work outside the upstream tree and are skipped.
python3 - "$upstream_mod" >replaces.txt <<'EOF' || fail "read the replace directives of $upstream_mod"
import re, sys
text = re.sub(r"//.*", "", open(sys.argv[1]).read())
lines = []
for block in re.findall(r"^replace\s*\((.*?)^\)", text, re.S | re.M):
    lines += block.splitlines()
lines += re.findall(r"^replace\s+([^(\n].*)$", text, re.M)
for line in lines:
    parts = line.split("=>")
    if len(parts) != 2:
        continue
    old, new = (p.split() for p in parts)
    if not old or not new or new[0].startswith((".", "/")):
        continue
    lhs = old[0] + ("@" + old[1] if len(old) > 1 else "")
    rhs = new[0] + ("@" + new[1] if len(new) > 1 else "")
    print(f"{lhs}={rhs}")
EOF
while read -r rep; do
  [[ -n "$rep" ]] || continue
  say "  replace $rep"
  go mod edit "-replace=$rep" || fail "go mod edit -replace=$rep"
done <replaces.txt

say "$VERSION: fetching its dependencies (the first time: a minute or more)"
go get "$MODULE/cmd@$VERSION" "$MODULE/cmd/nodeslicecontroller@$VERSION" >&2 \
  || fail "go get $MODULE/cmd $MODULE/cmd/nodeslicecontroller@$VERSION"

pkg="$MODULE/pkg/version"
ldflags="-X $pkg.Version=$VERSION -X $pkg.ReleaseStatus=released -X $pkg.GitTreeState=clean"
# build PACKAGE OUTPUT WHAT: one binary, moved into place only once complete.
build() {
  local start=$SECONDS
  say "$VERSION: building $3 $1 (a minute or two on 2 cores the first time)"
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$2.tmp" "$1" >&2 || fail "go build $1"
  mv -f "$2.tmp" "$2" || fail "install $2"
  say "$VERSION: built in $((SECONDS - start))s: $2"
}
[[ -x "$BIN" ]] || build "$MODULE/cmd" "$BIN" "the plugin"
[[ -x "$CONTROLLER" ]] || build "$MODULE/cmd/nodeslicecontroller" "$CONTROLLER" "the node-slice controller"
echo "$BIN"
