#!/usr/bin/env bash
# Builds the base images of deploy/Dockerfile and docker-compose.yml from Debian's packages, for hosts that cannot
# reach a container registry: `debootstrap --variant=minbase bookworm` from the host's own Debian mirror, imported
# as cbr-local/debian:bookworm, then Python, PostgreSQL and nats-server layered on it with apt (deploy/base/).
# Tags made (local-images.env points compose at them):
#   cbr-local/python:3.11-bookworm  cbr-local/python-build:3.11-bookworm
#   cbr-local/postgres:15-bookworm  cbr-local/nats:2.9-bookworm
# Both the root file system and the built images are cached in CBR_DEPLOY_CACHE (default /var/cache/cbr-deploy),
# so a later run, even against a fresh engine, only loads them (`docker load`). Needs root (debootstrap) and a
# running engine (DOCKER_HOST, as for `docker`). Builds run with host networking: an engine started with
# --bridge=none has no other network to give them. The Python image trusts what this host trusts (its CA bundle,
# for pip; PIP_CERT): a site that inspects TLS on its way to PyPI has its CA there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${CBR_DEPLOY_CACHE:-/var/cache/cbr-deploy}
docker=${DOCKER:-docker}
suite=bookworm

# The host's Debian mirror (deb822 sources first, then one-line ones); the security archive is not a mirror.
mirror() {
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -1)
    if [ -z "$uri" ]; then
        uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' \
              | grep -v -- '-security' | head -1)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

mkdir -p "$cache"
rootfs_tar=$cache/debian-$suite-minbase.tar
# The built images' cache is named for what built them: change a file of deploy/base/ and it is rebuilt.
host_ca=/etc/ssl/certs/ca-certificates.crt
key=$( (cat "$here"/base/* "$0"; mirror; cat "$host_ca" 2>/dev/null) | sha256sum | cut -c1-16)
images_tar=$cache/base-images-$key.tar
images=(cbr-local/debian:$suite cbr-local/python:3.11-$suite cbr-local/python-build:3.11-$suite
        cbr-local/postgres:15-$suite cbr-local/nats:2.9-$suite)

if [ -s "$images_tar" ]; then
    echo "base images: loading $images_tar"
    "$docker" load -q -i "$images_tar"
    exit 0
fi

if [ ! -s "$rootfs_tar" ]; then
    command -v debootstrap >/dev/null || { echo "debootstrap missing: make deploy-packages (as root)" >&2; exit 1; }
    work=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "base images: debootstrap --variant=minbase $suite from $(mirror)"
    debootstrap --variant=minbase "$suite" "$work/root" "$(mirror)" > "$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log" >&2; echo "debootstrap failed" >&2; exit 1; }
    # No daemon starts inside a build; apt keeps no downloaded packages.
    printf '#!/bin/sh\nexit 101\n' > "$work/root/usr/sbin/policy-rc.d"
    chmod 755 "$work/root/usr/sbin/policy-rc.d"
    rm -rf "$work"/root/var/cache/apt/archives/*.deb "$work"/root/var/lib/apt/lists/*
    tar --numeric-owner -C "$work/root" -cf "$work/rootfs.tar" .
    mv "$work/rootfs.tar" "$rootfs_tar"
    rm -rf "$work"
    trap - EXIT
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp -r "$here"/base/. "$context"/
cat "$host_ca" > "$context/host-ca-certificates.crt" 2>/dev/null || : > "$context/host-ca-certificates.crt"
echo "base images: importing $rootfs_tar"
"$docker" import "$rootfs_tar" "${images[0]}" >/dev/null
build() {  # tag dockerfile base
    echo "base images: building $1"
    "$docker" build -q --network host --build-arg "BASE=$3" -t "$1" -f "$context/$2" "$context" >/dev/null
}
build "${images[1]}" python.Dockerfile "${images[0]}"
build "${images[2]}" python-build.Dockerfile "${images[1]}"
build "${images[3]}" postgres.Dockerfile "${images[0]}"
build "${images[4]}" nats.Dockerfile "${images[0]}"
echo "base images: saving them to $images_tar"
rm -f "$cache"/base-images-*.tar
"$docker" save -o "$images_tar.tmp" "${images[@]}"
mv "$images_tar.tmp" "$images_tar"
