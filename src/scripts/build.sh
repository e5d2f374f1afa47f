#!/bin/sh
# coreforge default build script: runs in the build Job's container (the default
# builder image is buildah). It receives the builder contract in COREFORGE_* variables
# (see the README, "Builder contract"), builds the blueprint on the pinned base, pushes
# the image to staging and reports {"digest":"sha256:…"} as JSON in
# $COREFORGE_RESULT_FILE (the container's termination message).
set -eu

: "${COREFORGE_BASE_IMAGE:?}" "${COREFORGE_BLUEPRINT:?}" "${COREFORGE_CONTEXT_DIR:?}" "${COREFORGE_DESTINATION:?}"
result=${COREFORGE_RESULT_FILE:-/dev/termination-log}
store=${COREFORGE_WORKDIR:-/workspace}/storage
tls="--tls-verify=${COREFORGE_TLS_VERIFY:-true}"
mkdir -p "$store"

# Rootless-friendly buildah: chroot isolation and vfs storage need no privileges
# beyond a user namespace, and keep everything in the pod's scratch volume.
bah() { buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs "$@"; }

echo "coreforge: building $COREFORGE_BLUEPRINT on $COREFORGE_BASE_IMAGE" >&2
bah build --isolation chroot --from "$COREFORGE_BASE_IMAGE" "$tls" \
  --file "$COREFORGE_BLUEPRINT" --tag coreforge-build "$COREFORGE_CONTEXT_DIR" >&2

echo "coreforge: pushing to $COREFORGE_DESTINATION" >&2
bah push "$tls" --digestfile "$store/digest" coreforge-build "docker://$COREFORGE_DESTINATION" >&2
digest=$(cat "$store/digest")

# The controller reads the image config from the registry itself; the digest is all it needs.
printf '{"digest":"%s"}\n' "$digest" >"$result"
echo "coreforge: built $COREFORGE_DESTINATION@$digest" >&2
