#!/usr/bin/env bash
# Quickstart: run tend's main job on the bundled example fleet, on this machine.
#
#   1. builds tend and a tiny local image (no registry needed),
#   2. makes a Git repository from examples/fleet (the "fleet repo" an operator would push to),
#   3. writes a host config for edge-017 that follows it,
#   4. runs one reconcile cycle (`tend run --once`) and prints `tend status`.
#
# Everything lives under $QS (default /tmp/tend-quickstart); containers are in compose project
# "edge". Clean up with: docker rm -f $(docker ps -aq --filter label=com.docker.compose.project=edge)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
QS=${QS:-/tmp/tend-quickstart}

cargo build -q --manifest-path "$top/Cargo.toml" --bin tend
tend=$top/target/debug/tend
"$top/tests/build-image.sh" tend-example/busybox:1

rm -rf "$QS/repo" "$QS/fleet.git" "$QS/state"
mkdir -p "$QS"
cp -r "$here/fleet" "$QS/repo"
git -C "$QS/repo" init -q -b main
git -C "$QS/repo" add -A
git -C "$QS/repo" -c user.name="Fleet Operator" -c user.email=ops@example.invalid -c commit.gpgsign=false \
  commit -q -m "example fleet"
git clone -q --bare "$QS/repo" "$QS/fleet.git"

sed -e "s#^url = .*#url = \"$QS/fleet.git\"#" \
    -e "s#^state = .*#state = \"$QS/state\"#" \
    -e "s#^runtime = .*#runtime = \"$QS/run\"#" \
    "$here/tend.toml" >"$QS/tend.toml"

echo "+ tend --config $QS/tend.toml run --once"
"$tend" --config "$QS/tend.toml" run --once
echo
echo "+ tend --config $QS/tend.toml status"
"$tend" --config "$QS/tend.toml" status
