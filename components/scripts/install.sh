# shellcheck shell=sh
# Install one calicoctl release on this node, verified by sha256, and give it a Kubernetes-datastore
# config. Running it again with the same settings downloads nothing when the installed binary already
# has the expected sha256. A failed download, verification or write leaves the node as it was. The
# binary, the config and the install record are all staged next to their targets first. They are
# renamed over the targets only after every check passed and every staged file was written.
#
# components/nodes.py prepends these settings as shell assignments:
#   NODE_NAME                  the Kubernetes node name, used in every message
#   CALICOCTL_VERSION, ARCH    the release and the architecture the preflight reported
#   CALICOCTL_URL              where the binary comes from
#   EXPECTED_SHA256            its sha256, or empty to take it from SHA256SUMS_URL
#   CHECKSUM_SOURCE            where EXPECTED_SHA256 comes from, for messages
#   SHA256SUMS_URL             the release's SHA256SUMS, or empty when there is none to use
#   INSTALL_DIR, INSTALL_ID    calico:calicoctlInstallDir and the hash of this install's settings
#   CALICOCTL_CONFIG, KUBECONFIG_PATH, INSTALL_RECORD   fixed paths, see components/nodes.py

set -u
umask 022
LC_ALL=C
export LC_ALL

define_as_root ""

# As root, because the staged binary lies in a directory that only root can enter.
sha256_of() {
    as_root sha256sum "$1" | awk '{ print $1 }'
}

download() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --connect-timeout 20 --max-time 600 --retry 2 -o "$2" "$1"
    elif ! command -v wget >/dev/null 2>&1; then
        die "neither curl nor wget is installed on $NODE_NAME; install one of them: apt-get install curl"
    elif wget --help 2>&1 | grep -q BusyBox; then
        # BusyBox wget takes no -t, and builds without its timeout feature take no -T: BusyBox 1.35 of
        # Debian 12 crashes when given one. So it gets only -q and -O, and `timeout` bounds it instead.
        if command -v timeout >/dev/null 2>&1; then
            timeout 600 wget -q -O "$2" "$1"
        else
            wget -q -O "$2" "$1"
        fi
    else
        wget -q -T 60 -t 3 -O "$2" "$1"
    fi
}

run_limited() {
    if command -v timeout >/dev/null 2>&1; then
        as_root timeout 60 "$@"
    else
        as_root "$@"
    fi
}

# Run `$1 version` and fail unless the client version it reports is calico:version. calicoctl exits
# non-zero when it cannot reach the cluster (before the Calico manifest is applied, or without a
# datastore config), but it prints the client version first, so only that line is judged. The output
# stays in version_output for the caller.
check_client_version() {
    version_output=$(run_limited "$1" version 2>&1)
    reported=$(printf '%s\n' "$version_output" | awk -F: '$1 == "Client Version" { gsub(/[ \t]/, "", $2); print $2; exit }')
    if [ "${reported#v}" != "${CALICOCTL_VERSION#v}" ]; then
        printf '%s\n' "$version_output" | tail -n 5 >&2
        die "$1 reports client version '${reported:-none}', not calico:version = $CALICOCTL_VERSION. The binary from $CALICOCTL_URL is another release: check calico:calicoctlUrl and calico:calicoctlSha256.$ARCH."
    fi
}

# Print the non-blank lines of record $1 except the binary lines of file $2, under any spelling of its path.
record_without_binary() {
    printf '%s\n' "$1" | while read -r kind path rest; do
        [ -n "$kind" ] || continue
        if [ "$kind" = binary ] && [ "$(canonical_file "$path")" = "$2" ]; then
            continue
        fi
        printf '%s %s%s\n' "$kind" "$path" "${rest:+ $rest}"
    done
}

# Copy file $1 to a new file in the directory of $2, named after $2, with mode $3, as root. The new
# file's name goes in staged_copy, and in temporary_files, which the EXIT trap removes. mktemp picks an
# unused name and creates the file, so the copy never lands on a file or link someone else put there.
stage_copy() {
    staged_copy=$(as_root mktemp "$2.XXXXXX") || return 1
    temporary_files="$temporary_files $staged_copy"
    as_root cp "$1" "$staged_copy" && as_root chmod "$3" "$staged_copy"
}

# Put the install record back as it was before this run, after a later step failed.
restore_record() {
    if [ -n "$previous_record" ]; then
        as_root mv -f "$previous_record" "$INSTALL_RECORD"
    else
        as_root rm -f "$INSTALL_RECORD"
    fi
}

# shellcheck disable=SC2329 # the EXIT trap calls it
remove_temporary_files() {
    rm -rf "$work"
    [ -z "$staging_dir" ] || as_root rm -rf "$staging_dir"
    for file in $temporary_files; do
        as_root rm -f "$file"
    done
    # rmdir removes the directory only while it is empty, so only after a failed first install.
    [ -z "$created_record_dir" ] || as_root rmdir "$created_record_dir" 2>/dev/null || true
}

for tool in sha256sum awk mktemp; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed; the calicoctl install needs sha256sum and mktemp (coreutils) and awk."
done

case "$(uname -m)" in
    aarch64 | arm64) machine_arch=arm64 ;;
    x86_64 | amd64) machine_arch=amd64 ;;
    *) machine_arch=$(uname -m) ;;
esac
if [ "$machine_arch" != "$ARCH" ]; then
    die "the preflight reported architecture $ARCH but uname -m now reports $(uname -m); rerun the preflight: pulumi up --replace on this node's preflight resource."
fi

if [ ! -d "$INSTALL_DIR" ]; then
    die "calico:calicoctlInstallDir = $INSTALL_DIR does not exist on $NODE_NAME. Create it, or choose an existing directory: pulumi config set calico:calicoctlInstallDir /usr/local/bin"
fi
# The preflight checked this too, but the directory may have changed since its last run.
unsafe=$(unsafe_directory "$INSTALL_DIR")
[ -z "$unsafe" ] || die "calico:calicoctlInstallDir = $INSTALL_DIR on $NODE_NAME: $unsafe, or choose another directory: pulumi config set calico:calicoctlInstallDir /usr/local/bin"
record_dir=${INSTALL_RECORD%/*}
if [ -d "$record_dir" ]; then
    unsafe=$(unsafe_directory "$record_dir")
    [ -z "$unsafe" ] || die "the directory of the install record $INSTALL_RECORD on $NODE_NAME is unsafe: $unsafe."
fi

work=$(mktemp -d) ||
    die "mktemp -d failed on $NODE_NAME (TMPDIR is '${TMPDIR:-}'), so the download has nowhere to go; nothing was installed. Make TMPDIR, or /tmp when it is unset, a writable directory."
target=$(canonical_file "$INSTALL_DIR/calicoctl")
temporary_files=""
staging_dir=""
created_record_dir=""
trap 'remove_temporary_files' EXIT
trap 'exit 1' HUP INT TERM

record=""
[ ! -f "$INSTALL_RECORD" ] || record=$(cat "$INSTALL_RECORD")
current_sha=""
[ ! -f "$target" ] || current_sha=$(sha256_of "$target")

# --- Whose binary the target is -------------------------------------------------------------------------
# The target is this program's when a binary line of the record names it with its present sha256. Any
# other file there is someone else's: the install moves it to $backup, and the removal of the last
# install that owns the target puts it back.
backup="$target.pre-calico-pulumi"
owned=no
if [ -f "$target" ] && [ ! -L "$target" ]; then
    while read -r kind path _ sha; do
        if [ "$kind" = binary ] && [ "$sha" = "$current_sha" ] && [ "$(canonical_file "$path")" = "$target" ]; then
            owned=yes
        fi
    done <<RECORD
$record
RECORD
fi
foreign=no
if [ "$owned" = no ] && { [ -e "$target" ] || [ -L "$target" ]; }; then
    [ ! -d "$target" ] || die "$target is a directory on $NODE_NAME; move it away or choose another calico:calicoctlInstallDir."
    if [ -e "$backup" ] || [ -L "$backup" ]; then
        die "$target and $backup both exist on $NODE_NAME, and this program did not install $target, so it has no free name to keep $target under. Move one of them away; nothing was changed."
    fi
    foreign=yes
fi

# --- The expected sha256 -------------------------------------------------------------------------------
expected=$EXPECTED_SHA256
source=$CHECKSUM_SOURCE
if [ -z "$expected" ]; then
    recorded_sha=$(printf '%s\n' "$record" | awk -v path="$target" -v id="$INSTALL_ID" '$1 == "binary" && $2 == path && $3 == id { print $4 }')
    if [ -n "$recorded_sha" ] && [ "$recorded_sha" = "$current_sha" ]; then
        # An earlier run of this same install verified the binary against SHA256SUMS and recorded it.
        expected=$recorded_sha
        source="the release's SHA256SUMS, checked by an earlier run"
    elif [ -n "$SHA256SUMS_URL" ]; then
        download "$SHA256SUMS_URL" "$work/SHA256SUMS" || die "could not download $SHA256SUMS_URL on $NODE_NAME."
        expected=$(awk -v file="calicoctl-linux-$ARCH" '{ name = $2; sub(/^\*/, "", name) } name == file { print $1; exit }' "$work/SHA256SUMS")
        [ -n "$expected" ] || die "$SHA256SUMS_URL lists no calicoctl-linux-$ARCH. Set its sha256: pulumi config set --path calico:calicoctlSha256.$ARCH <sha256>"
        say "NOTE: the sha256 of calicoctl-linux-$ARCH comes from the release's own SHA256SUMS ($SHA256SUMS_URL), not from a checksum pinned by this project."
    else
        die "no sha256 is known for calicoctl $CALICOCTL_VERSION linux-$ARCH, so the binary cannot be verified and was not installed. Set it: pulumi config set --path calico:calicoctlSha256.$ARCH <sha256 of calicoctl-linux-$ARCH>"
    fi
fi
expected=$(printf '%s' "$expected" | tr 'A-F' 'a-f')
case "$expected" in
    *[!0-9a-f]*) die "the expected sha256 '$expected' ($source) is not 64 hexadecimal digits." ;;
esac
[ "${#expected}" -eq 64 ] || die "the expected sha256 '$expected' ($source) is not 64 hexadecimal digits."

# --- The binary, verified and staged next to the target -------------------------------------------------
replace_binary=no
if [ "$owned" = no ] || [ "$current_sha" != "$expected" ]; then
    if [ "$current_sha" = "$expected" ]; then
        # Someone else's copy of the same release: it is kept aside like any other, and the download is
        # skipped because a copy of it has the verified content.
        origin="a copy of the identical $target found on the node"
        as_root cat "$target" >"$work/calicoctl" || die "could not read $target on $NODE_NAME; $target is unchanged."
    else
        origin=$CALICOCTL_URL
        download "$CALICOCTL_URL" "$work/calicoctl" ||
            die "could not download $CALICOCTL_URL on $NODE_NAME; check that the node reaches it, or set calico:calicoctlUrl to a mirror it reaches. $target is unchanged."
    fi
    actual=$(sha256_of "$work/calicoctl")
    if [ "$actual" != "$expected" ]; then
        die "sha256 mismatch for $origin on $NODE_NAME: expected $expected ($source), downloaded $actual. Nothing was installed; $target is unchanged."
    fi
    # The staged copy goes in a new directory that only root can enter, so no other user can have put a
    # file or a link at its name.
    staging_dir=$(as_root mktemp -d "${target%/*}/.calicoctl.XXXXXX") ||
        die "could not create a directory in $INSTALL_DIR on $NODE_NAME; is it read-only or full? $target is unchanged."
    staged="$staging_dir/calicoctl"
    if ! as_root cp "$work/calicoctl" "$staged" || ! as_root chmod 0755 "$staged"; then
        die "could not write $staged on $NODE_NAME; is $INSTALL_DIR read-only or full? $target is unchanged."
    fi
    [ "$(sha256_of "$staged")" = "$expected" ] || die "the copy of calicoctl in $INSTALL_DIR does not match its download; is the disk full? $target is unchanged."
    check_client_version "$staged"
    replace_binary=yes
fi

# --- The install record and the datastore config, staged -------------------------------------------------
# `remove` deletes only what this record lists as put here by an install, and only while it is unchanged.
# Everything is staged before anything changes, so a directory that cannot be written fails the install
# while the node is still as it was.
not_written="nothing was installed and $target is unchanged. Check that root can write there and that the file system is neither read-only nor full."
if [ ! -d "$record_dir" ]; then
    as_root mkdir -p "$record_dir" || die "could not create $record_dir on $NODE_NAME; $not_written"
    created_record_dir=$record_dir
    record="directory $record_dir"
fi
record=$(record_without_binary "$record" "$target")
record="${record:+$record
}binary $target $INSTALL_ID $expected"
if [ "$foreign" = yes ]; then
    record="$record
backup $target $backup"
fi

staged_config=""
if [ -e "$KUBECONFIG_PATH" ]; then
    printf 'apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata:\nspec:\n  datastoreType: kubernetes\n  kubeconfig: %s\n' \
        "$KUBECONFIG_PATH" >"$work/calicoctl.cfg"
    config_sha=$(sha256_of "$work/calicoctl.cfg")
    if [ -f "$CALICOCTL_CONFIG" ] && [ "$(sha256_of "$CALICOCTL_CONFIG")" = "$config_sha" ]; then
        say "$CALICOCTL_CONFIG already selects the Kubernetes datastore through $KUBECONFIG_PATH."
    elif [ -e "$CALICOCTL_CONFIG" ]; then
        say "WARNING: left the existing $CALICOCTL_CONFIG unchanged; it differs from the Kubernetes-datastore config this program writes, and calicoctl on $NODE_NAME uses it."
    else
        config_dir=${CALICOCTL_CONFIG%/*}
        [ -d "$config_dir" ] || as_root mkdir -p "$config_dir" || die "could not create $config_dir on $NODE_NAME; $not_written"
        stage_copy "$work/calicoctl.cfg" "$CALICOCTL_CONFIG" 0644 || die "could not write $CALICOCTL_CONFIG on $NODE_NAME; $not_written"
        staged_config=$staged_copy
        record="$record
config $CALICOCTL_CONFIG $config_sha"
    fi
else
    say "NOTE: $KUBECONFIG_PATH does not exist on $NODE_NAME (not a control-plane node), so no datastore config was written and calicoctl here needs one: run calicoctl on a control-plane node, or write a calicoctl config that names a kubeconfig with rights to Calico's resources and pass it with --config."
fi

printf '%s\n' "$record" >"$work/record" || die "could not write $work/record on $NODE_NAME; $not_written"
stage_copy "$work/record" "$INSTALL_RECORD" 0644 || die "could not write the install record $INSTALL_RECORD on $NODE_NAME; $not_written"
staged_record=$staged_copy
previous_record=""
if [ -f "$INSTALL_RECORD" ]; then
    stage_copy "$INSTALL_RECORD" "$INSTALL_RECORD" 0644 || die "could not copy the install record $INSTALL_RECORD on $NODE_NAME; $not_written"
    previous_record=$staged_copy
fi

# --- The changes: the record first, so that it lists everything this install may have put here -----------
as_root mv -f "$staged_record" "$INSTALL_RECORD" || die "could not replace the install record $INSTALL_RECORD on $NODE_NAME; $not_written"
if [ "$foreign" = yes ]; then
    if ! as_root mv "$target" "$backup"; then
        restore_record
        die "could not move $target to $backup on $NODE_NAME; $target is unchanged."
    fi
    say "moved the existing $target, which this program did not install, to $backup; removing this install puts it back."
fi
if [ "$replace_binary" = yes ]; then
    if ! as_root mv -f "$staged" "$target"; then
        [ "$foreign" = no ] || as_root mv "$backup" "$target"
        restore_record
        die "could not rename $staged to $target on $NODE_NAME; $target is unchanged."
    fi
    say "installed calicoctl $CALICOCTL_VERSION ($ARCH) at $target from $origin, sha256 $expected verified against $source."
else
    say "calicoctl $CALICOCTL_VERSION ($ARCH) is already installed at $target with the expected sha256; nothing downloaded."
fi
created_record_dir=""
if [ -n "$staged_config" ]; then
    as_root mv -f "$staged_config" "$CALICOCTL_CONFIG" ||
        die "could not write $CALICOCTL_CONFIG on $NODE_NAME, so calicoctl there has no datastore config; run pulumi up again once root can write it."
    say "wrote $CALICOCTL_CONFIG: the Kubernetes datastore through $KUBECONFIG_PATH."
fi

# --- The installed calicoctl ---------------------------------------------------------------------------
check_client_version "$target"
say "calicoctl version on $NODE_NAME:"
printf '%s\n' "$version_output"
exit 0
