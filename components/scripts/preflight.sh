# shellcheck shell=sh
# Preflight of one Calico node. It changes nothing on the node: it collects the node's facts, prints them
# as one JSON object on stdout, prints each warning and problem on stderr, and exits 1 when any problem
# would stop Calico from working on this node.
#
# components/nodes.py prepends these settings as shell assignments:
#   NODE_NAME, NODE_HOST             the Kubernetes node name and the address used for SSH
#   NODE_MTU, POD_CIDR               calico:nodeMtu and calico:podCidr
#   ENCAPSULATION, KERNEL_MODULE     calico:encapsulation and the kernel module it needs (empty for None)
#   ALTERNATIVE_ENCAPSULATION, ALTERNATIVE_MODULE   the other overlay to suggest when the module is missing
#   AUTODETECTION_METHOD             calico:ipAutodetectionMethod (empty: upstream's first-found)
#   CHECKSUM_ARCHITECTURES           architectures with a known calicoctl sha256, or "release" when the
#                                    release's SHA256SUMS covers every architecture
#   INSTALL_DIR                      calico:calicoctlInstallDir
#   CALICOCTL_VERSION, KUBECONFIG_PATH

set -u
LC_ALL=C
export LC_ALL

problems=""
warnings=""

add_problem() {
    problems="${problems}$1
"
}

add_warning() {
    warnings="${warnings}$1
"
}

# Print $1 as a JSON string. Control characters cannot occur in the values collected here except by
# accident (a file name with a newline), so they are dropped rather than escaped.
json_string() {
    printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

# Print the non-empty lines of $1 as a JSON array of strings.
json_lines() {
    result=""
    old_ifs=$IFS
    IFS='
'
    for line in $1; do
        [ -n "$line" ] || continue
        result="${result:+$result,}$(json_string "$line")"
    done
    IFS=$old_ifs
    printf '[%s]' "$result"
}

# Exit status 0 when IPv4 address $1 lies inside CIDR $2. awk computes with doubles, which hold every
# 32-bit address exactly.
in_cidr() {
    awk -v address="$1" -v cidr="$2" '
        function number(dotted,    part) {
            split(dotted, part, ".")
            return ((part[1] * 256 + part[2]) * 256 + part[3]) * 256 + part[4]
        }
        BEGIN {
            split(cidr, network, "/")
            size = 2 ^ (32 - network[2])
            exit !(int(number(address) / size) == int(number(network[1]) / size))
        }'
}

# Print loaded, builtin, loadable or missing for kernel module $1.
module_state() {
    module=$1
    modules_dir="/lib/modules/$(uname -r)"
    if [ -d "/sys/module/$module" ]; then
        echo loaded
    elif [ -r "$modules_dir/modules.builtin" ] && grep -q "/$module\.ko" "$modules_dir/modules.builtin"; then
        echo builtin
    elif [ -r "$modules_dir/modules.dep" ] && grep -q "/$module\.ko" "$modules_dir/modules.dep"; then
        echo loadable
    elif command -v modprobe >/dev/null 2>&1 && modprobe -n -q "$module" 2>/dev/null; then
        echo loadable
    else
        echo missing
    fi
}

for tool in ip awk sed; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        printf 'ERROR: %s: %s is not installed; the preflight needs ip (iproute2), awk and sed.\n' "$NODE_NAME" "$tool" >&2
        exit 1
    fi
done

# --- Architecture -------------------------------------------------------------------------------------
machine=$(uname -m)
kernel=$(uname -r)
case "$machine" in
    aarch64 | arm64) architecture=arm64 ;;
    x86_64 | amd64) architecture=amd64 ;;
    ppc64le) architecture=ppc64le ;;
    s390x) architecture=s390x ;;
    arm*)
        architecture=""
        add_problem "Calico publishes no images for 32-bit ARM; install a 64-bit OS on $NODE_NAME (uname -m reports $machine)."
        ;;
    *)
        architecture=""
        add_problem "Calico publishes images for amd64, arm64, ppc64le and s390x only; $NODE_NAME reports machine $machine."
        ;;
esac
# A 64-bit kernel can run a 32-bit userland (32-bit Raspberry Pi OS on a Pi 4 reports aarch64). The
# container runtime then pulls 32-bit images, which Calico does not publish.
userland_bits=$(getconf LONG_BIT 2>/dev/null || echo unknown)
if [ "$userland_bits" = 32 ]; then
    case "$architecture" in
        arm64) add_problem "Calico publishes no images for 32-bit ARM; install a 64-bit OS on $NODE_NAME (the kernel is $machine but the userland is 32-bit)." ;;
        amd64) add_problem "Calico publishes no images for 32-bit x86; install a 64-bit OS on $NODE_NAME (the kernel is $machine but the userland is 32-bit)." ;;
    esac
fi
if [ -n "$architecture" ] && [ "$CHECKSUM_ARCHITECTURES" != release ]; then
    case " $CHECKSUM_ARCHITECTURES " in
        *" $architecture "*) ;;
        *) add_problem "no sha256 is known for calicoctl $CALICOCTL_VERSION linux-$architecture (the architecture of $NODE_NAME), so it could not be verified. Set it: pulumi config set --path calico:calicoctlSha256.$architecture <sha256 of calicoctl-linux-$architecture>" ;;
    esac
fi

# --- Privileges ---------------------------------------------------------------------------------------
user=$(id -un)
if [ "$(id -u)" -eq 0 ]; then
    privilege=root
elif ! command -v sudo >/dev/null 2>&1; then
    privilege=none
    add_problem "passwordless sudo required for $user on $NODE_NAME, and sudo is not installed. Install sudo and allow $user to run it without a password, or connect as root (calico:sshUser or calico:nodes[].user)."
elif sudo -n true 2>/dev/null; then
    # -n makes sudo fail at once instead of prompting, so a password prompt can never hang the run.
    privilege=sudo
else
    privilege=none
    add_problem "passwordless sudo required for $user on $NODE_NAME: sudo asks for a password. Add a sudoers rule such as '$user ALL=(ALL) NOPASSWD: ALL' in /etc/sudoers.d/, or connect as root (calico:sshUser or calico:nodes[].user)."
fi

# --- The interface that carries the node's configured address ------------------------------------------
# NODE_HOST may be a host name or a NAT address. Then the server address of this SSH connection is the
# next best guess, and the route back to the SSH client the last one.
host_address=""
case "$NODE_HOST" in
    *[!0-9.]* | "") ;;
    *) host_address=$NODE_HOST ;;
esac
find_interface() {
    ip -o -4 addr show | awk -v wanted="$1" '{ split($4, address, "/"); if (address[1] == wanted) { print $2; exit } }'
}
interface=""
[ -z "$host_address" ] || interface=$(find_interface "$host_address")
ssh_client=""
ssh_server=""
if [ -n "${SSH_CONNECTION:-}" ]; then
    # SSH_CONNECTION is "client-address client-port server-address server-port".
    ssh_client=$(printf '%s' "$SSH_CONNECTION" | awk '{ print $1 }')
    ssh_server=$(printf '%s' "$SSH_CONNECTION" | awk '{ print $3 }')
fi
if [ -z "$interface" ] && [ -n "$ssh_server" ]; then
    interface=$(find_interface "$ssh_server")
    [ -z "$interface" ] || host_address=$ssh_server
fi
if [ -z "$interface" ] && [ -n "$ssh_client" ]; then
    interface=$(ip -o route get "$ssh_client" 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')
fi

interface_mtu=0
interface_addresses=""
if [ -z "$interface" ]; then
    add_problem "could not find the network interface of $NODE_HOST on $NODE_NAME (no interface holds that address and there is no route back to the SSH client); set calico:nodes[].host to the node's own address."
else
    interface_mtu=$(cat "/sys/class/net/$interface/mtu")
    interface_addresses=$(ip -o -4 addr show dev "$interface" | awk '{ print $4 }')
    if [ "$interface_mtu" -lt "$NODE_MTU" ]; then
        add_problem "interface $interface of $NODE_NAME has MTU $interface_mtu, smaller than calico:nodeMtu = $NODE_MTU; packets of $NODE_MTU bytes would be dropped. Set calico:nodeMtu to the smallest MTU of your nodes: pulumi config set calico:nodeMtu $interface_mtu"
    elif [ "$interface_mtu" -gt "$NODE_MTU" ]; then
        add_warning "interface $interface of $NODE_NAME has MTU $interface_mtu, larger than calico:nodeMtu = $NODE_MTU; pods get a smaller MTU than this network allows."
    fi
fi

# --- UP interfaces and their IPv4 addresses ------------------------------------------------------------
# `ip -o link` prints "<index>: <name>[@<peer>]: <flags> ..." in index order.
up_interfaces=$(ip -o link show up | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }')
up_json=""
# Interfaces upstream's first-found method skips (calico-node's default exclude list).
first_found_skip='^(docker|cbr|dummy|virbr|lxcbr|veth|lo|cali|tunl|flannel|kube-ipvs|cni|vxlan\.calico|vxlan-v6\.calico|wireguard\.cali|wg-v6\.cali|nodelocaldns)'
candidates=""
candidate_count=0
first_found_interface=""
first_found_address=""
for name in $up_interfaces; do
    mtu=$(cat "/sys/class/net/$name/mtu" 2>/dev/null || echo 0)
    addresses=$(ip -o -4 addr show dev "$name" scope global | awk '{ print $4 }')
    up_json="${up_json:+$up_json,}{\"name\":$(json_string "$name"),\"mtu\":$mtu,\"addresses\":$(json_lines "$addresses")}"
    if [ -n "$addresses" ] && ! printf '%s\n' "$name" | grep -Eq "$first_found_skip"; then
        candidates="${candidates:+$candidates, }$name"
        candidate_count=$((candidate_count + 1))
        if [ -z "$first_found_interface" ]; then
            first_found_interface=$name
            first_found_address=$(printf '%s\n' "$addresses" | head -n 1 | sed 's|/.*||')
        fi
    fi
done
if [ -z "$AUTODETECTION_METHOD" ] && [ "$candidate_count" -gt 1 ]; then
    add_warning "$NODE_NAME has several UP interfaces with an IPv4 address ($candidates); calico-node's default first-found method would pick $first_found_interface ($first_found_address). If that is not the node-to-node network, set calico:ipAutodetectionMethod to kubernetes-internal-ip or interface=<name>."
fi

# --- Node addresses inside the pod CIDR ----------------------------------------------------------------
# Calico's own interfaces (tunl0, vxlan.calico, cali*) take addresses from the pool once it runs, so they
# are not conflicts.
node_addresses=$(ip -o -4 addr show | awk '{ print $2, $4 }' |
    grep -Ev '^(lo|cali|tunl|vxlan\.calico|vxlan-v6\.calico|wireguard\.cali|wg-v6\.cali)' || true)
while read -r name cidr_address; do
    [ -n "$name" ] || continue
    address=${cidr_address%/*}
    if in_cidr "$address" "$POD_CIDR"; then
        add_problem "address $address of interface $name on $NODE_NAME lies inside calico:podCidr = $POD_CIDR; pod routes would capture traffic to the node's own network. Choose a pod network not used on the LAN, for example pulumi config set calico:podCidr 10.244.0.0/16 (and the same --pod-network-cidr for kubeadm)."
    fi
done <<EOF
$node_addresses
EOF

# --- Kernel support for the encapsulation --------------------------------------------------------------
module_status=""
if [ -n "$KERNEL_MODULE" ]; then
    module_status=$(module_state "$KERNEL_MODULE")
    if [ "$module_status" = missing ]; then
        alternative_status=$(module_state "$ALTERNATIVE_MODULE")
        if [ "$alternative_status" = missing ]; then
            switch="or set calico:encapsulation None (no overlay; all nodes must then share one subnet): pulumi config set calico:encapsulation None"
        else
            switch="or switch to $ALTERNATIVE_ENCAPSULATION, whose module $ALTERNATIVE_MODULE is $alternative_status on this node: pulumi config set calico:encapsulation $ALTERNATIVE_ENCAPSULATION"
        fi
        add_problem "kernel module $KERNEL_MODULE, needed by calico:encapsulation = $ENCAPSULATION, is neither loaded nor available on $NODE_NAME (kernel $kernel). Install the distribution's extra kernel modules package (linux-modules-extra-$kernel on Ubuntu), $switch"
    fi
fi

# --- Other CNI configurations --------------------------------------------------------------------------
foreign_cni=""
for path in /etc/cni/net.d/*; do
    [ -e "$path" ] || continue
    file=${path##*/}
    case "$file" in
        10-calico.conflist | calico-kubeconfig | calico-tls) ;;
        *) foreign_cni="${foreign_cni}$file
" ;;
    esac
done
if [ -n "$foreign_cni" ]; then
    add_warning "/etc/cni/net.d on $NODE_NAME holds CNI configurations that are not Calico's: $(printf '%s' "$foreign_cni" | tr '\n' ' ' | sed 's/ $//'). A container runtime's bridge config hands pods addresses outside the Calico pool; move them out of /etc/cni/net.d unless another CNI plugin is meant to run next to Calico."
fi

# --- The install directory ----------------------------------------------------------------------------
if [ ! -d "$INSTALL_DIR" ]; then
    add_problem "calico:calicoctlInstallDir = $INSTALL_DIR does not exist on $NODE_NAME. Create it, or choose an existing directory: pulumi config set calico:calicoctlInstallDir /usr/local/bin"
else
    unsafe=$(unsafe_directory "$INSTALL_DIR")
    [ -z "$unsafe" ] || add_problem "calico:calicoctlInstallDir = $INSTALL_DIR on $NODE_NAME: $unsafe, or choose another directory: pulumi config set calico:calicoctlInstallDir /usr/local/bin"
fi

# --- Tools the calicoctl install needs -----------------------------------------------------------------
# The Calico objects wait only for the preflights, so a node that cannot run the install must fail here.
for tool in sha256sum mktemp; do
    command -v "$tool" >/dev/null 2>&1 ||
        add_problem "$tool is not installed on $NODE_NAME; the calicoctl install needs it. Install it: apt-get install coreutils"
done
if command -v curl >/dev/null 2>&1; then
    downloader=curl
elif ! command -v wget >/dev/null 2>&1; then
    downloader=""
    add_problem "neither curl nor wget is installed on $NODE_NAME; the calicoctl install downloads with one of them. Install curl: apt-get install curl"
elif wget --help 2>&1 | grep -q BusyBox; then
    downloader="busybox wget"
else
    downloader=wget
fi

# --- Kubernetes tools ----------------------------------------------------------------------------------
admin_conf=false
[ ! -e "$KUBECONFIG_PATH" ] || admin_conf=true
kubectl_path=$(command -v kubectl 2>/dev/null || true)

# --- Report --------------------------------------------------------------------------------------------
printf '{'
printf '"node":%s,' "$(json_string "$NODE_NAME")"
printf '"user":%s,"privilege":%s,' "$(json_string "$user")" "$(json_string "$privilege")"
printf '"machine":%s,"architecture":%s,"kernel":%s,"userlandBits":%s,' "$(json_string "$machine")" \
    "$(json_string "$architecture")" "$(json_string "$kernel")" "$(json_string "$userland_bits")"
printf '"hostAddress":%s,"interface":%s,"interfaceMtu":%s,"interfaceAddresses":%s,' \
    "$(json_string "$host_address")" "$(json_string "$interface")" "$interface_mtu" "$(json_lines "$interface_addresses")"
printf '"upInterfaces":[%s],' "$up_json"
printf '"firstFound":{"interface":%s,"address":%s},' "$(json_string "$first_found_interface")" "$(json_string "$first_found_address")"
printf '"kernelModule":%s,"kernelModuleState":%s,' "$(json_string "$KERNEL_MODULE")" "$(json_string "$module_status")"
printf '"foreignCniFiles":%s,' "$(json_lines "$foreign_cni")"
printf '"adminConf":%s,"kubectl":%s,"downloader":%s,' "$admin_conf" "$(json_string "$kubectl_path")" "$(json_string "$downloader")"
printf '"warnings":%s,"problems":%s' "$(json_lines "$warnings")" "$(json_lines "$problems")"
printf '}\n'

if [ -n "$warnings" ]; then
    printf '%s' "$warnings" | sed 's/^/WARNING: /' >&2
fi
if [ -n "$problems" ]; then
    printf '%s' "$problems" | sed 's/^/ERROR: /' >&2
    exit 1
fi
exit 0
