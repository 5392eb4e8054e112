#!/usr/bin/env bash
# Prepare a fresh Debian machine for GoBuild: system packages, a running Docker engine,
# the Python virtualenv and the local build image. Idempotent and quick when all is there.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${GOBUILD_VENV:-$ROOT/.venv}
BUILD_IMAGE=${GOBUILD_BUILD_IMAGE:-gobuild/build-base:bookworm}
DOCKER_DATA=${GOBUILD_DOCKER_DATA_ROOT:-/var/lib/docker}
log() { printf '[setup] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# 1. System packages.
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v git >/dev/null || missing+=(git)
# The dashboard's browser tests drive Debian's Chromium (never `playwright install`).
[ -x /usr/bin/chromium ] || missing+=(chromium)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Docker engine on overlay2.
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (overlay2)"
  as_root mkdir -p /var/log/gobuild
  as_root sh -c "nohup dockerd --storage-driver=overlay2 --data-root='$DOCKER_DATA' >/var/log/gobuild/dockerd.log 2>&1 &"
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not start; see /var/log/gobuild/dockerd.log"; exit 1; }
fi

# 3. Python virtualenv with GoBuild and its test tools.
stamp="$VENV/.gobuild-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log "creating virtualenv in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -e ".[dev]"
  touch "$stamp"
fi

# 4. The build image: Debian bookworm with bash, git, python3 (with venv), nodejs and npm.
# No image registry is reachable here, so it is made from debootstrap and `docker import`.
# Its label says which contents it has: bump BUILD_IMAGE_VERSION when they change, and a machine
# whose image is older (or has no label: made before there was one) gets it rebuilt.
BUILD_IMAGE_VERSION=2
IMAGE_LABEL=org.gobuild.build-base.version
image_version=$(docker image inspect --format "{{ index .Config.Labels \"$IMAGE_LABEL\" }}" \
  "$BUILD_IMAGE" 2>/dev/null || echo missing)
if [ "$image_version" != "$BUILD_IMAGE_VERSION" ]; then
  if [ "$image_version" = missing ]; then
    log "building $BUILD_IMAGE with debootstrap (a few minutes, once)"
  else
    log "rebuilding $BUILD_IMAGE: it is version '${image_version:-none}', setup makes $BUILD_IMAGE_VERSION"
  fi
  rootfs=$(mktemp -d /tmp/gobuild-rootfs.XXXXXX)
  trap 'as_root rm -rf "$rootfs"' EXIT
  as_root debootstrap --variant=minbase bookworm "$rootfs" \
    "${GOBUILD_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
  # debootstrap resolves dependencies poorly; apt inside the new root does it properly.
  as_root cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  as_root chroot "$rootfs" apt-get update -qq
  as_root chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends \
    bash git python3 python3-venv nodejs npm ca-certificates >/dev/null
  # The host's extra CAs (a TLS-inspecting proxy's, say) are trusted in builds as on the host,
  # even without GOBUILD_BUILD_CA_BUNDLE.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    as_root cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    as_root chroot "$rootfs" update-ca-certificates >/dev/null
  fi
  as_root chroot "$rootfs" apt-get clean
  as_root rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
  as_root tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' --change "LABEL $IMAGE_LABEL=$BUILD_IMAGE_VERSION" \
    - "$BUILD_IMAGE" >/dev/null
  log "built $BUILD_IMAGE"
fi
log "ready"
