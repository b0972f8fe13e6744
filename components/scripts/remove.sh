# shellcheck shell=sh
# Undo one calicoctl install on this node (`pulumi destroy`, or the old install after a replacement).
# It removes only what the install record lists as put here by this install, and only while that is unchanged:
# the binary when its sha256 is the recorded one and its record line carries this install's INSTALL_ID.
# It moves back the calicoctl the node had before, when an install kept one aside. Once no install of
# this program is left on the node, it removes the datastore config it wrote, the record and the
# directory it created.
#
# components/nodes.py prepends: NODE_NAME, INSTALL_DIR, INSTALL_ID, CALICOCTL_CONFIG, INSTALL_RECORD.

set -u
LC_ALL=C
export LC_ALL

define_as_root " to remove calicoctl"

sha256_of() {
    sha256sum "$1" | awk '{ print $1 }'
}

# Move back the calicoctl that the first install of $target found there and kept aside, and drop its
# backup line from the record. It stays aside when $target exists again, so nothing gets overwritten.
restore_backup() {
    kept=""
    while read -r kind original backup_path; do
        if [ "$kind" = backup ] && [ "$(canonical_file "$original")" = "$(canonical_file "$target")" ]; then
            kept=$backup_path
        fi
    done <<RECORD
$record
RECORD
    [ -n "$kept" ] || return 0
    if [ -e "$target" ] || [ -L "$target" ]; then
        say "left $kept, the calicoctl this node had before this program installed one, because $target exists; move it back yourself to use it again."
    elif [ -e "$kept" ] || [ -L "$kept" ]; then
        as_root mv "$kept" "$target" || die "could not move $kept back to $target on $NODE_NAME; the record still lists it."
        say "restored $target from $kept, the calicoctl this node had before this program installed one."
    else
        say "$kept, the calicoctl this node had before this program installed one, is gone; nothing to restore."
    fi
    record=$(printf '%s\n' "$record" | awk -v path="$kept" '!($1 == "backup" && $3 == path) && NF > 0')
}

if [ ! -f "$INSTALL_RECORD" ]; then
    say "no install record at $INSTALL_RECORD, so nothing of this install is left to remove."
    exit 0
fi
record=$(cat "$INSTALL_RECORD")

# The record line of this install names the binary as the install wrote it, with links resolved.
own_line=$(printf '%s\n' "$record" | awk -v id="$INSTALL_ID" '$1 == "binary" && $3 == id { print $2, $4; exit }')
if [ -z "$own_line" ]; then
    say "$INSTALL_DIR/calicoctl was installed by another install of this program (a newer version, architecture or spelling of the directory), or by none; left as it is."
else
    target=${own_line% *}
    recorded_sha=${own_line##* }
    record=$(printf '%s\n' "$record" | awk -v id="$INSTALL_ID" '!($1 == "binary" && $3 == id) && NF > 0')
    # A line of another install for the same file, under another spelling of its directory, means that
    # install put the file there since.
    claimed=no
    while read -r kind path rest; do
        if [ "$kind" = binary ] && [ "$(canonical_file "$path")" = "$(canonical_file "$target")" ]; then
            claimed=yes
        fi
    done <<RECORD
$record
RECORD
    if [ "$claimed" = yes ]; then
        say "$target belongs to another install of this program now; left as it is."
    elif [ -f "$target" ] && [ "$(sha256_of "$target")" = "$recorded_sha" ]; then
        as_root rm -f "$target"
        say "removed $target."
    elif [ -e "$target" ]; then
        say "$target changed after the install (its sha256 is no longer $recorded_sha); left as it is."
    fi
    [ "$claimed" = yes ] || restore_backup
fi

if printf '%s\n' "$record" | grep -q '^binary '; then
    # mktemp picks an unused name and creates the file, so the copy never lands on a link someone put there.
    staged_record=$(as_root mktemp "$INSTALL_RECORD.XXXXXX") ||
        die "could not create a temporary file next to $INSTALL_RECORD on $NODE_NAME; the record still lists this install."
    trap 'as_root rm -f "$staged_record"' EXIT
    if ! printf '%s\n' "$record" | as_root tee "$staged_record" >/dev/null || ! as_root chmod 0644 "$staged_record" ||
        ! as_root mv -f "$staged_record" "$INSTALL_RECORD"; then
        die "could not rewrite the install record $INSTALL_RECORD on $NODE_NAME; it still lists this install."
    fi
    say "another calicoctl install of this program remains on $NODE_NAME, so $CALICOCTL_CONFIG stays."
    exit 0
fi

config_sha=$(printf '%s\n' "$record" | awk -v path="$CALICOCTL_CONFIG" '$1 == "config" && $2 == path { print $3 }')
if [ -n "$config_sha" ] && [ -f "$CALICOCTL_CONFIG" ]; then
    if [ "$(sha256_of "$CALICOCTL_CONFIG")" = "$config_sha" ]; then
        as_root rm -f "$CALICOCTL_CONFIG"
        say "removed $CALICOCTL_CONFIG."
    else
        say "$CALICOCTL_CONFIG changed after the install; left as it is."
    fi
fi
as_root rm -f "$INSTALL_RECORD"
directory=$(printf '%s\n' "$record" | awk '$1 == "directory" { print $2 }')
if [ -n "$directory" ]; then
    # rmdir removes the directory only when it is empty, so files others put there stay.
    if as_root rmdir "$directory" 2>/dev/null; then
        say "removed the directory $directory."
    else
        say "left the directory $directory: it holds other files."
    fi
fi
exit 0
