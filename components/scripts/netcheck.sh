#!/usr/bin/env bash
# Network check of a Calico cluster: pings between pods, pool membership, DNS, the API server's
# ClusterIP and the path MTU between nodes, reported one line per scenario.
#
# Subcommands:
#   scenarios       Run the scenarios against a plain list of pods ("name node ip" lines), as the tests do.
#   cluster         Inside the check pod, list the pingtest pods through the Kubernetes API, then run scenarios.
#   pods-from-json  Turn a Kubernetes PodList (JSON on stdin) into "name node ip" lines.
#   await           On a control-plane node, wait for the check Job, print its report, and exit non-zero
#                   unless it passed.
#
# Needs bash, iputils ping (BusyBox ping cannot set don't-fragment), dig, and for `cluster` curl and jq.
# Exit status: 0 when no scenario failed, 1 when one did, 2 for a usage or setup error.

set -u

readonly EXIT_FAILED=1
readonly EXIT_SETUP=2

die() {
	printf 'netcheck: %s\n' "$*" >&2
	exit "$EXIT_SETUP"
}

require_tools() {
	local tool
	for tool in "$@"; do
		command -v "$tool" >/dev/null 2>&1 || die "$tool not found: the check image must provide it"
	done
}

is_ipv4() {
	local IFS=.
	local -a parts
	[[ $1 =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || return 1
	read -r -a parts <<<"$1"
	((parts[0] <= 255 && parts[1] <= 255 && parts[2] <= 255 && parts[3] <= 255))
}

ipv4_to_int() {
	local IFS=.
	local -a parts
	read -r -a parts <<<"$1"
	echo $(((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]))
}

# Succeed when IPv4 address $1 lies inside the IPv4 CIDR $2.
ipv4_in_cidr() {
	local address=$1 network=${2%/*} prefix=${2#*/}
	local mask=$(((0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF))
	(($(($(ipv4_to_int "$address") & mask)) == $(($(ipv4_to_int "$network") & mask))))
}

# Run a command and kill it after $1 seconds. Return 124 on timeout, else the command's status.
# BusyBox and coreutils `timeout` report a timeout with different statuses, so this does not use them.
run_with_deadline() {
	local seconds=$1 pid ticks
	shift
	"$@" &
	pid=$!
	ticks=$((seconds * 10))
	while ((ticks > 0)) && kill -0 "$pid" 2>/dev/null; do
		sleep 0.1
		ticks=$((ticks - 1))
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		return 124
	fi
	wait "$pid"
}

# --- Report ---------------------------------------------------------------------------------------------

PASSED=0
FAILED=0
SKIPPED=0
FAILED_SCENARIOS=""

# report RESULT SCENARIO SOURCE DESTINATION DETAIL
report() {
	local result=$1 scenario=$2 source=$3 destination=$4 detail=$5
	case $result in
	PASS) PASSED=$((PASSED + 1)) ;;
	FAIL)
		FAILED=$((FAILED + 1))
		case " $FAILED_SCENARIOS " in
		*" $scenario "*) ;;
		*) FAILED_SCENARIOS="${FAILED_SCENARIOS:+$FAILED_SCENARIOS }$scenario" ;;
		esac
		;;
	SKIP) SKIPPED=$((SKIPPED + 1)) ;;
	esac
	printf '%s %s %s -> %s: %s\n' "$result" "$scenario" "$source" "$destination" "$detail"
}

print_summary() {
	local counts="$PASSED passed, $FAILED failed, $SKIPPED skipped"
	if ((FAILED > 0)); then
		printf 'summary: %s; the network check failed (%s)\n' "$counts" "$FAILED_SCENARIOS"
	else
		printf 'summary: %s; the network check passed\n' "$counts"
	fi
}

# --- Probes ---------------------------------------------------------------------------------------------
# Each probe sets OUTCOME to one word and DETAIL to what happened. OUTCOME "no-reply" is the only
# inconclusive outcome. Every other outcome is a response, and retrying after a response could hide a fault.

PING_TIMEOUT=2
ATTEMPTS=3

# ping_once DESTINATION PAYLOAD_BYTES DONT_FRAGMENT(yes|no)
ping_once() {
	local destination=$1 size=$2 dont_fragment=$3 output status line
	local -a options=(-n -c 1 -W "$PING_TIMEOUT" -s "$size")
	[[ $dont_fragment == yes ]] && options+=(-M "do")
	output=$(ping "${options[@]}" "$destination" 2>&1)
	status=$?
	if [[ $output == *" bytes from "* ]]; then
		OUTCOME=reply
		line=$(grep -m 1 -o 'time=[0-9.]* *ms' <<<"$output")
		DETAIL="reply${line:+ in ${line#time=}}"
	elif [[ $output == *"Frag needed"* ]]; then
		OUTCOME=frag-needed
		line=$(grep -m 1 'Frag needed' <<<"$output")
		DETAIL="ICMP fragmentation needed: ${line}"
	elif [[ $output == *"message too long"* ]]; then
		# iputils prints "local error: message too long, mtu=N", N being the sender's MTU for that route.
		OUTCOME=too-big
		line=$(grep -m 1 'message too long' <<<"$output")
		LOCAL_MTU=$(grep -m 1 -o 'mtu *= *[0-9]*' <<<"$line" | tr -dc '0-9')
		DETAIL="rejected by the sending pod's kernel: ${line#ping: }"
	elif [[ $output == *"From "* ]]; then
		OUTCOME=error
		line=$(grep -m 1 '^From ' <<<"$output")
		DETAIL="ICMP error: ${line}"
	elif ((status == 1)); then
		OUTCOME=no-reply
		DETAIL="no reply within ${PING_TIMEOUT} s"
	else
		OUTCOME=error
		line=$(grep -m 1 -v '^$' <<<"$output")
		DETAIL="ping failed (exit status $status): ${line}"
	fi
}

# Print the name of the interface that carries the default route, eth0 when the routing table has none.
# /proc/net/route lists the routes of the reading process's network namespace, so this needs no `ip`.
default_interface() {
	local interface
	interface=$(awk '$2 == "00000000" { print $1; exit }' /proc/net/route 2>/dev/null)
	printf '%s\n' "${interface:-eth0}"
}

# Seconds since the script started by which every probe must end, or empty for no limit. The Job's own
# deadline kills the pod without a summary, so the script stops probing before it.
BUDGET_END=""

# within_budget SECONDS: succeed when a probe that may take SECONDS still ends within the budget.
within_budget() {
	[[ -z $BUDGET_END ]] || ((SECONDS + $1 <= BUDGET_END))
}

not_probed() {
	printf 'not probed: the time budget of %s s (--deadline) was spent on the probes above' "$BUDGET_END"
}

# ping_probe DESTINATION PAYLOAD_BYTES DONT_FRAGMENT: ping_once, retried while there is no reply at all.
ping_probe() {
	local attempt
	for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
		ping_once "$@"
		[[ $OUTCOME == no-reply ]] || return 0
	done
	DETAIL="no reply to $ATTEMPTS attempts, ${PING_TIMEOUT} s each"
}

# dns_probe NAME: resolve NAME through the resolver and search list of /etc/resolv.conf, as pods do.
dns_probe() {
	local name=$1 output status attempt
	for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
		output=$(dig +search +tries=1 +time="$PING_TIMEOUT" "$name" A 2>&1)
		status=$?
		if ((status == 9)); then
			OUTCOME=no-reply
			DETAIL="no answer from the resolver to $ATTEMPTS attempts, ${PING_TIMEOUT} s each"
			continue
		fi
		if ((status != 0)); then
			OUTCOME=error
			DETAIL="dig failed (exit status $status): $(grep -m 1 -v '^$' <<<"$output")"
			return 0
		fi
		DNS_STATUS=$(grep -m 1 -o 'status: [A-Z]*' <<<"$output")
		DNS_STATUS=${DNS_STATUS#status: }
		DNS_ADDRESSES=$(awk '/^;; ANSWER SECTION:/ { answers = 1; next } /^$/ { answers = 0 } answers && $4 == "A" { print $5 }' <<<"$output" | sort | tr '\n' ' ')
		DNS_ADDRESSES=${DNS_ADDRESSES% }
		DNS_SERVER=$(grep -m 1 -o 'SERVER: [^ ]*' <<<"$output")
		DNS_SERVER=${DNS_SERVER#SERVER: }
		DNS_SERVER="resolver ${DNS_SERVER%%#*}"
		OUTCOME=answer
		return 0
	done
}

# tcp_probe HOST PORT
tcp_probe() {
	local host=$1 port=$2 attempt status error_file
	error_file=$(mktemp)
	for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
		# shellcheck disable=SC2016 # $1 and $2 expand in the child shell, from the arguments after the script.
		run_with_deadline "$PING_TIMEOUT" bash -c 'exec 3<>"/dev/tcp/$1/$2"' tcp_probe "$host" "$port" 2>"$error_file"
		status=$?
		if ((status == 0)); then
			OUTCOME=connected
			DETAIL="TCP connection established"
			break
		elif ((status == 124)); then
			OUTCOME=no-reply
			DETAIL="no answer to $ATTEMPTS TCP connection attempts, ${PING_TIMEOUT} s each"
		else
			OUTCOME=error
			DETAIL="TCP connection failed: $(sed -n 's/.*connect: //p' "$error_file" | head -n 1)"
			break
		fi
	done
	rm -f "$error_file"
}

# --- Scenarios ------------------------------------------------------------------------------------------

usage_scenarios() {
	cat <<'EOF'
usage: netcheck.sh scenarios --self-name NAME --self-node NODE --self-ip IP --pods FILE --pool CIDR
                             --mtu BYTES --service HOST:PORT [--dns-name NAME] [--expect-pods N]
                             [--expect-nodes N] [--timeout SECONDS] [--attempts N]
  --pods FILE      one pingtest pod per line: "name node ip"
  --pool CIDR      calico:podCidr; every pod IP must lie inside it
  --mtu BYTES      the pod MTU; a don't-fragment ping of BYTES-28 must pass to a pod on another node
  --service H:P    the API server's ClusterIP and port; `dns` expects --dns-name to resolve to H
  --dns-name NAME  name to resolve through the pod's resolver (default kubernetes.default.svc)
  --expect-pods N  number of pingtest pods expected; fewer is a failure (default: no expectation)
  --expect-nodes N number of nodes in the cluster (calico:nodes); above 1, the other-node scenarios fail
                   instead of being skipped when no pingtest pod runs on another node (default 1)
  --timeout S      seconds to wait for each reply (default 2)
  --attempts N     attempts when there is no reply at all (default 3)
  --deadline S     seconds since the script started after which no probe starts that could end later;
                   the targets left over fail as not probed, so the summary is always printed (default: none)
EOF
}

run_scenarios() {
	local self_name="" self_node="" self_ip="" pods_file="" pool="" mtu="" service="" dns_name="kubernetes.default.svc"
	local expect_pods="" expect_nodes=1
	while (($# > 0)); do
		case $1 in
		--self-name) self_name=${2-} ;;
		--self-node) self_node=${2-} ;;
		--self-ip) self_ip=${2-} ;;
		--pods) pods_file=${2-} ;;
		--pool) pool=${2-} ;;
		--mtu) mtu=${2-} ;;
		--service) service=${2-} ;;
		--dns-name) dns_name=${2-} ;;
		--expect-pods) expect_pods=${2-} ;;
		--expect-nodes) expect_nodes=${2-} ;;
		--deadline) BUDGET_END=${2-} ;;
		--timeout) PING_TIMEOUT=${2-} ;;
		--attempts) ATTEMPTS=${2-} ;;
		-h | --help)
			usage_scenarios
			exit 0
			;;
		*)
			usage_scenarios >&2
			die "unknown option: $1"
			;;
		esac
		(($# >= 2)) || die "option $1 needs a value"
		shift 2
	done

	local missing=""
	[[ -n $self_name ]] || missing+=" --self-name"
	[[ -n $self_node ]] || missing+=" --self-node"
	[[ -n $self_ip ]] || missing+=" --self-ip"
	[[ -n $pods_file ]] || missing+=" --pods"
	[[ -n $pool ]] || missing+=" --pool"
	[[ -n $mtu ]] || missing+=" --mtu"
	[[ -n $service ]] || missing+=" --service"
	[[ -z $missing ]] || die "missing option(s):$missing"
	[[ -r $pods_file ]] || die "--pods $pods_file: file not found or not readable"
	if ! [[ $pool =~ ^[0-9.]+/[0-9]+$ ]] || ! is_ipv4 "${pool%/*}" || ((${pool#*/} > 32)); then
		die "--pool $pool is not an IPv4 CIDR"
	fi
	if ! [[ $mtu =~ ^[0-9]+$ ]] || ((mtu < 68)); then
		die "--mtu $mtu is not a valid MTU in bytes"
	fi
	if ! [[ $service =~ ^[0-9.]+:[0-9]+$ ]] || ! is_ipv4 "${service%:*}"; then
		die "--service $service is not IPv4-address:port"
	fi
	[[ $PING_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout $PING_TIMEOUT is not a whole number of seconds"
	[[ $ATTEMPTS =~ ^[1-9][0-9]*$ ]] || die "--attempts $ATTEMPTS is not a positive whole number"
	[[ $expect_nodes =~ ^[1-9][0-9]*$ ]] || die "--expect-nodes $expect_nodes is not a positive whole number"
	[[ -z $BUDGET_END || $BUDGET_END =~ ^[1-9][0-9]*$ ]] || die "--deadline $BUDGET_END is not a whole number of seconds"
	require_tools ping dig awk grep sed sort

	local -a names=() nodes=() addresses=()
	local name node address
	while read -r name node address _; do
		[[ -z $name || $name == \#* ]] && continue
		[[ -n $address ]] || die "--pods $pods_file: line for $name lacks the node or the IP (expected \"name node ip\")"
		names+=("$name")
		nodes+=("$node")
		addresses+=("$address")
	done <"$pods_file"

	local self="$self_name ($self_node, $self_ip)"
	local count=${#names[@]} index
	local -a same_node=() other_node=()
	for ((index = 0; index < count; index++)); do
		if [[ ${nodes[index]} == "$self_node" ]]; then
			same_node+=("$index")
		else
			other_node+=("$index")
		fi
	done
	local node_list
	node_list=$(printf '%s\n' "${nodes[@]}" | sort -u | tr '\n' ' ')
	printf 'info: source %s; %d pingtest pod(s) on node(s) %s; pool %s; pod MTU %s; API server %s\n' \
		"$self" "$count" "${node_list% }" "$pool" "$mtu" "$service"

	if [[ -n $expect_pods ]] && ((count < expect_pods)); then
		report FAIL pingtest-pods "$self" "pods labelled app=pingtest" \
			"expected $expect_pods running pingtest pods with an IP, found $count"
	fi

	local pod
	describe_pod() { pod="${names[$1]} (${nodes[$1]}, ${addresses[$1]})"; }

	# pod-ip-in-pool: the source pod and every pingtest pod got its address from the Calico pool.
	check_in_pool() {
		local who=$1 address=$2 node=$3
		if ! is_ipv4 "$address"; then
			report FAIL pod-ip-in-pool "$who" "pool $pool" "expected an IPv4 address inside $pool, got '$address'"
		elif ipv4_in_cidr "$address" "$pool"; then
			report PASS pod-ip-in-pool "$who" "pool $pool" "$address is inside $pool"
		else
			report FAIL pod-ip-in-pool "$who" "pool $pool" \
				"expected an address inside $pool, got $address: another CNI plugin assigned it (look for a config other than Calico's in /etc/cni/net.d on $node)"
		fi
	}
	check_in_pool "$self" "$self_ip" "$self_node"
	for ((index = 0; index < count; index++)); do
		describe_pod "$index"
		check_in_pool "$pod" "${addresses[index]}" "${nodes[index]}"
	done

	# pod-to-pod-same-node and pod-to-pod-other-node: a small ping to every pingtest pod.
	ping_pods() {
		local scenario=$1
		shift
		for index in "$@"; do
			describe_pod "$index"
			if ! within_budget $((ATTEMPTS * PING_TIMEOUT)); then
				report FAIL "$scenario" "$self" "$pod" "$(not_probed)"
				continue
			fi
			ping_probe "${addresses[index]}" 56 no
			if [[ $OUTCOME == reply ]]; then
				report PASS "$scenario" "$self" "$pod" "$DETAIL"
			else
				report FAIL "$scenario" "$self" "$pod" "expected a reply to a 56-byte ping, got $DETAIL"
			fi
		done
	}
	if ((${#same_node[@]} > 0)); then
		ping_pods pod-to-pod-same-node "${same_node[@]}"
	else
		report SKIP pod-to-pod-same-node "$self" "(none)" "no pingtest pod runs on $self_node, the source's node"
	fi
	# Without a pingtest pod on another node nothing crosses the overlay. That is only a skip on a
	# one-node cluster; with more nodes the check must not pass without testing the overlay.
	local one_node_reason one_node_result=SKIP
	if ((count == 0)); then
		one_node_reason="no pingtest pod was found"
	else
		one_node_reason="every pingtest pod runs on $self_node, the source's node (a one-node cluster, or the pods are not spread); another node is needed"
	fi
	if ((expect_nodes > 1)); then
		one_node_result=FAIL
		if ((count == 0)); then
			one_node_reason="calico:nodes lists $expect_nodes nodes but no pingtest pod was found, so no packet crossed the overlay"
		else
			one_node_reason="calico:nodes lists $expect_nodes nodes but every pingtest pod runs on $self_node, so no packet crossed the overlay. Check that every node joined the cluster and is Ready (kubectl get nodes), and that calico:pingtest.replicas is at least 2."
		fi
	fi
	if ((${#other_node[@]} > 0)); then
		ping_pods pod-to-pod-other-node "${other_node[@]}"
	else
		report "$one_node_result" pod-to-pod-other-node "$self" "(none)" "$one_node_reason"
	fi

	# pod-mtu: the check pod's own interface has the pod MTU. The MTU probes below measure the path from
	# this interface, so they mean nothing when it differs.
	local interface own_mtu
	interface=$(default_interface)
	own_mtu=$(cat "/sys/class/net/$interface/mtu" 2>/dev/null)
	if ! [[ $own_mtu =~ ^[0-9]+$ ]]; then
		report FAIL pod-mtu "$self" "interface $interface" \
			"expected to read the MTU of $interface from /sys/class/net/$interface/mtu, got '${own_mtu}'"
	elif ((own_mtu == mtu)); then
		report PASS pod-mtu "$self" "interface $interface" "MTU $own_mtu is the pod MTU"
	else
		report FAIL pod-mtu "$self" "interface $interface" \
			"expected MTU $mtu (calico:mtu), got $own_mtu. A pod keeps the MTU it was created with, so this pod was created before calico-node wrote MTU $mtu into the CNI config: wait for the calico-node DaemonSet to finish rolling out, then recreate the pods (for the check, replace its Job)."
	fi

	# path-mtu-other-node: a packet of exactly the pod MTU crosses the overlay, and one byte more is rejected
	# by the sending pod's own kernel, which checks it against its interface MTU.
	local fits=$((mtu - 28)) too_big=$((mtu - 27)) fits_detail hint
	if ((${#other_node[@]} == 0)); then
		report "$one_node_result" path-mtu-other-node "$self" "(none)" "$one_node_reason"
	fi
	for index in "${other_node[@]}"; do
		describe_pod "$index"
		if ! within_budget $(((ATTEMPTS + 1) * PING_TIMEOUT)); then
			report FAIL path-mtu-other-node "$self" "$pod" "$(not_probed)"
			continue
		fi
		LOCAL_MTU=""
		ping_probe "${addresses[index]}" "$fits" yes
		if [[ $OUTCOME != reply ]]; then
			hint=""
			if [[ $own_mtu != "$mtu" ]]; then
				hint=" The check pod's interface MTU is $own_mtu, not $mtu (see pod-mtu)."
			elif [[ $OUTCOME == too-big || $OUTCOME == frag-needed || $OUTCOME == no-reply ]]; then
				hint=" The overlay carries less than the pod MTU, so lower calico:mtu or raise the nodes' MTU."
			fi
			report FAIL path-mtu-other-node "$self" "$pod" \
				"expected a reply to a ${fits}-byte don't-fragment ping (a ${mtu}-byte packet, the pod MTU), got ${DETAIL}.${hint}"
			continue
		fi
		fits_detail=$DETAIL
		LOCAL_MTU=""
		ping_once "${addresses[index]}" "$too_big" yes
		if [[ $OUTCOME == too-big && $LOCAL_MTU == "$mtu" ]]; then
			report PASS path-mtu-other-node "$self" "$pod" \
				"${fits}-byte don't-fragment ping: $fits_detail; ${too_big}-byte: $DETAIL"
		elif [[ $OUTCOME == reply ]]; then
			report FAIL path-mtu-other-node "$self" "$pod" \
				"expected a ${too_big}-byte don't-fragment ping (one byte over the pod MTU $mtu) to be rejected by the sending pod's kernel, got a reply: the source pod's interface MTU is larger than $mtu"
		else
			report FAIL path-mtu-other-node "$self" "$pod" \
				"expected a ${too_big}-byte don't-fragment ping (one byte over the pod MTU $mtu) to be rejected by the sending pod's kernel with \"message too long, mtu=$mtu\", got $DETAIL"
		fi
	done

	# dns: the cluster DNS resolves the API server's name to its ClusterIP.
	local service_host=${service%:*} service_port=${service##*:}
	OUTCOME=not-probed
	within_budget $((ATTEMPTS * PING_TIMEOUT)) && dns_probe "$dns_name"
	if [[ $OUTCOME == not-probed ]]; then
		report FAIL dns "$self" "resolver for $dns_name" "$(not_probed)"
	elif [[ $OUTCOME != answer ]]; then
		report FAIL dns "$self" "resolver for $dns_name" "expected the address $service_host, got $DETAIL"
	elif [[ $DNS_STATUS != NOERROR ]]; then
		report FAIL dns "$self" "$DNS_SERVER" "expected $dns_name to resolve to $service_host, got status $DNS_STATUS"
	elif [[ " $DNS_ADDRESSES " == *" $service_host "* ]]; then
		report PASS dns "$self" "$DNS_SERVER" "$dns_name resolves to $service_host"
	else
		report FAIL dns "$self" "$DNS_SERVER" \
			"expected $dns_name to resolve to $service_host, got ${DNS_ADDRESSES:-no A record}"
	fi

	# pod-to-service: a TCP connection to the API server through its ClusterIP.
	OUTCOME=not-probed
	within_budget $((ATTEMPTS * PING_TIMEOUT)) && tcp_probe "$service_host" "$service_port"
	if [[ $OUTCOME == not-probed ]]; then
		report FAIL pod-to-service "$self" "API server $service" "$(not_probed)"
	elif [[ $OUTCOME == connected ]]; then
		report PASS pod-to-service "$self" "API server $service" "$DETAIL"
	else
		report FAIL pod-to-service "$self" "API server $service" "expected a TCP connection, got $DETAIL"
	fi

	print_summary
	((FAILED == 0)) || exit "$EXIT_FAILED"
	exit 0
}

# --- Cluster mode: discover the pingtest pods, then run the scenarios -------------------------------------

# Print one "name node ip" line per running, not terminating pod of a PodList read from stdin.
pods_from_json() {
	require_tools jq
	jq -r '.items[]
		| select(.status.phase == "Running" and .metadata.deletionTimestamp == null and (.status.podIP // "") != "")
		| "\(.metadata.name) \(.spec.nodeName) \(.status.podIP)"'
}

run_cluster() {
	local namespace=default selector=app=pingtest expect_pods=1 discovery_timeout=120
	local account=/var/run/secrets/kubernetes.io/serviceaccount
	local -a passthrough=()
	while (($# > 0)); do
		case $1 in
		--namespace) namespace=${2-} ;;
		--service-account) account=${2-} ;;
		--selector) selector=${2-} ;;
		--expect-pods) expect_pods=${2-} ;;
		--discovery-timeout) discovery_timeout=${2-} ;;
		*) passthrough+=("$1" "${2-}") ;;
		esac
		shift 2 || die "option $1 needs a value"
	done
	require_tools curl jq
	[[ -r $account/token ]] || die "no service account token in $account. The check pod needs automountServiceAccountToken."
	: "${KUBERNETES_SERVICE_HOST:?the pod has no KUBERNETES_SERVICE_HOST}"
	: "${KUBERNETES_SERVICE_PORT:?the pod has no KUBERNETES_SERVICE_PORT}"
	: "${NETCHECK_POD_NAME:?set NETCHECK_POD_NAME from metadata.name}"
	: "${NETCHECK_NODE_NAME:?set NETCHECK_NODE_NAME from spec.nodeName}"
	: "${NETCHECK_POD_IP:?set NETCHECK_POD_IP from status.podIP}"

	local pods_file url deadline found=0 listing status
	pods_file=$(mktemp)
	url="https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}/api/v1/namespaces/${namespace}/pods?labelSelector=${selector/=/%3D}"
	deadline=$((SECONDS + discovery_timeout))
	# The Deployment may still be replacing pods after a settings change, so wait for the expected count.
	while :; do
		# The status code goes on a last line of its own, so a definite rejection is distinguished from an outage.
		if listing=$(curl -sS --max-time 10 --cacert "$account/ca.crt" -w '\n%{http_code}' \
			-H "Authorization: Bearer $(cat "$account/token")" "$url" 2>&1); then
			status=${listing##*$'\n'}
			listing=${listing%$'\n'*}
		else
			status=""
		fi
		case $status in
		200)
			pods_from_json <<<"$listing" >"$pods_file"
			found=$(grep -c . "$pods_file")
			;;
		401 | 403 | 404)
			# Retrying cannot help: the token, the RBAC objects or the namespace are wrong.
			die "listing pods in namespace $namespace failed with HTTP $status: $(head -c 300 <<<"$listing"). Check that the ServiceAccount $namespace/netcheck exists and that the Role $namespace/netcheck (get and list pods) and the RoleBinding $namespace/netcheck bind it; pulumi up creates all three."
			;;
		*) printf 'info: listing pods failed, retrying: %s\n' "${status:+HTTP $status: }$listing" ;;
		esac
		((found >= expect_pods || SECONDS >= deadline)) && break
		sleep 3
	done
	if ((found < expect_pods)); then
		printf 'info: after %d s, %d of %d pingtest pods are running with an IP\n' "$discovery_timeout" "$found" "$expect_pods"
	fi
	run_scenarios --self-name "$NETCHECK_POD_NAME" --self-node "$NETCHECK_NODE_NAME" --self-ip "$NETCHECK_POD_IP" \
		--pods "$pods_file" --expect-pods "$expect_pods" \
		--service "${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}" "${passthrough[@]}"
}

# --- Await mode: on a control-plane node, wait for the check Job and print its report ----------------------

run_await() {
	local namespace=default job="" timeout=660 interval=5 kubeconfig=/etc/kubernetes/admin.conf request_timeout=20
	while (($# > 0)); do
		case $1 in
		--namespace) namespace=${2-} ;;
		--job) job=${2-} ;;
		--timeout) timeout=${2-} ;;
		--interval) interval=${2-} ;;
		--kubeconfig) kubeconfig=${2-} ;;
		--request-timeout) request_timeout=${2-} ;;
		*) die "unknown option: $1" ;;
		esac
		shift 2 || die "option $1 needs a value"
	done
	[[ -n $job ]] || die "missing option --job"
	[[ $timeout =~ ^[1-9][0-9]*$ ]] || die "--timeout $timeout is not a positive whole number of seconds"
	[[ $request_timeout =~ ^[1-9][0-9]*$ ]] ||
		die "--request-timeout $request_timeout is not a positive whole number of seconds"
	local requirement="calico:nodes[0] must be a control-plane node with kubectl and $kubeconfig"
	command -v kubectl >/dev/null 2>&1 || die "kubectl not found on ${HOSTNAME:-this node}. $requirement."
	[[ -r $kubeconfig ]] || die "$kubeconfig is missing or not readable on ${HOSTNAME:-this node}. $requirement."

	local -a kubectl=(kubectl_bounded --kubeconfig "$kubeconfig" --namespace "$namespace")
	local deadline=$((SECONDS + timeout)) state succeeded failed last_error=""
	# Every kubectl call ends by this time, so a stalled API server delays the end by one request timeout
	# at most (and a second of rounding per call made after it).
	AWAIT_HARD_DEADLINE=$((deadline + request_timeout))
	AWAIT_REQUEST_TIMEOUT=$request_timeout
	while :; do
		# A slash, not a blank, separates the counts: `read` drops a leading blank, so " 1" (failed) would
		# read as succeeded=1.
		if state=$("${kubectl[@]}" get job "$job" -o 'jsonpath={.status.succeeded}/{.status.failed}' 2>&1 </dev/null) &&
			[[ $state =~ ^([0-9]*)/([0-9]*)$ ]]; then
			succeeded=${BASH_REMATCH[1]:-0}
			failed=${BASH_REMATCH[2]:-0}
			if ((succeeded > 0 || failed > 0)); then
				break
			fi
		else
			last_error=$state
		fi
		check_pod_start "${kubectl[@]}"
		if ((SECONDS >= deadline)); then
			printf 'the network check Job %s/%s did not finish within %d s.\n' "$namespace" "$job" "$timeout"
			[[ -z $last_error ]] || printf 'kubectl: %s\n' "$last_error"
			[[ -z $LAST_WAITING ]] || printf 'last waiting reason of the check pod: %s\n' "$LAST_WAITING"
			describe_job_pods "${kubectl[@]}"
			exit "$EXIT_FAILED"
		fi
		sleep "$interval"
	done

	local log
	log=$("${kubectl[@]}" logs "job/$job" 2>&1 </dev/null) || log="(no log: $log)"
	printf '%s\n' "$log"
	if ((succeeded > 0 && failed == 0)) && grep -q '^summary: .*the network check passed$' <<<"$log"; then
		exit 0
	fi
	if ! grep -q '^summary: ' <<<"$log"; then
		printf 'the network check Job %s/%s failed before it reported a summary.\n' "$namespace" "$job"
		"${kubectl[@]}" get job "$job" \
			-o 'jsonpath={range .status.conditions[*]}Job condition {.type}: {.reason}: {.message}{"\n"}{end}' </dev/null 2>&1
		describe_job_pods "${kubectl[@]}"
	fi
	exit "$EXIT_FAILED"
}

LAST_WAITING=""

# check_pod_start KUBECTL...: exit at once when the check pod's container cannot start, since the kubelet
# retries these errors until the Job's deadline. Other waiting reasons go to LAST_WAITING for the timeout
# message.
check_pod_start() {
	local statuses reason image message
	statuses=$("$@" get pods --selector "job-name=$job" \
		-o 'jsonpath={range .items[*].status.containerStatuses[*]}{.state.waiting.reason} {.image} {.state.waiting.message}{"\n"}{end}' \
		</dev/null 2>/dev/null) || return 0
	while read -r reason image message; do
		case $reason in
		ErrImagePull | ImagePullBackOff | InvalidImageName | CreateContainerConfigError)
			printf 'the check pod cannot start: %s for image %s: %s\n' "$reason" "$image" "$message"
			if [[ $reason == CreateContainerConfigError ]]; then
				printf 'The container of calico:pingtest.checkImage (%s) refers to a ConfigMap, Secret or setting the node cannot provide; the message above names it.\n' "$image"
			else
				printf 'Set calico:pingtest.checkImage to an image every node can pull (now %s), or make the registry reachable from the nodes.\n' "$image"
			fi
			describe_job_pods "$@"
			exit "$EXIT_FAILED"
			;;
		"") ;;
		*) LAST_WAITING="$reason ($image)${message:+: $message}" ;;
		esac
	done <<<"$statuses"
}

# Run kubectl with a request timeout that ends by AWAIT_HARD_DEADLINE, one second at least.
kubectl_bounded() {
	local seconds=$((AWAIT_HARD_DEADLINE - SECONDS))
	((seconds > AWAIT_REQUEST_TIMEOUT)) && seconds=$AWAIT_REQUEST_TIMEOUT
	((seconds < 1)) && seconds=1
	kubectl --request-timeout="${seconds}s" "$@"
}

describe_job_pods() {
	"$@" get pods --selector "job-name=$job" -o wide </dev/null 2>&1
	"$@" get pods --selector "job-name=$job" \
		-o 'jsonpath={range .items[*].status.containerStatuses[*]}container {.name}: {.state.waiting.reason} {.state.waiting.message}{"\n"}{end}' </dev/null 2>&1
}

main() {
	local command=${1-}
	(($# > 0)) && shift
	case $command in
	scenarios) run_scenarios "$@" ;;
	cluster) run_cluster "$@" ;;
	pods-from-json) pods_from_json ;;
	await) run_await "$@" ;;
	*)
		printf 'usage: netcheck.sh scenarios|cluster|pods-from-json|await [options]\n' >&2
		exit "$EXIT_SETUP"
		;;
	esac
}

main "$@"
