#!/usr/bin/env bash
# Quickstart: run tend's main job on the bundled example fleet, on this machine.
#
#   1. builds tend and a tiny local image (no registry needed),
#   2. makes a Git repository from examples/fleet (the "fleet repo" an operator would push to),
#      with a commit signed by an SSH key it generates (the operator's signing key),
#   3. writes a host config for edge-017 that follows it and trusts that key,
#   4. runs one reconcile cycle (`tend run --once`) and prints `tend status`.
#
# Everything lives under $QS (default /tmp/tend-quickstart), decrypted secrets on tmpfs under
# /dev/shm/tend-quickstart; containers are in compose project "edge". The SOPS files in
# examples/fleet are encrypted to the DEMO age key examples/demo-age.key. Clean up with: docker rm -f $(docker ps -aq --filter label=com.docker.compose.project=edge)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
QS=${QS:-/tmp/tend-quickstart}

cargo build -q --manifest-path "$top/Cargo.toml" --bin tend
tend=$top/target/debug/tend
"$top/tests/build-image.sh" tend-example/busybox:1

rm -rf "$QS/repo" "$QS/fleet.git" "$QS/state"
mkdir -p "$QS"
# The operator's signing key, and the host's list of keys it trusts.
[ -f "$QS/signing_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C ops@example.invalid -f "$QS/signing_ed25519"
echo "ops@example.invalid namespaces=\"git\" $(cut -d' ' -f1,2 "$QS/signing_ed25519.pub")" >"$QS/allowed_signers"
cp -r "$here/fleet" "$QS/repo"
git -C "$QS/repo" init -q -b main
git -C "$QS/repo" add -A
git -C "$QS/repo" -c user.name="Fleet Operator" -c user.email=ops@example.invalid \
  -c gpg.format=ssh -c user.signingkey="$QS/signing_ed25519" commit -q -S -m "example fleet"
git clone -q --bare "$QS/repo" "$QS/fleet.git"

sed -e "s#^url = .*#url = \"$QS/fleet.git\"#" \
    -e "s#^state = .*#state = \"$QS/state\"#" \
    -e "s#^runtime = .*#runtime = \"/dev/shm/tend-quickstart\"#" \
    -e "s#^age_identities = .*#age_identities = [\"$here/demo-age.key\"]#" \
    -e "s#^allowed_signers = .*#allowed_signers = \"$QS/allowed_signers\"#" \
    "$here/tend.toml" >"$QS/tend.toml"

echo "+ tend --config $QS/tend.toml run --once"
"$tend" --config "$QS/tend.toml" run --once
echo
echo "+ tend --config $QS/tend.toml status"
"$tend" --config "$QS/tend.toml" status
echo
echo "+ docker exec edge-web-1 sh -c 'cat /run/secrets/site_token; echo API_TOKEN=\$API_TOKEN'"
docker exec edge-web-1 sh -c 'cat /run/secrets/site_token; echo API_TOKEN=$API_TOKEN'
