#!/usr/bin/env bash
# Builds the Studio's image from this checkout and serves it, the way `docker build` and
# `docker run` would, on a machine with the Docker client but no Docker engine:
#   1. a Debian bookworm base made with debootstrap (no registry of base images is reachable),
#      given to the Dockerfile's `ARG BASE`;
#   2. `podman build --isolation chroot --format docker` (docker format keeps the HEALTHCHECK),
#      with the proxy's CA and a local CPU torch wheel mounted for the pip step only;
#   3. a container's filesystem (`podman create` + `podman mount`) run with chroot, because
#      `podman run` cannot set rlimits here: in a network namespace of its own, as the image's
#      USER, with its ENV, WORKDIR and CMD;
#   4. checks: image metadata, volume ownership, nothing of the test inputs left in the image,
#      the image's own HEALTHCHECK command, /_stcore/health, Streamlit's HTML, and every page
#      rendered in headless Chromium (Debian's, through playwright) with no exception.
# Run as root: `make container-test`. Takes minutes and ~10 GB of disk; not part of `make test`.
#
# Settings (environment):
#   CONTAINER_TEST_DIR     work folder (default /var/tmp/ace-studio-container-test)
#   CONTAINER_TEST_IMAGE   tag of the image built (default localhost/ace-studio:smoke)
#   CONTAINER_TEST_WHEELS  folder of local wheels pip looks in first, e.g. a CPU torch wheel
#                          (default /opt/wheels when it exists; without it pip downloads the
#                          multi-GB CUDA torch from PyPI)
#   CONTAINER_TEST_CA      CA bundle for pip behind a TLS-intercepting proxy
#                          (default $SSL_CERT_FILE when set)
#   CONTAINER_TEST_KEEP    1 keeps the image afterwards (default 0: removed)
#   CONTAINER_TEST_TIMEOUT seconds to wait for the Studio to answer (default 180)
#   CONTAINER_TEST_PYTHON  a Python with playwright, for the page checks (default .venv's)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${CONTAINER_TEST_DIR:-/var/tmp/ace-studio-container-test}
IMAGE=${CONTAINER_TEST_IMAGE:-localhost/ace-studio:smoke}
BASE_IMAGE=localhost/debian-base:bookworm
WHEELS=${CONTAINER_TEST_WHEELS-/opt/wheels}
CA=${CONTAINER_TEST_CA-${SSL_CERT_FILE:-}}
KEEP=${CONTAINER_TEST_KEEP:-0}
TIMEOUT=${CONTAINER_TEST_TIMEOUT:-180}
PYTHON=${CONTAINER_TEST_PYTHON:-$REPO/.venv/bin/python}
PORT=8501
ROOT=

STARTED=$SECONDS
SERVER_PID=
CONTAINER_ID=
MOUNTS=()
FAILED=0

say() { printf '\n== %s\n' "$*"; }
pass() { printf '  ok   %s\n' "$*"; }
fail() {
    printf '  FAIL %s\n' "$*"
    FAILED=$((FAILED + 1))
}
die() {
    printf 'container-test: %s\n' "$*" >&2
    exit 1
}
quietly() { "$@" >/dev/null 2>&1; }
check() { # check DESCRIPTION COMMAND...: runs the command, records ok or FAIL
    local description=$1
    shift
    if "$@"; then pass "$description"; else fail "$description"; fi
}

cleanup() {
    local status=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    local index
    for ((index = ${#MOUNTS[@]} - 1; index >= 0; index--)); do
        umount "${MOUNTS[index]}" 2>/dev/null || umount -l "${MOUNTS[index]}" 2>/dev/null || true
    done
    if [ -n "$CONTAINER_ID" ]; then
        podman unmount "$CONTAINER_ID" >/dev/null 2>>"$WORK/podman.log" || true
        # Podman warns that it has no systemd to drop the HEALTHCHECK timer it never started.
        podman rm -f "$CONTAINER_ID" >/dev/null 2>>"$WORK/podman.log" || true
    fi
    rm -rf "$WORK/inputs"
    if [ "$KEEP" != 1 ]; then podman rmi -f "$IMAGE" >/dev/null 2>&1 || true; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- what this needs -----------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root (podman build, chroot and mounts need it)"
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v curl >/dev/null || missing+=(curl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
"$PYTHON" -c 'import playwright' 2>/dev/null \
    || die "$PYTHON has no playwright: run \`make container-test\` (it installs the dev venv)"
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
mkdir -p "$WORK"
free_gb=$(df --output=avail -BG "$WORK" | tail -1 | tr -dc 0-9)
[ "$free_gb" -ge 15 ] || die "needs ~15 GB free under $WORK (and podman's storage); $free_gb GB free"
rm -rf "$WORK/inputs" "$WORK/podman.log"

# --- 1. base image -------------------------------------------------------------------------
if podman image exists "$BASE_IMAGE"; then
    say "base image $BASE_IMAGE already there"
else
    say "making $BASE_IMAGE with debootstrap"
    started=$SECONDS
    rm -rf "$WORK/base"
    debootstrap --variant=minbase bookworm "$WORK/base" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
    tar -C "$WORK/base" -c . | podman import -q - "$BASE_IMAGE" >/dev/null
    rm -rf "$WORK/base"
    echo "  $((SECONDS - started)) s"
fi

# --- 2. build ------------------------------------------------------------------------------
# Test-only inputs go in one folder mounted over the base's empty /mnt for the RUN steps: a
# mount over a path the base already has leaves no placeholder file in the image's layers.
mkdir -p "$WORK/inputs"
build_args=(--build-arg "BASE=$BASE_IMAGE")
if [ -n "$WHEELS" ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
    mkdir -p "$WORK/inputs/wheels"
    cp -l "$WHEELS"/*.whl "$WORK/inputs/wheels/" 2>/dev/null || cp "$WHEELS"/*.whl "$WORK/inputs/wheels/"
    build_args+=(--build-arg EXTRA_WHEELS=/mnt/wheels)
fi
if [ -n "$CA" ]; then
    [ -f "$CA" ] || die "CA bundle $CA not found"
    cp "$CA" "$WORK/inputs/ca.pem"
    build_args+=(--build-arg BUILD_CA=/mnt/ca.pem)
fi
say "building $IMAGE from $REPO (log: $WORK/build.log)"
started=$SECONDS
if ! podman build --isolation chroot --network host --format docker \
    -v "$WORK/inputs:/mnt:ro" "${build_args[@]}" -t "$IMAGE" "$REPO" >"$WORK/build.log" 2>&1; then
    tail -30 "$WORK/build.log"
    die "podman build failed"
fi
BUILD_SECONDS=$((SECONDS - started))
IMAGE_BYTES=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "  built in $BUILD_SECONDS s; image $((IMAGE_BYTES / 1000000)) MB"

# --- 3. image metadata ---------------------------------------------------------------------
say "image metadata"
inspect() { podman image inspect --format "$1" "$IMAGE"; }
IMAGE_USER=$(inspect '{{.Config.User}}')
WORKDIR=$(inspect '{{.Config.WorkingDir}}')
mapfile -t IMAGE_ENV < <(inspect '{{range .Config.Env}}{{println .}}{{end}}' | sed '/^$/d')
mapfile -t IMAGE_CMD < <(inspect '{{range .Config.Cmd}}{{println .}}{{end}}' | sed '/^$/d')
mapfile -t HEALTH_TEST < <(inspect '{{range .HealthCheck.Test}}{{println .}}{{end}}' | sed '/^$/d')
volumes=$(inspect '{{range $path, $_ := .Config.Volumes}}{{println $path}}{{end}}')
ports=$(inspect '{{range $port, $_ := .Config.ExposedPorts}}{{println $port}}{{end}}')
hf_home=$(printf '%s\n' "${IMAGE_ENV[@]}" | sed -n 's/^HF_HOME=//p')
data_dir=$(printf '%s\n' "${IMAGE_ENV[@]}" | sed -n 's/^ACE_STUDIO_DATA_DIR=//p')
check "HEALTHCHECK kept: ${HEALTH_TEST[*]:-none}" \
    grep -q "/_stcore/health" <<<"${HEALTH_TEST[*]:-}"
check "CMD is streamlit run Home.py: ${IMAGE_CMD[*]}" \
    test "${IMAGE_CMD[*]:0:3}" = "streamlit run Home.py"
check "EXPOSE $PORT" grep -qx "$PORT/tcp" <<<"$ports"
check "runs as a non-root user: '$IMAGE_USER'" \
    test -n "$IMAGE_USER" -a "$IMAGE_USER" != root -a "$IMAGE_USER" != 0
check "HF_HOME ($hf_home) and the data folder ($data_dir) are volumes" \
    bash -c '[ -n "$1" ] && [ -n "$2" ] && grep -qx "$1" <<<"$3" && grep -qx "$2" <<<"$3"' \
    _ "$hf_home" "$data_dir" "$volumes"
check "no test-only build argument in the image's ENV" \
    bash -c '! grep -qE "^(EXTRA_WHEELS|BUILD_CA|PIP_CERT|PIP_FIND_LINKS)=" <<<"$1"' \
    _ "$(printf '%s\n' "${IMAGE_ENV[@]}")"

# --- 4. the image's filesystem -------------------------------------------------------------
# The container's own writable layer, as `docker run` gives it; removed with the container.
CONTAINER_ID=$(podman create "$IMAGE" 2>>"$WORK/podman.log")
ROOT=$(podman mount "$CONTAINER_ID")
say "the image's filesystem, mounted at $ROOT"
user_uid=$(awk -F: -v name="$IMAGE_USER" '$1 == name {print $3}' "$ROOT/etc/passwd")
user_home=$(awk -F: -v name="$IMAGE_USER" '$1 == name {print $6}' "$ROOT/etc/passwd")
check "$IMAGE_USER has uid $user_uid (not 0)" test -n "$user_uid" -a "$user_uid" != 0
for folder in "$data_dir" "$hf_home"; do
    check "$folder is owned by $IMAGE_USER" test "$(stat -c %u "$ROOT$folder")" = "$user_uid"
done
python_version=$(chroot "$ROOT" /opt/venv/bin/python -c 'import sys; print(sys.version.split()[0])')
check "Python 3.11 in the venv ($python_version)" test "${python_version%.*}" = 3.11
check "the test wheels are not in the image" bash -c '
    [ -z "$(ls -A "$1/mnt")" ] || exit 1
    for wheel in "$2"/*.whl; do
        [ -e "$wheel" ] || continue
        [ -z "$(find "$1" -xdev -name "$(basename "$wheel")" -print -quit)" ] || exit 1
    done' _ "$ROOT" "$WORK/inputs/wheels"
if [ -f "$WORK/inputs/ca.pem" ]; then
    ca_size=$(stat -c %s "$WORK/inputs/ca.pem")
    ca_sum=$(sha256sum <"$WORK/inputs/ca.pem")
    check "the build's CA bundle is not in the image" bash -c '
        while IFS= read -r -d "" file; do
            [ "$(sha256sum <"$file")" = "$2" ] && { echo "  found at $file"; exit 1; }
        done < <(find "$1" -xdev -type f -size "$3c" -print0)
        exit 0' _ "$ROOT" "$ca_sum" "$ca_size"
fi

# --- 5. serve it ---------------------------------------------------------------------------
say "starting the image's CMD as $IMAGE_USER (log: $WORK/studio.log)"
for fs in proc sys dev; do
    case $fs in
        proc) mount -t proc proc "$ROOT/proc" ;;
        sys) mount -t sysfs -o ro sysfs "$ROOT/sys" ;;
        dev) mount --bind /dev "$ROOT/dev" ;;
    esac
    MOUNTS+=("$ROOT/$fs")
done
# Like `docker run`: the image's ENV plus HOME of its user, its WORKDIR, and no model download.
run_env=("${IMAGE_ENV[@]}" "HOME=$user_home" "HOSTNAME=ace-studio" ACE_STUDIO_PRELOAD=false)
# A network namespace of its own stands in for the container's: port 8501 inside it never
# collides with a Studio on the host, and the checks below enter it with nsenter.
unshare --net sh -c 'ip link set lo up && exec "$@"' sh \
    env -i "${run_env[@]}" chroot --userspec="$IMAGE_USER:$IMAGE_USER" "$ROOT" \
    sh -c 'cd "$1" && shift && exec "$@"' sh "${WORKDIR:-/}" "${IMAGE_CMD[@]}" \
    >"$WORK/studio.log" 2>&1 &
SERVER_PID=$!
started=$SECONDS
in_container_network() { nsenter --target "$SERVER_PID" --net "$@"; }
health=
while [ $((SECONDS - started)) -lt "$TIMEOUT" ]; do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    health=$(in_container_network curl -fsS --max-time 5 "http://127.0.0.1:$PORT/_stcore/health" 2>/dev/null) && break
    sleep 1
done
STARTUP_SECONDS=$((SECONDS - started))
if [ "$health" != ok ]; then
    tail -40 "$WORK/studio.log"
    die "the Studio did not answer /_stcore/health with ok within $TIMEOUT s"
fi
check "GET /_stcore/health answers ok after $STARTUP_SECONDS s" test "$health" = ok
# The image's own HEALTHCHECK, with the image's curl, exactly as Docker would run it.
case ${HEALTH_TEST[0]:-} in
    CMD-SHELL) health_command=(/bin/sh -c "${HEALTH_TEST[1]}") ;;
    CMD) health_command=("${HEALTH_TEST[@]:1}") ;;
    *) health_command=(false) ;;
esac
check "the HEALTHCHECK command passes inside the image" \
    quietly in_container_network chroot --userspec="$IMAGE_USER:$IMAGE_USER" "$ROOT" \
    env -i "${run_env[@]}" "${health_command[@]}"
index_html=$(in_container_network curl -fsS --max-time 10 "http://127.0.0.1:$PORT/" || true)
check "GET / serves Streamlit's page" grep -q '<div id="root">' <<<"$index_html"

# Chromium runs each page's script through the websocket: the pages import and render inside
# the image. Home must show its sections; every other page must render with no exception.
page_args=("/=ACE Music Studio|Device|Library")
for page_file in "$ROOT$WORKDIR"/pages/[!_]*.py; do
    # Streamlit's page URL: the file name without its ordering number.
    page_args+=("/$(basename "$page_file" .py | sed -E 's/^[0-9]+[_ -]*//')=")
done
if ! in_container_network "$PYTHON" "$REPO/tests/container/render_pages.py" \
    "http://127.0.0.1:$PORT" "${page_args[@]}"; then
    FAILED=$((FAILED + 1))
fi
check "the Studio wrote its library to $data_dir as $IMAGE_USER" bash -c \
    'f=$(find "$1" -maxdepth 1 -name "*.db" -print -quit); [ -n "$f" ] && [ "$(stat -c %u "$f")" = "$2" ]' \
    _ "$ROOT$data_dir" "$user_uid"
check "the server log has no traceback" bash -c '! grep -q "Traceback" "$1"' _ "$WORK/studio.log"

# --- summary -------------------------------------------------------------------------------
say "summary"
echo "  image      $IMAGE, $((IMAGE_BYTES / 1000000)) MB (base $BASE_IMAGE)"
echo "  build      $BUILD_SECONDS s"
echo "  healthy    $STARTUP_SECONDS s after start"
echo "  total      $((SECONDS - STARTED)) s"
if [ "$FAILED" -gt 0 ]; then
    tail -20 "$WORK/studio.log"
    die "$FAILED check(s) failed"
fi
echo "container-test: all checks passed"
