# One real node for the control plane of cluster.sh (sourced by it when NODE=real).
#
# What a kind node is made of, from Debian's packages and the Kubernetes module: containerd
# (its own config, sockets and state), runc, the CNI plugins (ptp + host-local + portmap +
# loopback from /usr/lib/cni), a kubelet and a kube-proxy built like the control plane, a
# pause image built from the module's pause.c, and the project's two images imported under
# the names the kind overlay uses. The node lives in a network namespace of its own, joined
# to the host by one veth pair and without a default route:
#
#   host  NODE_HOST_IP (the API server listens here)  <-- veth -->  NODE_IP (the node, eth0)
#   pods  POD_CIDR, routed by ptp inside the node's namespace, masqueraded to NODE_IP
#
# so pods reach the API server (the `kubernetes` Service, through kube-proxy) and each
# other, the host reaches the node (kubelet streaming, NodePort Services), and nothing
# reaches anything else. Storage: static PersistentVolumes of a `standard` class, folders
# under the node's state as kind's local-path provisioner makes them (hostPath, mode 0777,
# bound to the node), reclaim policy Retain; `cluster.sh volumes` recycles released ones.
# Why not the provisioner itself: it makes each folder with a helper pod from a registry
# image (busybox), and no registry can be reached here.
#
# Everything the node changes outside var/cluster is recorded at `up` and undone at `down`:
# processes (by PID), mounts, the namespace and its veth, kubepods cgroups, the host-wide
# sysctls the kubelet rewrites, and the folders the kubelet and CNI write outside their
# roots. The imported images stay in var/containerd (like var/docker), so a warm start does
# not import them again.
# shellcheck shell=bash

NODE_NAME=squarenet-node
NODE_HOST_IP=10.250.0.1
NODE_IP=10.250.0.2
NODE_LINK_CIDR=10.250.0.0/30
POD_CIDR=10.244.0.0/24
PAUSE_IMAGE=squarenet.local/pause:3.10
NODE_VOLUMES=4
# The images the kind overlay runs (k8s/overlays/kind, `images:`).
NODE_IMAGE_TAG="${TAG:-dev}"
NODE_IMAGES=("squarenet-trainer:$NODE_IMAGE_TAG" "squarenet-predictor:$NODE_IMAGE_TAG")
# Host-wide settings the kubelet (or the node's tools) may rewrite: saved at up, restored at down.
NODE_SYSCTLS=(vm/overcommit_memory kernel/panic kernel/panic_on_oops net/ipv4/ip_forward
    net/netfilter/nf_conntrack_max net/bridge/bridge-nf-call-iptables)
# Host folders the kubelet, containerd and CNI write outside their own roots.
NODE_HOST_DIRS=(/var/run/netns /var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni
    /run/containerd /opt/cni /etc/cni)

node_id="$(printf '%s' "$state" | sha256sum | cut -c1-8)"
node_netns="sqn-$node_id"
node_veth="sqn-$node_id"
node_dir="$state/node"
# Unix socket paths are short (~108 bytes): containerd's sockets and state live under /run.
node_run="/run/sqn-$node_id"
node_sock="$node_run/containerd.sock"
node_images_dir="${SQUARENET_NODE_IMAGES_DIR:-$repo/var/containerd}"
crictl_version=v1.37.0
crictl_bin="$cache/crictl-$crictl_version/crictl"

in_node() { nsenter --net="/var/run/netns/$node_netns" "$@"; }
crictl_() { "$crictl_bin" --runtime-endpoint "unix://$node_sock" --image-endpoint "unix://$node_sock" --timeout 30s "$@"; }
ctr_() { ctr --address "$node_sock" -n k8s.io "$@"; }

# --- build -----------------------------------------------------------------------------

node_build() {
    if [[ ! -x "$crictl_bin" ]]; then
        say "building crictl $crictl_version into $(dirname "$crictl_bin")"
        (cd "$cache" && GOBIN="$(dirname "$crictl_bin")" go install -trimpath -ldflags=-s \
            "sigs.k8s.io/cri-tools/cmd/crictl@$crictl_version")
    fi
    if [[ ! -x "$bin/pause" ]]; then
        local source
        source="$(cd "$here" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
        [[ -f "$source" ]] || (cd "$here" && go mod download k8s.io/kubernetes)
        say "building the pause binary from $source"
        gcc -Os -Wall -static -DVERSION="$k8s_version-squarenet" -o "$bin/pause.tmp" "$source"
        mv "$bin/pause.tmp" "$bin/pause"
    fi
}

node_built() { [[ -x "$crictl_bin" && -x "$bin/pause" && -x "$bin/kubelet" && -x "$bin/kube-proxy" ]]; }

# --- checks before anything is changed -------------------------------------------------

node_preflight() {
    ((EUID == 0)) || { say "node: a real node needs root (network namespaces, mounts, cgroups)"; exit 2; }
    local tool
    for tool in containerd runc ctr nsenter ip iptables nft conntrack gcc; do
        command -v "$tool" >/dev/null || { say "node: $tool is needed (Debian: see docs/deploying.md, 'One real node')"; exit 2; }
    done
    for tool in ptp host-local loopback portmap; do
        [[ -x "/usr/lib/cni/$tool" ]] || { say "node: the CNI plugin /usr/lib/cni/$tool is missing (apt-get install containernetworking-plugins)"; exit 2; }
    done
    local controller
    for controller in cpu cpuacct memory pids cpuset; do
        [[ -d "/sys/fs/cgroup/$controller" ]] || { say "node: the cgroup controller $controller is not mounted at /sys/fs/cgroup/$controller"; exit 2; }
    done
    if [[ -e "/var/run/netns/$node_netns" ]] || ip link show "$node_veth" >/dev/null 2>&1; then
        say "node: the namespace $node_netns or link $node_veth exists already (run cluster.sh down)"
        exit 2
    fi
    if ip -4 -o addr show | grep -q " inet $NODE_HOST_IP/"; then
        say "node: $NODE_HOST_IP is in use on this host (another real node is up: stop it first)"
        exit 2
    fi
    # No range of the node may overlap a network the host already has.
    python3 - "$NODE_LINK_CIDR" "$POD_CIDR" "$SERVICE_CIDR" <<'PY' || exit 2
import ipaddress, json, subprocess, sys
ours = [ipaddress.ip_network(c) for c in sys.argv[1:]]
routes = json.loads(subprocess.run(["ip", "-4", "-j", "route", "show", "table", "all"],
                                   capture_output=True, text=True, check=True).stdout or "[]")
for route in routes:
    dst = route.get("dst", "default")
    if dst == "default" or ":" in dst:
        continue
    net = ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False)
    if net.is_loopback or net.is_multicast or net.prefixlen == 0:
        continue
    for mine in ours:
        if net.overlaps(mine):
            print(f"cluster: node: {mine} overlaps the host's route {dst}", file=sys.stderr)
            sys.exit(1)
PY
}

# --- host changes: recorded first, undone at down -----------------------------------

node_record_host() {
    mkdir -p "$node_dir"
    local key dir
    : >"$node_dir/sysctls"
    for key in "${NODE_SYSCTLS[@]}"; do
        [[ -r "/proc/sys/$key" ]] && echo "$key $(cat "/proc/sys/$key")" >>"$node_dir/sysctls"
    done
    : >"$node_dir/created-dirs"
    for dir in "${NODE_HOST_DIRS[@]}"; do
        [[ -e "$dir" ]] || echo "$dir" >>"$node_dir/created-dirs"
    done
    find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d | sort >"$node_dir/cgroups-before"
}

node_network_up() {
    ip netns add "$node_netns"
    ip link add "$node_veth" type veth peer name eth0 netns "$node_netns"
    ip addr add "$NODE_HOST_IP/30" dev "$node_veth"
    ip link set "$node_veth" up
    in_node ip link set lo up
    in_node ip addr add "$NODE_IP/30" dev eth0
    in_node ip link set eth0 up
    # Inside the node's namespace only: these are per-namespace settings.
    in_node sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
}

# --- configuration ---------------------------------------------------------------------

node_pki() {
    (
        cd "$state/pki"
        issue node "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
        issue kubelet-serving "/CN=$NODE_NAME" serverAuth "subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
        issue kube-proxy "/CN=system:kube-proxy" clientAuth
    )
    kubeconfig "$node_dir/kubelet.kubeconfig" node
    kubeconfig "$node_dir/kube-proxy.kubeconfig" kube-proxy
}

node_configs() {
    mkdir -p "$node_dir/cni" "$node_dir/ipam" "$node_dir/kubelet" "$node_dir/pod-logs" \
        "$node_dir/volumes" "$node_images_dir" "$node_run"
    cat >"$node_dir/containerd.toml" <<EOF
version = 2
root = "$node_images_dir/root"
state = "$node_run/state"
# /opt/containerd is not ours to write.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$node_sock"
[ttrpc]
  address = "$node_run/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # CAP_SYS_RESOURCE is missing here: nothing may lower oom_score_adj.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node_dir/cni"
EOF
    cat >"$node_dir/cni/10-squarenet.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "squarenet",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$node_dir/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    cat >"$node_dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$node_sock
# cgroups are v1 here and cannot be switched; no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
# CAP_SYS_RESOURCE is missing: the kubelet may not lower its own oom_score_adj.
oomScoreAdj: 0
maxOpenFiles: 20000
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $state/pki/kubelet-serving.crt
tlsPrivateKeyFile: $state/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $state/pki/ca.crt}
# Only holders of a certificate of this cluster's CA reach the kubelet (the API server).
authorization: {mode: AlwaysAllow}
# No cluster DNS: pods get no resolver from the host (nothing outside may be looked up).
resolvConf: ""
clusterDomain: cluster.local
podLogsDir: $node_dir/pod-logs
# The imported images cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  imagefs.available: 2%
rotateCertificates: false
serverTLSBootstrap: false
EOF
    cat >"$node_dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
# No IPVS in this kernel; nf_tables is built in.
mode: nftables
clientConnection:
  kubeconfig: $node_dir/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
oomScoreAdj: 0
# Leave the host-wide conntrack settings alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
nodePortAddresses: ["$NODE_IP/32"]
EOF
}

# --- images ----------------------------------------------------------------------------

# The engine of scripts/docker-engine.sh; started here (and stopped again) only when an
# image must be built or exported.
node_docker_started=false
node_docker() { DOCKER_HOST="$node_docker_host" /usr/bin/docker "$@"; }
node_docker_up() {
    [[ -n "${node_docker_host:-}" ]] && return 0
    local engine="$repo/scripts/docker-engine.sh"
    if ! DOCKER_HOST="$(bash "$engine" host)" /usr/bin/docker info >/dev/null 2>&1; then
        node_docker_started=true
    fi
    node_docker_host="$(bash "$engine" start 2>>"$state/logs/images.log")" ||
        fail images "the Docker engine did not start (var/docker/dockerd.log)"
}
node_docker_down() {
    if [[ "$node_docker_started" == true ]]; then
        bash "$repo/scripts/docker-engine.sh" stop 2>>"$state/logs/images.log" || true
        node_docker_started=false
    fi
}

# Images already imported (their Docker image id recorded) are not imported again.
node_imported() { [[ -f "$node_images_dir/imported/$(echo "$1" | tr '/:' '__')" ]]; }

# Importing an image takes about three times its size for a while (the engine's export, the
# node's copy and its unpacked layers) and keeps two: say so before a full disk breaks it.
node_room_for_images() {
    local image id marker size total=0 largest=0 free
    for image in "$PAUSE_IMAGE" "${NODE_IMAGES[@]}"; do
        id="$(node_docker image inspect --format '{{.Id}}' "$image")"
        marker="$node_images_dir/imported/$(echo "$image" | tr '/:' '__')"
        [[ -f "$marker" && "$(cat "$marker")" == "$id" ]] && continue
        size="$(node_docker image inspect --format '{{.Size}}' "$image")"
        total=$((total + size))
        ((size > largest)) && largest=$size
    done
    free="$(df --output=avail -B1 "$node_images_dir" | tail -1)"
    if ((free < 2 * total + largest)); then
        fail images "$(((2 * total + largest) >> 20)) MiB are needed to import the images and $((free >> 20)) MiB are free under $node_images_dir"
    fi
}

node_images() {
    local missing=() image
    for image in "$PAUSE_IMAGE" "${NODE_IMAGES[@]}"; do
        node_imported "$image" || missing+=("$image")
    done
    # A running engine may hold newer builds of the images: import those too.
    if ((${#missing[@]} == 0)) && ! DOCKER_HOST="$(bash "$repo/scripts/docker-engine.sh" host)" \
        /usr/bin/docker info >/dev/null 2>&1; then
        return 0
    fi
    node_docker_up
    if ! node_docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then
        local root
        root="$(mktemp -d)"
        cp "$bin/pause" "$root/pause"
        tar -C "$root" -c pause | node_docker import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" \
            >>"$state/logs/images.log" 2>&1 || { rm -rf "$root"; fail images "the pause image could not be made"; }
        rm -rf "$root"
    fi
    for image in "${NODE_IMAGES[@]}"; do
        node_docker image inspect "$image" >/dev/null 2>&1 && continue
        say "building the images (scripts/build-images.sh; minutes on a cold machine)"
        local ca="${CA_BUNDLE:-}"
        [[ -z "$ca" && -f /etc/ssl/certs/ca-certificates.crt ]] && ca=/etc/ssl/certs/ca-certificates.crt
        {
            DOCKER_HOST="$node_docker_host" DOCKER=/usr/bin/docker bash "$repo/scripts/base-image.sh" squarenet-base:test &&
                DOCKER_HOST="$node_docker_host" DOCKER=/usr/bin/docker TAG="$NODE_IMAGE_TAG" \
                    BASE_IMAGE=squarenet-base:test DOCKER_BUILD_ARGS="--network host --progress plain" \
                    CA_BUNDLE="$ca" bash "$repo/scripts/build-images.sh"
        } >>"$state/logs/images.log" 2>&1 || fail images "the images could not be built"
        break
    done
    mkdir -p "$node_images_dir/imported"
    node_room_for_images
    for image in "$PAUSE_IMAGE" "${NODE_IMAGES[@]}"; do
        local id marker
        id="$(node_docker image inspect --format '{{.Id}}' "$image")"
        marker="$node_images_dir/imported/$(echo "$image" | tr '/:' '__')"
        [[ -f "$marker" && "$(cat "$marker")" == "$id" ]] && continue
        say "importing $image into the node"
        node_docker save "$image" | ctr_ images import - >>"$state/logs/images.log" 2>&1 ||
            fail images "$image could not be imported"
        echo "$id" >"$marker"
    done
    node_docker_down
}

# --- up --------------------------------------------------------------------------------

node_ready() {
    [[ "$(admin get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}
kube_proxy_ready() { in_node curl -sf "http://127.0.0.1:10256/healthz" >/dev/null; }
containerd_ready() { ctr_ version; }

# The node's part of `up`, after the control plane answers.
node_up() {
    node_configs
    node_pki
    # shellcheck disable=SC2153 # node_start is cluster.sh's start in the node's namespace
    node_start containerd --config "$node_dir/containerd.toml"
    await containerd 60 "an answer on $node_sock" containerd_ready
    node_images
    node_start kubelet --config="$node_dir/kubelet.yaml" --kubeconfig="$node_dir/kubelet.kubeconfig" \
        --root-dir="$node_dir/kubelet" --cert-dir="$node_dir/kubelet/pki" \
        --hostname-override="$NODE_NAME" --node-ip="$NODE_IP"
    node_start kube-proxy --config="$node_dir/kube-proxy.yaml"
    await kubelet 120 "node $NODE_NAME Ready" node_ready
    await kube-proxy 60 "healthy answer on :10256/healthz" kube_proxy_ready
    node_volumes
}

# The `standard` class and NODE_VOLUMES volumes of it; a Released one (its claim was
# deleted, reclaim policy Retain) gets an empty folder and is offered again.
node_volumes() {
    local i name phase
    admin apply -f - >/dev/null <<EOF || fail kube-apiserver "the storage class was not accepted"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
EOF
    for ((i = 0; i < NODE_VOLUMES; i++)); do
        name="$NODE_NAME-volume-$i"
        phase="$(admin get pv "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
        case "$phase" in
        Available | Bound | Pending) continue ;;
        "") ;;
        *) admin delete pv "$name" --wait=true >/dev/null ;;
        esac
        rm -rf "${node_dir:?}/volumes/$name"
        # As kind's local-path provisioner makes them: a hostPath folder open to every UID
        # (a `local` volume would get the pod's fsGroup only from the first pod mounting it,
        # and when that is a read-only predictor, the trainer cannot write).
        mkdir -p -m 0777 "$node_dir/volumes/$name"
        chmod 0777 "$node_dir/volumes/$name"
        admin apply -f - >/dev/null <<EOF || fail kube-apiserver "the volume $name was not accepted"
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $name
  labels: {squarenet.dev/node-volume: "true"}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: standard
  hostPath: {path: $node_dir/volumes/$name, type: Directory}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions:
            - {key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}
EOF
    done
}

# --- down ------------------------------------------------------------------------------

stop_one() {
    local component="$1" pid
    if ours "$component"; then
        pid="$(pid_of "$component")"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            ours "$component" || break
            sleep 0.2
        done
        if ours "$component"; then
            say "$component ($pid) did not stop within 20 s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do
                ours "$component" || break
                sleep 0.1
            done
        fi
    fi
    rm -f "$state/pids/$component.pid"
}

# The node's processes, pods and mounts, stopped and undone; harmless when parts never
# happened. node_host_undo follows.
node_stop() {
    [[ -d "$node_dir" ]] || return 0
    stop_one kube-proxy
    stop_one kubelet
    # The pods outlive the kubelet (their shims are children of nobody): stop and remove
    # them through the CRI, which also removes their network namespaces and addresses.
    if ours containerd && [[ -x "$crictl_bin" ]]; then
        crictl_ stopp $(crictl_ pods -q 2>/dev/null) >/dev/null 2>&1 || true
        crictl_ rmp -a -f >/dev/null 2>&1 || true
    fi
    stop_one containerd
    # A shim left behind (containerd killed mid-way) is ours when it names our socket.
    local pid
    for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $node_sock" || true); do
        kill -KILL "$pid" 2>/dev/null || true
    done
    # Mounts under the node's folders, innermost first.
    local mnt
    { awk '{ print $2 }' /proc/self/mounts | grep -e "^$node_dir/" -e "^$node_run" \
        -e "^$node_images_dir/" -e "^/var/run/netns/cni-" -e "^/run/netns/cni-" || true; } |
        sort -r | while read -r mnt; do
            umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
        done
    rm -f /var/run/netns/cni-* 2>/dev/null || true
}

# The host changes of the node, undone after the control plane stopped (the API server
# listens on the node's veth until then).
node_host_undo() {
    [[ -d "$node_dir" ]] || return 0
    if [[ -e "/var/run/netns/$node_netns" ]]; then
        ip netns del "$node_netns" 2>/dev/null || true
    fi
    ip link del "$node_veth" 2>/dev/null || true
    # The cgroups the kubelet made (kubepods in every hierarchy), deepest first.
    if [[ -f "$node_dir/cgroups-before" ]]; then
        local cgroup
        find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d | sort | comm -13 "$node_dir/cgroups-before" - |
            while read -r cgroup; do
                find "$cgroup" -depth -type d -exec rmdir {} \; 2>/dev/null || true
            done
    fi
    if [[ -f "$node_dir/sysctls" ]]; then
        local key value
        while read -r key value; do
            [[ "$(cat "/proc/sys/$key" 2>/dev/null)" == "$value" ]] || echo "$value" >"/proc/sys/$key" 2>/dev/null ||
                say "node: could not restore $key to $value"
        done <"$node_dir/sysctls"
    fi
    if [[ -f "$node_dir/created-dirs" ]]; then
        local dir
        while read -r dir; do
            if [[ "$dir" == /var/run/netns ]] && mountpoint -q /var/run/netns; then
                umount /var/run/netns 2>/dev/null || true
            fi
            rm -rf "$dir"
        done <"$node_dir/created-dirs"
    fi
    rm -rf "$node_run"
    rm -rf "$node_dir"
}
