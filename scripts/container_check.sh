#!/usr/bin/env bash
# Prove that the Dockerfile builds and serves, on a machine that reaches no container registry.
#
#   bash scripts/container_check.sh            # as root (podman rootful); about 2–4 min the first time
#   CNNLAB_REBUILD_BASE=1 bash scripts/container_check.sh   # rebuild the local base image too
#
# Steps (each is printed with the seconds it took):
#  1. installs podman and debootstrap with apt-get when they are missing;
#  2. unless an image named python:3.11-slim is already there, builds a stand-in for it from
#     Debian packages (debootstrap bookworm + `podman import`), so that `FROM python:3.11-slim`
#     resolves without a registry (see build_base below for what it emulates);
#  3. builds the repository's Dockerfile with podman (`--pull=never`: nothing is pulled; pip
#     inside the build reaches PyPI through the host network);
#  4. runs it as `docker run -p 8000:8000 cnnlab` would (published on 127.0.0.1:$CNNLAB_CHECK_PORT,
#     default 18000, so it never clashes with a dev server on 8000), waits for /healthz, fetches /
#     and a convolution step, runs the HEALTHCHECK, checks the server runs as the non-root user;
#  5. runs it again with `--network none` (no interface but loopback) and fetches a page from
#     inside the container: the app serves with no network at all;
#  6. prints the image size, and removes its containers on exit (the images stay, so a second run
#     reuses the base and podman's layer cache);
#  7. the course stack of compose.yaml with podman-compose (pip-installed when missing): builds
#     Dockerfile.valkey from the same local base, brings up valkey, web (`cnnlab --workers 2`) and
#     two workers (`cnnlab worker`), starts a class and runs one training through them with curl
#     (trained by a worker container), then takes the stack down with its volume.
#     CNNLAB_CHECK_COMPOSE=0 skips it; CNNLAB_COMPOSE_SECONDS bounds it (default 600).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${CNNLAB_CHECK_PORT:-18000}"
COMPOSE_PORT="${CNNLAB_CHECK_COMPOSE_PORT:-18001}"
IMAGE="localhost/cnnlab:latest"
VALKEY_IMAGE="localhost/cnnlab-valkey:latest"
PROJECT="cnnlab-check-$$"
COMPOSE_UP=0
COMPOSE_DIR=""
BASE="docker.io/library/python:3.11-slim"
SUITE="bookworm"                       # the Debian release python:3.11-slim was built on
# debootstrap downloads from the Debian archive the host's apt already uses (its first
# non-security URI), or CNNLAB_DEBIAN_MIRROR; with neither, debootstrap's own default.
host_mirror() {
  { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
    grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | sed 's/\[[^]]*\]//' | awk '{print $2}'
  } | grep -v security | head -n 1 || true
}
MIRROR="${CNNLAB_DEBIAN_MIRROR:-$(host_mirror)}"
NAME="cnnlab-check-$$"
NAME_OFFLINE="cnnlab-check-offline-$$"
ROOTFS=""

# Podman settings that this project's sandboxed machines need (rootful podman 4.3, cgroup v1
# with a cgroup2 "unified" hierarchy beside it, no systemd running, no CAP_SYS_RESOURCE):
#  - runc, not crun: crun refuses that hybrid cgroup layout ("cgroups in hybrid mode not
#    supported, drop all controllers from cgroupv2");
#  - cgroupfs instead of systemd for cgroups;
#  - explicit --ulimit values no higher than the host's: podman's defaults (nofile 1048576,
#    nproc 4194304) need CAP_SYS_RESOURCE ("setrlimit RLIMIT_NOFILE: Operation not permitted"),
#    `--ulimit host` fails the same way, and nproc above 32768 is refused here;
#  - the storage driver stays podman's default (overlay works here); set CNNLAB_PODMAN_STORAGE=vfs
#    where the kernel refuses overlay.
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
if [ -n "${CNNLAB_PODMAN_STORAGE:-}" ]; then PODMAN+=(--storage-driver "$CNNLAB_PODMAN_STORAGE"); fi
NOFILE="$(ulimit -Hn)"; if [ "$NOFILE" = unlimited ] || [ "$NOFILE" -gt 65536 ]; then NOFILE=65536; fi
LIMITS=(--ulimit "nofile=$NOFILE:$NOFILE" --ulimit nproc=4096:4096)

T0=$SECONDS
T_STEP=$SECONDS
step() { echo; echo "==> [$((SECONDS - T0))s] $*"; T_STEP=$SECONDS; }
done_step() { echo "    ok ($((SECONDS - T_STEP))s)"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

cleanup() {
  local rc=$?
  for c in "$NAME" "$NAME_OFFLINE"; do
    if "${PODMAN[@]}" container exists "$c" 2>/dev/null; then
      if [ "$rc" -ne 0 ]; then echo "--- logs of $c:"; "${PODMAN[@]}" logs "$c" 2>&1 | tail -20 || true; fi
      "${PODMAN[@]}" rm -f -t 2 "$c" >/dev/null 2>&1 || true
    fi
  done
  if [ "$COMPOSE_UP" = 1 ]; then
    if [ "$rc" -ne 0 ]; then
      for c in $(in_project); do echo "--- logs of $c:"; "${PODMAN[@]}" logs "$c" 2>&1 | tail -20 || true; done
    fi
    compose down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
    for v in $(project_volumes); do "${PODMAN[@]}" volume rm -f "$v" >/dev/null 2>&1 || true; done
  fi
  if [ -n "$COMPOSE_DIR" ] && [ -d "$COMPOSE_DIR" ]; then rm -rf "$COMPOSE_DIR"; fi
  if [ -n "$ROOTFS" ] && [ -d "$ROOTFS" ]; then rm -rf --one-file-system "$ROOTFS"; fi
  echo
  if [ "$rc" -eq 0 ]; then echo "container_check: PASSED in $((SECONDS - T0))s"; else echo "container_check: FAILED (exit $rc) after $((SECONDS - T0))s"; fi
}
trap cleanup EXIT

# `podman run` of an image with a HEALTHCHECK asks systemd for a timer to run it every 30 s; with
# no systemd running (as here) it logs an error and goes on, and `podman healthcheck run` below
# runs the check by hand. Those two lines are dropped; everything else on stderr is kept.
run_detached() {
  "${PODMAN[@]}" run -d "${LIMITS[@]}" "$@" 2> >(grep -v 'unable to get systemd connection' >&2)
}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# ---------------------------------------------------------------------------------------------
step "1. tools: podman, runc, debootstrap, curl"
missing=()
command -v podman >/dev/null || missing+=(podman fuse-overlayfs slirp4netns uidmap containernetworking-plugins)
command -v runc >/dev/null || missing+=(runc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v curl >/dev/null || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "    apt-get install ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ "$(id -u)" -eq 0 ] || fail "run as root: the check uses rootful podman (debootstrap needs root too)"
podman --version
done_step

# ---------------------------------------------------------------------------------------------
# The stand-in base image. A debootstrapped bookworm has python3.11 at /usr/bin/python3 but no
# `python` or `pip`, and its pip refuses to install into the system (PEP 668). The official
# python:3.11-slim has python, python3, pip and pip3 in /usr/local/bin, installs into
# /usr/local/lib/python3.11/site-packages and sets LANG=C.UTF-8. So, to give the SAME Dockerfile
# the same environment, the stand-in:
#   - includes python3, python3-venv (pip and setuptools wheels for ensurepip), ca-certificates
#     and netbase, on top of debootstrap's minbase (which has useradd);
#   - makes /usr/local a virtual environment of the system python (`python3 -m venv /usr/local`):
#     that puts python, python3, pip, pip3 in /usr/local/bin, first on PATH, and pip installs
#     into /usr/local/lib/python3.11/site-packages, as in the official image; EXTERNALLY-MANAGED
#     applies to the system interpreter only, not to a venv, and is removed anyway;
#   - drops apt's lists and caches, docs and man pages, as the official slim image does;
#   - sets PATH, LANG and CMD like the official image (`podman import --change`).
build_base() {
  ROOTFS="$(mktemp -d /var/tmp/cnnlab-rootfs.XXXXXX)"
  echo "    debootstrap --variant=minbase $SUITE into $ROOTFS (from the host's apt mirror)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,netbase \
    "$SUITE" "$ROOTFS" ${MIRROR:+"$MIRROR"} >"$ROOTFS.log" 2>&1 || { tail -30 "$ROOTFS.log"; fail "debootstrap"; }
  rm -f "$ROOTFS.log"
  echo "    debootstrap done ($((SECONDS - T_STEP))s); python3 -m venv /usr/local in the chroot"
  chroot "$ROOTFS" /usr/bin/python3 -m venv /usr/local
  rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
  chroot "$ROOTFS" apt-get clean
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/* "$ROOTFS"/var/log/* \
         "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
  find "$ROOTFS" -name __pycache__ -prune -exec rm -rf {} +
  chroot "$ROOTFS" /usr/local/bin/python -c 'import sys; assert sys.prefix == "/usr/local", sys.prefix'
  echo "    tar | podman import ($(du -sm "$ROOTFS" | cut -f1) MB)"
  tar --numeric-owner -C "$ROOTFS" -c . | "${PODMAN[@]}" import --quiet \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "stand-in for python:3.11-slim: debootstrap $SUITE + a venv at /usr/local (scripts/container_check.sh)" \
    - "$BASE" >/dev/null
  rm -rf --one-file-system "$ROOTFS"; ROOTFS=""
  # `FROM python:3.11-slim` is a short name: tag both spellings podman may look up locally.
  "${PODMAN[@]}" tag "$BASE" localhost/python:3.11-slim
}

step "2. base image $BASE"
if [ "${CNNLAB_REBUILD_BASE:-0}" = 1 ]; then "${PODMAN[@]}" rmi -f "$BASE" localhost/python:3.11-slim >/dev/null 2>&1 || true; fi
if "${PODMAN[@]}" image exists "$BASE"; then
  echo "    reusing the image already there ($("${PODMAN[@]}" image inspect --format '{{.Comment}}' "$BASE" 2>/dev/null | head -c 100))"
else
  build_base
fi
"${PODMAN[@]}" run --rm "${LIMITS[@]}" --network none "$BASE" sh -c 'python --version; pip --version | cut -d" " -f1-2; command -v useradd'
done_step

# ---------------------------------------------------------------------------------------------
step "3. podman build -t $IMAGE ."
# --pull=never: use the local base, never ask a registry. --format docker: the OCI image format
# has no HEALTHCHECK, podman would drop it. --network host: pip in the build reaches PyPI.
# --layers=false: keep no intermediate images (the source changes between runs anyway, so
# they would only pile up); the image this replaces is removed after the build.
OLD_ID="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
T_BUILD=$SECONDS
# This machine reaches PyPI through a TLS-inspecting egress proxy whose CA is in the host's
# bundle only. The stand-in base's pip (Debian's) trusts /etc/ssl/certs/ca-certificates.crt, so
# RUN steps see the host's bundle bind-mounted over that file (-v, build time only: the image
# keeps its own file). On an ordinary machine both bundles are Debian's usual one.
BUILD_VOLUMES=()
HOST_CA=/etc/ssl/certs/ca-certificates.crt
if [ -r "$HOST_CA" ]; then BUILD_VOLUMES=(-v "$HOST_CA:/etc/ssl/certs/ca-certificates.crt:ro"); fi
BUILD_LOG="$(mktemp /tmp/cnnlab-build.XXXXXX.log)"
if ! "${PODMAN[@]}" build "${LIMITS[@]}" "${BUILD_VOLUMES[@]}" --pull=never --layers=false --format docker --network host \
     -t "$IMAGE" . >"$BUILD_LOG" 2>&1; then
  tail -40 "$BUILD_LOG"; fail "podman build (full log: $BUILD_LOG)"
fi
grep -E 'STEP [0-9]|^COMMIT|Successfully installed' "$BUILD_LOG" | cut -c1-160 || true
rm -f "$BUILD_LOG"
NEW_ID="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE")"
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$NEW_ID" ]; then "${PODMAN[@]}" rmi "$OLD_ID" >/dev/null 2>&1 || true; fi
BUILD_SECONDS=$((SECONDS - T_BUILD))
done_step

# ---------------------------------------------------------------------------------------------
step "4. podman run -d -p 127.0.0.1:$PORT:8000 $IMAGE  (the image's own CMD)"
run_detached --name "$NAME" -p "127.0.0.1:$PORT:8000" "$IMAGE" >/dev/null
URL="http://127.0.0.1:$PORT"
for _ in $(seq 1 60); do
  if curl -fsS --max-time 2 -o /dev/null "$URL/healthz" 2>/dev/null; then break; fi
  "${PODMAN[@]}" container inspect --format '{{.State.Running}}' "$NAME" | grep -q true || fail "the container stopped"
  sleep 0.5
done
echo "    /healthz: $(curl -fsS "$URL/healthz") after $((SECONDS - T_STEP))s"

page="$(curl -fsS -w '\n%{http_code}' "$URL/")"
code="${page##*$'\n'}"
[ "$code" = 200 ] || fail "GET / answered $code"
grep -q 'Redes neuronales convolucionales, número a número' <<<"$page" || fail "GET / lacks the Spanish title"
echo "    GET / -> $code, Spanish home page (\"Redes neuronales convolucionales, número a número\")"

conv="$(curl -fsS "$URL/conv?preset=seed")"
grep -Eq '>[[:space:]]*78[[:space:]]*<' <<<"$conv" || fail "GET /conv?preset=seed lacks 78"
echo "    GET /conv?preset=seed -> 200, the slides' example page at step 1: 78"
for page in "/practice?kind=conv_value&level=1&seed=1" /class /pool /train; do
  curl -fsS -o /dev/null "$URL$page" || fail "GET $page failed"
done
echo "    GET /practice, /class, /pool, /train -> 200 (the wheel carries every page's templates)"

seed='{"input": [[35,40,41,45,50],[40,40,42,46,52],[42,46,50,55,55],[48,52,56,58,60],[56,60,65,70,75]],
       "kernel": [[-2,-1,0],[-1,1,1],[0,1,2]], "step": 0}'
answer="$(curl -fsS -H 'Content-Type: application/json' -d "$seed" "$URL/api/conv/step")"
python3 - "$answer" <<'EOF' || fail "POST /api/conv/step did not give 78"
import json, sys
a = json.loads(sys.argv[1])
inp = [[35, 40, 41], [40, 40, 42], [42, 46, 50]]
ker = [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]
expected = sum(inp[r][c] * ker[r][c] for r in range(3) for c in range(3))
assert expected == 78 and a["value"] == expected, a
print("    POST /api/conv/step (slides' example, step 0) -> " + a["text"])
EOF

"${PODMAN[@]}" healthcheck run "$NAME" || fail "the HEALTHCHECK failed"
echo "    HEALTHCHECK $("${PODMAN[@]}" image inspect --format '{{.Config.Healthcheck.Test}}' "$IMAGE" | cut -c1-90)... -> healthy"

user_line="$("${PODMAN[@]}" top "$NAME" user huser pid args | sed -n 2p)"
echo "    server process (user, host user, pid, args): $user_line"
read -r cuser _ <<<"$user_line"
if [ "$cuser" = root ] || [ "$cuser" = 0 ]; then fail "the server runs as root"; fi
echo "    podman exec id: $("${PODMAN[@]}" exec "$NAME" id)"
"${PODMAN[@]}" exec "$NAME" sh -c 'test ! -e /src && test ! -e /install && ! command -v gcc && ! command -v cc' \
  || fail "the image keeps the build's source or a compiler"
echo "    no /src, no /install, no compiler in the image"
done_step

# ---------------------------------------------------------------------------------------------
step "5. offline: podman run --network none (loopback only), fetch from inside the container"
run_detached --name "$NAME_OFFLINE" --network none "$IMAGE" >/dev/null
"${PODMAN[@]}" exec -i "$NAME_OFFLINE" python - <<'EOF' || fail "the offline container did not serve"
import time, urllib.request
for _ in range(60):
    try:
        urllib.request.urlopen("http://127.0.0.1:8000/healthz", timeout=2)
        break
    except OSError:
        time.sleep(0.5)
page = urllib.request.urlopen("http://127.0.0.1:8000/conv?preset=seed", timeout=10).read().decode()
import re
assert re.search(r">\s*78\s*<", page), "no 78 (as an element's text) on /conv?preset=seed"
home = urllib.request.urlopen("http://127.0.0.1:8000/", timeout=10).read().decode()
assert "Redes neuronales convolucionales" in home, "no Spanish title on /"
for url in ("/static/vendor/htmx.min.js", "/static/css/app.css"):
    assert urllib.request.urlopen("http://127.0.0.1:8000" + url, timeout=10).status == 200
print("    no network: /healthz, /, /conv?preset=seed, htmx and the stylesheet all served")
EOF
done_step

# ---------------------------------------------------------------------------------------------
step "6. sizes and timings"
"${PODMAN[@]}" images --format '    {{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E 'cnnlab|python' || true
image_bytes=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
base_bytes=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$BASE")
echo "    $IMAGE: $((image_bytes / 1000000)) MB, of which the base $((base_bytes / 1000000)) MB and CNN Lab with its dependencies $(((image_bytes - base_bytes) / 1000000)) MB"
echo "    podman build took ${BUILD_SECONDS}s"
"${PODMAN[@]}" history --format '    {{.Size}}\t{{.CreatedBy}}' "$IMAGE" | cut -c1-110 | head -12
done_step

# ---------------------------------------------------------------------------------------------
if [ "${CNNLAB_CHECK_COMPOSE:-1}" = 0 ]; then exit 0; fi
step "7. compose.yaml with podman-compose: valkey, web --workers 2, two workers; a class and a training"
COMPOSE_DEADLINE=$((SECONDS + ${CNNLAB_COMPOSE_SECONDS:-600}))
before_deadline() { [ "$SECONDS" -lt "$COMPOSE_DEADLINE" ] || fail "step 7 took longer than ${CNNLAB_COMPOSE_SECONDS:-600}s"; }
PY="$(command -v python3 || command -v python)"
if ! "$PY" -m podman_compose --version >/dev/null 2>&1; then
  echo "    pip install podman-compose"
  "$PY" -m pip install --disable-pip-version-check -q podman-compose
fi
# Containers of a compose network find each other by name. Podman 4.3 here uses CNI (as in the
# steps above; switching a machine to netavark half-way would strand their network rules), whose
# name service is the dnsname plugin.
if [ "$("${PODMAN[@]}" info --format '{{.Host.NetworkBackend}}' 2>/dev/null)" = cni ] \
   && [ ! -x /usr/lib/cni/dnsname ]; then
  echo "    apt-get install golang-github-containernetworking-plugin-dnsname"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    golang-github-containernetworking-plugin-dnsname >/dev/null
fi
# podman-compose runs plain `podman`: this machine's settings (see PODMAN above) go in a
# containers.conf of the check's own, used by podman-compose's commands only.
COMPOSE_DIR="$(mktemp -d /tmp/cnnlab-compose.XXXXXX)"
printf '%s\n' '[containers]' "default_ulimits = [\"nofile=$NOFILE:$NOFILE\", \"nproc=4096:4096\"]" \
  '[engine]' 'runtime = "runc"' 'cgroup_manager = "cgroupfs"' >"$COMPOSE_DIR/containers.conf"
echo "    podman network backend: $("${PODMAN[@]}" info --format '{{.Host.NetworkBackend}}' 2>/dev/null || echo '?')"
SECRET="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')"
compose() {
  local left=$((COMPOSE_DEADLINE - SECONDS))
  if [ "$left" -lt 30 ]; then left=30; fi
  CONTAINERS_CONF="$COMPOSE_DIR/containers.conf" CNNLAB_SECRET_KEY="$SECRET" CNNLAB_PORT="$COMPOSE_PORT" \
    timeout "$left" "$PY" -m podman_compose -p "$PROJECT" -f compose.yaml "$@"
}
project_volumes() {
  "${PODMAN[@]}" volume ls --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Name}}' | tr '\n' ' ' | sed 's/ $//'
}
in_project() {  # the names of the stack's containers, of one service when given
  "${PODMAN[@]}" ps -a --filter "label=io.podman.compose.project=$PROJECT" \
    ${1:+--filter "label=com.docker.compose.service=$1"} --format '{{.Names}}'
}

# The web and worker image is the one step 3 built (compose.yaml names it localhost/cnnlab);
# Valkey's is built here the same way, from the same local base.
T_VALKEY=$SECONDS
"${PODMAN[@]}" build "${LIMITS[@]}" "${BUILD_VOLUMES[@]}" --pull=never --layers=false --format docker --network host \
  -f Dockerfile.valkey -t "$VALKEY_IMAGE" . >"$COMPOSE_DIR/build.log" 2>&1 \
  || { tail -30 "$COMPOSE_DIR/build.log"; fail "podman build -f Dockerfile.valkey"; }
echo "    $VALKEY_IMAGE built in $((SECONDS - T_VALKEY))s:" \
  "$("${PODMAN[@]}" run --rm "${LIMITS[@]}" --network none "$VALKEY_IMAGE" valkey-server --version 2>/dev/null | cut -c1-60)"

COMPOSE_UP=1
compose up -d --no-build --scale worker=2 >"$COMPOSE_DIR/up.log" 2>&1 || { tail -30 "$COMPOSE_DIR/up.log"; fail "podman-compose up"; }
"${PODMAN[@]}" ps --filter "label=io.podman.compose.project=$PROJECT" --format '    {{.Names}}  {{.Command}}  {{.Status}}'
[ "$(in_project worker | wc -l)" = 2 ] || fail "podman-compose did not start two workers"
URL="http://127.0.0.1:$COMPOSE_PORT"
until curl -fsS --max-time 2 -o /dev/null "$URL/healthz" 2>/dev/null; do before_deadline; sleep 0.5; done
echo "    /healthz answered after $((SECONDS - T_STEP))s"
web="$(in_project web | head -n 1)"
echo "    $web: $("${PODMAN[@]}" top "$web" args | grep -c 'serve_child') web processes under one supervisor"

JAR="$COMPOSE_DIR/cookies"
# A class: the assistant starts it (303 to its projector page); a student's phone finds it.
location="$(curl -sS -c "$JAR" -b "$JAR" -o /dev/null -w '%{http_code} %{redirect_url}' -X POST "$URL/class")"
[[ "$location" =~ ^303\ .*/class/([A-Za-z0-9]+)/present$ ]] || fail "POST /class answered: $location"
code="${BASH_REMATCH[1]}"
curl -fsS -o /dev/null "$URL/api/class/$code" || fail "GET /api/class/$code"
curl -fsS -o /dev/null "$URL/class/$code" || fail "a student's GET /class/$code"
echo "    class $code started (POST /class -> 303), found by a student (GET /class/$code -> 200)"

# A training: queued by a web process, trained by a worker container, followed through the web.
job="$(curl -fsS -c "$JAR" -b "$JAR" -H 'Content-Type: application/json' -d '{"dataset": "digits", "epochs": 1}' \
  "$URL/api/train" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])')" || fail "POST /api/train"
status=""
while :; do
  before_deadline
  status="$(curl -fsS --max-time 10 -b "$JAR" "$URL/api/train/$job" \
    | "$PY" -c 'import json, sys; v = json.load(sys.stdin); print(v["status"], v["metrics"].get("test_accuracy", ""))')"
  case "$status" in done*|failed*|stopped*) break ;; esac
  sleep 1
done
[[ "$status" == done* ]] || fail "the training ended: $status"
echo "    training $job done after $((SECONDS - T_STEP))s, test accuracy ${status#done }"
trained_by=""
for c in $(in_project worker); do
  if "${PODMAN[@]}" logs "$c" 2>&1 | grep -q "$job"; then trained_by="$c"; fi
done
[ -n "$trained_by" ] || fail "no worker container's log names job $job"
echo "    trained by $trained_by"

# --remove-orphans: podman-compose 1.x's `down` alone leaves the containers of `--scale` past the
# first (and, as they depend on the others, those too).
compose down -v --remove-orphans -t 5 >"$COMPOSE_DIR/down.log" 2>&1 || { tail -20 "$COMPOSE_DIR/down.log"; fail "podman-compose down"; }
COMPOSE_UP=0
[ -z "$(in_project)" ] || fail "containers left after podman-compose down: $(in_project | tr '\n' ' ')"
# Its `-v` may try the volume while the scaled containers still use it, and leave it: removed here.
left_volumes="$(project_volumes)"
if [ -n "$left_volumes" ]; then "${PODMAN[@]}" volume rm $left_volumes >/dev/null; fi
echo "    podman-compose down -v --remove-orphans: no container left${left_volumes:+ (volume removed after it: $left_volumes)}"
done_step
