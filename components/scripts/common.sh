# shellcheck shell=sh
# Functions shared by preflight.sh, install.sh and remove.sh. components/nodes.py puts this file between
# the settings and each script's body, so every script sent to a node is still one self-contained text.

say() {
    printf '%s: %s\n' "$NODE_NAME" "$1"
}

die() {
    printf 'ERROR: %s: %s\n' "$NODE_NAME" "$1" >&2
    exit 1
}

# Set user to the SSH user and define as_root, which runs its arguments as root: directly for root, else
# through `sudo -n`, which fails at once instead of prompting, so a password prompt cannot hang the run.
# Stop, naming the purpose $1, when neither works.
# shellcheck disable=SC2329 # as_root is called by the script that includes this file
define_as_root() {
    user=$(id -un)
    if [ "$(id -u)" -eq 0 ]; then
        as_root() { "$@"; }
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root() { sudo -n "$@"; }
    else
        die "passwordless sudo required for $user on $NODE_NAME$1. Add a sudoers rule such as '$user ALL=(ALL) NOPASSWD: ALL' in /etc/sudoers.d/, or connect as root (calico:sshUser or calico:nodes[].user)."
    fi
}

# Print why root must not write into directory $1, or nothing when it may. $1 with its symbolic links
# resolved, and every directory above it, must belong to root and be writable by no group and no other
# user: otherwise someone else could replace the files root puts there, or plant links where root writes.
unsafe_directory() {
    real_dir=$(cd -P -- "$1" 2>/dev/null && pwd -P) || {
        printf '%s cannot be entered by %s.' "$1" "$(id -un)"
        return
    }
    checked=$real_dir
    while :; do
        listing=$(ls -ldn -- "$checked" 2>/dev/null) || {
            printf '%s cannot be listed by %s.' "$checked" "$(id -un)"
            return
        }
        mode=$(printf '%s\n' "$listing" | awk '{ print $1 }')
        owner=$(printf '%s\n' "$listing" | awk '{ print $3 }')
        found=""
        if [ "$owner" != 0 ]; then
            found="is owned by uid $owner (mode $mode)"
        else
            # ls prints the mode as drwxrwxrwx: the 6th character is the group's w, the 9th the others'.
            case "$mode" in
                ?????w* | ????????w*) found="has mode $mode" ;;
            esac
        fi
        if [ -n "$found" ]; then
            printf '%s %s, but root writes into %s, so it and every directory above it must be owned by root and writable by no one else. Fix: chown root:root %s && chmod go-w %s' \
                "$checked" "$found" "$real_dir" "$checked" "$checked"
            return
        fi
        [ "$checked" != / ] || return 0
        checked=${checked%/*}
        [ -n "$checked" ] || checked=/
    done
}

# Print file path $1 with the symbolic links of its directory resolved, or $1 itself when that directory
# cannot be entered. Two spellings of one directory (/bin and /usr/bin on a merged-/usr system) then
# give the same path.
canonical_file() {
    if resolved_dir=$(cd -P -- "${1%/*}/" 2>/dev/null && pwd -P); then
        printf '%s/%s\n' "${resolved_dir%/}" "${1##*/}"
    else
        printf '%s\n' "$1"
    fi
}
