#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, for the cluster tests and by hand.
#
#   scripts/cluster/cluster.sh build    build what is missing into ~/.cache/squarenet-cluster/
#   scripts/cluster/cluster.sh up       start it (idempotent), write var/cluster/kubeconfig
#   scripts/cluster/cluster.sh down     stop every process it started, by PID; remove var/cluster
#   scripts/cluster/cluster.sh status   say whether it is up (exit 0) or not (exit 1)
#   scripts/cluster/cluster.sh built    exit 0 when every binary is built, 1 when not
#   scripts/cluster/cluster.sh volumes  (NODE=real) offer released local volumes again, emptied
#   scripts/cluster/cluster.sh tag SOURCE TARGET  (NODE=real) the node's image SOURCE also as TARGET
#
# Components: etcd, kube-apiserver (RBAC and Node authorizers, PodSecurity admission,
# service-account tokens), kube-controller-manager, kube-scheduler and the nodes:
#   NODE=kwok (the default)  kwok playing the kubelets of two fake nodes
#                            (scripts/cluster/nodes.yaml, stages in scripts/cluster/kwok.yaml)
#   NODE=real                one real node: containerd, kubelet, kube-proxy in a network
#                            namespace of their own (scripts/cluster/node.sh)
# Versions come from scripts/cluster/go.mod (Kubernetes, etcd) and KWOK_VERSION below; the
# binaries are built once per version and kept outside the checkout, so a warm start takes
# seconds. Every port is a free one chosen at start, so several checkouts can run a cluster
# each. State (certificates, keys, etcd data, logs, PIDs, ports) lives in var/cluster
# (SQUARENET_CLUSTER_DIR overrides it). SQUARENET_CLUSTER_APISERVER_FLAGS adds flags to
# kube-apiserver (for example --feature-gates=...).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
state="${SQUARENET_CLUSTER_DIR:-$repo/var/cluster}"
mkdir -p "$(dirname "$state")"
state="$(cd "$(dirname "$state")" && pwd)/$(basename "$state")"

KWOK_VERSION=v0.8.0
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1 # the `kubernetes` Service's address: the first of SERVICE_CIDR

module_version() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod"; }
k8s_version="$(module_version k8s.io/kubernetes)"
api_host=127.0.0.1 # where the API server listens (NODE=real: the host's end of the node's veth)
etcd_version="$(module_version go.etcd.io/etcd/server/v3)"
cache="${SQUARENET_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/squarenet-cluster}"
bin="$cache/$k8s_version/bin"
kwok_bin="$cache/kwok-$KWOK_VERSION/kwok"
# Start order; `down` stops them in reverse.
control_plane=(etcd kube-apiserver kube-controller-manager kube-scheduler)
node_components=(containerd kubelet kube-proxy)
# The kind of node of the running cluster (recorded at up), else the one asked for.
node_mode="$(cat "$state/node-mode" 2>/dev/null || echo "${NODE:-kwok}")"
case "$node_mode" in
kwok) components=("${control_plane[@]}" kwok) ;;
real) components=("${control_plane[@]}" "${node_components[@]}") ;;
*)
    echo "cluster: NODE must be kwok or real, not '$node_mode'" >&2
    exit 2
    ;;
esac

say() { echo "cluster: $*" >&2; }

binary_of() {
    case "$1" in
    kwok) echo "$kwok_bin" ;;
    containerd) command -v containerd || echo /usr/bin/containerd ;;
    *) echo "$bin/$1" ;;
    esac
}

# --- build -----------------------------------------------------------------------------

build() {
    local missing=() component wanted=(etcd kube-apiserver kube-controller-manager kube-scheduler)
    [[ "$node_mode" == real ]] && wanted+=(kubelet kube-proxy)
    for component in "${wanted[@]}"; do
        [[ -x "$bin/$component" ]] || missing+=("$component")
    done
    local need_kwok=false
    [[ "$node_mode" == kwok && ! -x "$kwok_bin" ]] && need_kwok=true
    if ((${#missing[@]})) || [[ "$need_kwok" == true ]]; then
        command -v go >/dev/null || { say "the Go toolchain (go) is needed to build the control plane"; exit 2; }
    fi
    if ((${#missing[@]})); then
        say "building ${missing[*]} (Kubernetes $k8s_version, etcd $etcd_version) into $bin"
        say "a cold build takes a long time (see docs/deploying.md, 'A real control plane')"
        local packages=()
        for component in "${missing[@]}"; do
            case "$component" in
            etcd) packages+=(./etcd) ;;
            *) packages+=("k8s.io/kubernetes/cmd/$component") ;;
            esac
        done
        mkdir -p "$bin"
        # Into a temp folder first, so an interrupted build never leaves a half-written binary.
        local out
        out="$(mktemp -d "$cache/build.XXXXXX")"
        local version="$k8s_version" minor="${k8s_version#v*.}"
        local stamp="-s -X k8s.io/component-base/version.gitVersion=$version"
        stamp+=" -X k8s.io/component-base/version.gitMajor=$(echo "${version#v}" | cut -d. -f1)"
        stamp+=" -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
        stamp+=" -X k8s.io/component-base/version.gitTreeState=clean"
        (cd "$here" && go build -p "${SQUARENET_CLUSTER_BUILD_JOBS:-2}" -trimpath -ldflags="$stamp" -o "$out/" "${packages[@]}")
        mv "$out"/* "$bin/"
        rmdir "$out"
    fi
    if [[ "$need_kwok" == true ]]; then
        say "building kwok $KWOK_VERSION into $(dirname "$kwok_bin")"
        (cd "$cache" && GOBIN="$(dirname "$kwok_bin")" go install -trimpath -ldflags=-s \
            "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
    fi
    [[ "$node_mode" == real ]] && node_build
    say "binaries ready: $bin, $kwok_bin"
}

built() {
    local component
    for component in "${control_plane[@]}"; do
        [[ -x "$(binary_of "$component")" ]] || return 1
    done
    if [[ "$node_mode" == real ]]; then
        node_built
    else
        [[ -x "$kwok_bin" ]]
    fi
}

# --- processes -------------------------------------------------------------------------

pid_of() { cat "$state/pids/$1.pid" 2>/dev/null || true; }

# The process of that PID is alive (not a zombie) and runs our binary: a PID reused by
# someone else's process is never ours.
ours() {
    local component="$1" pid
    pid="$(pid_of "$component")"
    [[ -n "$pid" && -d "/proc/$pid" ]] || return 1
    [[ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
    [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$(binary_of "$component")" ]]
}

start() {
    local component="$1"
    shift
    # Its own session: a Ctrl-C in the terminal that ran `up` does not reach it; without
    # the lock's descriptor (9), or the lock would outlive this script. A node's component
    # runs in the node's network namespace (nsenter execs it: the PID stays the same).
    setsid ${start_prefix:-} "$(binary_of "$component")" "$@" >"$state/logs/$component.log" 2>&1 </dev/null 9>&- &
    local pid=$!
    echo "$pid" >"$state/pids/$component.pid"
    started+=("$component")
    # Until the forked shell has exec'd the binary, /proc/PID/exe is still bash: wait for it,
    # so `ours` (which checks the binary) means "alive" from here on.
    for _ in $(seq 1 100); do
        [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$(binary_of "$component")" ]] && return
        [[ -d "/proc/$pid" ]] || return
        sleep 0.05
    done
}

node_start() {
    local start_prefix="nsenter --net=/var/run/netns/$node_netns"
    start "$@"
}

stop_all() {
    local i
    [[ "$node_mode" == real ]] && node_stop
    for ((i = ${#components[@]} - 1; i >= 0; i--)); do
        stop_one "${components[i]}" # node.sh: TERM, then KILL after 20 s
    done
    [[ "$node_mode" == real ]] && node_host_undo
    return 0
}

fail() {
    local component="$1" why="$2"
    say "$component failed to start: $why"
    say "its log: $state/logs/$component.log (last lines below)"
    tail -n 20 "$state/logs/$component.log" >&2 2>/dev/null || true
    stop_all
    say "stopped what was started (${started[*]:-nothing}); logs kept in $state/logs"
    exit 1
}

# Poll CHECK until it succeeds; fail COMPONENT when its process dies or after SECONDS.
await() {
    local component="$1" seconds="$2" what="$3"
    shift 3
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ours "$component" || fail "$component" "the process exited while waiting for $what"
        ((SECONDS < deadline)) || fail "$component" "no $what within ${seconds} s"
        sleep 0.2
    done
}

# --- certificates and kubeconfigs ------------------------------------------------------

# A CA, the API server's serving certificate, one client certificate per component and the
# service-account signing key pair, all with openssl.
make_pki() {
    local pki="$state/pki"
    mkdir -p "$pki"
    (
        cd "$pki"
        openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
        openssl req -x509 -new -key ca.key -days 30 -subj "/CN=squarenet-cluster-ca" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out ca.crt
        issue apiserver "/CN=kube-apiserver" serverAuth \
            "subjectAltName=IP:127.0.0.1,IP:$api_host,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
        issue admin "/O=system:masters/CN=squarenet-admin" clientAuth
        issue kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
        issue kube-scheduler "/CN=system:kube-scheduler" clientAuth
        [[ "$node_mode" == kwok ]] && issue kwok "/O=system:masters/CN=kwok" clientAuth
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out service-accounts.key 2>/dev/null
        openssl pkey -in service-accounts.key -pubout -out service-accounts.pub
    )
}

# issue NAME SUBJECT EXTENDED-KEY-USAGE [EXTRA-EXTENSION]: NAME.key and NAME.crt signed by the CA
issue() {
    local name="$1" subject="$2" usage="$3" extra="${4:-}"
    local extensions="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$usage
$extra"
    openssl ecparam -name prime256v1 -genkey -noout -out "$name.key" 2>/dev/null
    openssl req -new -key "$name.key" -subj "$subject" -out "$name.csr"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
        -extfile <(printf '%s\n' "$extensions") -out "$name.crt" 2>/dev/null
    rm -f "$name.csr"
}

# kubeconfig FILE USER: a self-contained kubeconfig (certificates embedded) for USER's cert.
kubeconfig() {
    local file="$1" user="$2" pki="$state/pki"
    kubectl config set-cluster squarenet --kubeconfig="$file" --server="https://$api_host:$api_port" \
        --certificate-authority="$pki/ca.crt" --embed-certs=true >/dev/null
    kubectl config set-credentials "$user" --kubeconfig="$file" --embed-certs=true \
        --client-certificate="$pki/$user.crt" --client-key="$pki/$user.key" >/dev/null
    kubectl config set-context squarenet --kubeconfig="$file" --cluster=squarenet --user="$user" >/dev/null
    kubectl config use-context squarenet --kubeconfig="$file" >/dev/null
    chmod 600 "$file"
}

# Free TCP ports on loopback, distinct (held open together while the OS picks them).
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}

# --- checks ----------------------------------------------------------------------------

etcd_healthy() { curl -sf "http://127.0.0.1:$etcd_port/health" | grep -q '"health":"true"'; }
api_ready() {
    curl -sf --cacert "$state/pki/ca.crt" --cert "$state/pki/admin.crt" --key "$state/pki/admin.key" \
        "https://$api_host:$api_port/readyz" | grep -qx ok
}
healthz() { curl -sfk "https://127.0.0.1:$1/healthz" | grep -qx ok; }
admin() { kubectl --kubeconfig="$state/kubeconfig" "$@"; }
nodes_ready() {
    [[ "$(admin get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{end}')" == "True True " ]]
}
default_service_account() { admin -n default get serviceaccount default; }

up_already() {
    local component
    [[ -f "$state/ports.env" ]] || return 1
    for component in "${components[@]}"; do
        ours "$component" || return 1
    done
    # shellcheck source=/dev/null
    source "$state/ports.env"
    api_ready
}

# --- up --------------------------------------------------------------------------------

up() {
    if up_already; then
        if [[ -n "${NODE:-}" && "$NODE" != "$node_mode" ]]; then
            say "already up with NODE=$node_mode: run cluster-down first for NODE=$NODE"
            exit 2
        fi
        say "already up (Kubernetes $k8s_version, NODE=$node_mode); KUBECONFIG=$state/kubeconfig"
        return 0
    fi
    if [[ -d "$state" ]]; then
        say "clearing the state of a cluster that is not running ($state)"
        stop_all
        rm -rf "$state"
    fi
    node_mode="${NODE:-kwok}"
    case "$node_mode" in
    kwok) components=("${control_plane[@]}" kwok) ;;
    real) components=("${control_plane[@]}" "${node_components[@]}") ;;
    esac
    built || build
    for tool in openssl curl kubectl python3; do
        command -v "$tool" >/dev/null || { say "$tool is needed"; exit 2; }
    done
    [[ "$node_mode" == real ]] && node_preflight

    local begin=$SECONDS
    started=()
    trap 'say "interrupted"; stop_all; exit 130' INT TERM
    mkdir -p "$state/logs" "$state/pids" "$state/certs/kcm" "$state/certs/scheduler"
    mkdir -m 700 "$state/etcd"
    echo "$node_mode" >"$state/node-mode"
    if [[ "$node_mode" == real ]]; then
        # The API server listens on the host's end of the node's veth: the one address
        # both the host and the pods (through the `kubernetes` Service) can reach.
        node_record_host
        node_network_up || fail kube-apiserver "the node's network namespace could not be made"
        api_host="$NODE_HOST_IP"
    fi
    read -r etcd_port peer_port api_port kcm_port scheduler_port kwok_port <<<"$(free_ports 6)"
    cat >"$state/ports.env" <<EOF
api_host=$api_host
etcd_port=$etcd_port
peer_port=$peer_port
api_port=$api_port
kcm_port=$kcm_port
scheduler_port=$scheduler_port
kwok_port=$kwok_port
EOF
    make_pki
    kubeconfig "$state/kubeconfig" admin
    local component
    for component in kube-controller-manager kube-scheduler $([[ "$node_mode" == kwok ]] && echo kwok); do
        kubeconfig "$state/$component.kubeconfig" "$component"
    done
    local pki="$state/pki"

    # fsync off: the data is thrown away with the cluster, and the disk is shared.
    start etcd --name=squarenet --data-dir="$state/etcd" \
        --listen-client-urls="http://127.0.0.1:$etcd_port" \
        --advertise-client-urls="http://127.0.0.1:$etcd_port" \
        --listen-peer-urls="http://127.0.0.1:$peer_port" \
        --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
        --initial-cluster="squarenet=http://127.0.0.1:$peer_port" \
        --unsafe-no-fsync --log-level=warn
    await etcd 30 "healthy answer" etcd_healthy

    # With kwok nodes the `kubernetes` Service gets no endpoints: the API server's only
    # address is loopback, which an Endpoints object may not hold. On a real node it is the
    # host's end of the veth, and the endpoint reconciler publishes it for the pods.
    local mode_flags=(--endpoint-reconciler-type=none)
    if [[ "$node_mode" == real ]]; then
        mode_flags=(--kubelet-preferred-address-types=InternalIP
            --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt"
            --kubelet-client-key="$pki/apiserver-kubelet-client.key")
        (cd "$pki" && issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth)
    fi
    # Privileged containers are allowed by the cluster, as on kind and GKE: the namespace's
    # Pod Security level is what refuses them.
    # shellcheck disable=SC2086 # extra flags split on spaces
    start kube-apiserver --etcd-servers="http://127.0.0.1:$etcd_port" \
        --bind-address="$api_host" --advertise-address="$api_host" --secure-port="$api_port" \
        --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
        --client-ca-file="$pki/ca.crt" --anonymous-auth=false \
        --authorization-mode=Node,RBAC \
        --enable-admission-plugins=NodeRestriction,PodSecurity \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$pki/service-accounts.pub" \
        --service-account-signing-key-file="$pki/service-accounts.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --allow-privileged=true --profiling=false "${mode_flags[@]}" \
        ${SQUARENET_CLUSTER_APISERVER_FLAGS:-}
    await kube-apiserver 120 "ready answer on https://$api_host:$api_port/readyz" api_ready

    start kube-controller-manager --kubeconfig="$state/kube-controller-manager.kubeconfig" \
        --authentication-kubeconfig="$state/kube-controller-manager.kubeconfig" \
        --authorization-kubeconfig="$state/kube-controller-manager.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port="$kcm_port" --cert-dir="$state/certs/kcm" \
        --leader-elect=false --use-service-account-credentials=true \
        --service-account-private-key-file="$pki/service-accounts.key" \
        --root-ca-file="$pki/ca.crt" \
        --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false
    start kube-scheduler --kubeconfig="$state/kube-scheduler.kubeconfig" \
        --authentication-kubeconfig="$state/kube-scheduler.kubeconfig" \
        --authorization-kubeconfig="$state/kube-scheduler.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port="$scheduler_port" --cert-dir="$state/certs/scheduler" \
        --leader-elect=false --profiling=false
    if [[ "$node_mode" == real ]]; then
        await kube-controller-manager 60 "healthy answer on :$kcm_port/healthz" healthz "$kcm_port"
        await kube-scheduler 60 "healthy answer on :$scheduler_port/healthz" healthz "$scheduler_port"
        await kube-controller-manager 60 "default ServiceAccount" default_service_account
        node_up
        trap - INT TERM
        say "up in $((SECONDS - begin)) s: Kubernetes $k8s_version, etcd $etcd_version, one real node"
        cat <<EOF
The control plane answers on https://$api_host:$api_port with one real node ($NODE_NAME at $NODE_IP).
    export KUBECONFIG=$state/kubeconfig
    kubectl get nodes
    kubectl apply --server-side -k k8s/overlays/kind
A NodePort Service answers on $NODE_IP; logs are in $state/logs.
Stop it with: make cluster-down
EOF
        return 0
    fi
    start kwok --kubeconfig="$state/kwok.kubeconfig" --config="$here/kwok.yaml" \
        --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
        --node-lease-duration-seconds=40 --server-address="127.0.0.1:$kwok_port"
    await kube-controller-manager 60 "healthy answer on :$kcm_port/healthz" healthz "$kcm_port"
    await kube-scheduler 60 "healthy answer on :$scheduler_port/healthz" healthz "$scheduler_port"
    await kwok 60 "healthy answer on :$kwok_port/healthz" curl -sf "http://127.0.0.1:$kwok_port/healthz"

    admin apply -f "$here/nodes.yaml" >/dev/null || fail kube-apiserver "the nodes were not accepted"
    await kwok 60 "Ready nodes" nodes_ready
    # The ServiceAccount controller (through its own token) has made the default account.
    await kube-controller-manager 60 "default ServiceAccount" default_service_account
    trap - INT TERM

    say "up in $((SECONDS - begin)) s: Kubernetes $k8s_version, etcd $etcd_version, kwok $KWOK_VERSION"
    cat <<EOF
The control plane answers on https://127.0.0.1:$api_port with two fake nodes (kwok-node-0, kwok-node-1).
    export KUBECONFIG=$state/kubeconfig
    kubectl get nodes
    kubectl apply --server-side -k k8s/overlays/kind
Pods become Running and Ready but run nothing; logs are in $state/logs.
Stop it with: make cluster-down
EOF
}

status() {
    if up_already; then
        echo "up: Kubernetes $k8s_version at https://$api_host:$api_port (NODE=$node_mode), KUBECONFIG=$state/kubeconfig"
        return 0
    fi
    echo "down"
    return 1
}

down() {
    if [[ ! -d "$state" ]]; then
        say "not running"
        return 0
    fi
    stop_all
    rm -rf "$state"
    say "stopped; removed $state"
}

# Several test runs (or terminals) may call this at once: one change at a time per state dir.
lock() {
    exec 9>"$state.lock"
    flock 9
}

volumes() {
    if [[ "$node_mode" != real ]] || ! up_already; then
        say "no real node is up (make cluster-up NODE=real)"
        exit 1
    fi
    node_volumes
}

# What `kind load docker-image` of a retagged image gives a kind node: the image SOURCE,
# already on the node, under the name TARGET too.
tag() {
    if [[ "$node_mode" != real ]] || ! up_already; then
        say "no real node is up (make cluster-up NODE=real)"
        exit 1
    fi
    ctr_ images tag --force "docker.io/library/$1" "docker.io/library/$2" >/dev/null
}

# shellcheck source=scripts/cluster/node.sh
source "$here/node.sh"
case "${1:-}" in
volumes) lock && volumes ;;
tag) tag "${2:?usage: $0 tag SOURCE TARGET}" "${3:?usage: $0 tag SOURCE TARGET}" ;;
build) lock && build ;;
built) built ;;
up) lock && up ;;
down) lock && down ;;
status) status ;;
*)
    echo "usage: $0 build|built|up|down|status|volumes|tag" >&2
    exit 2
    ;;
esac
