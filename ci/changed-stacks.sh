#!/usr/bin/env bash
# Print, as a JSON array, the stacks that a change between two commits affects:
#   - every stack whose Pulumi.<stack>.yaml changed and still exists at HEAD_REV;
#   - the stacks in $DEFAULT_STACKS (space-separated) when anything other than a stack file, a Markdown
#     file or a file under docs/ changed, because a change to the program can alter every stack.
# Usage: ci/changed-stacks.sh BASE_REV HEAD_REV   (run inside the repository)
# BASE_REV may also be a tree. With the empty tree ($(git hash-object -t tree /dev/null)), every stack counts
# as changed.
# Exit status: 0 with the array on stdout (possibly []), 1 on a bad revision or a bad stack name.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BASE_REV HEAD_REV" >&2
  exit 1
fi
base_rev=$1
head_rev=$2

for rev in "$base_rev" "$head_rev"; do
  if ! git rev-parse --verify --quiet "${rev}^{tree}" >/dev/null; then
    echo "error: revision '${rev}' is not in this clone; fetch it first (actions/checkout: fetch-depth)" >&2
    exit 1
  fi
done

# Pulumi allows letters, digits, '-', '_' and '.' in a stack name.
stack_file_pattern='^Pulumi\.([A-Za-z0-9_.-]+)\.yaml$'
stack_name_pattern='^[A-Za-z0-9_.-]+$'

declare -A stacks=()
program_changed=false

while IFS= read -r path; do
  if [[ $path =~ $stack_file_pattern ]]; then
    # A deleted stack file has nothing left to preview or update.
    if git cat-file -e "${head_rev}:${path}" 2>/dev/null; then
      stacks[${BASH_REMATCH[1]}]=1
    fi
  elif [[ $path != docs/* && $path != *.md ]]; then
    program_changed=true
  fi
done < <(git diff --name-only --no-renames "$base_rev" "$head_rev")

if [[ $program_changed == true ]]; then
  for stack in ${DEFAULT_STACKS:-}; do
    if [[ ! $stack =~ $stack_name_pattern ]]; then
      echo "error: invalid stack name '${stack}' in the default stacks; use letters, digits, '-', '_' and '.'" >&2
      exit 1
    fi
    if ! git cat-file -e "${head_rev}:Pulumi.${stack}.yaml" 2>/dev/null; then
      echo "error: default stack '${stack}' has no Pulumi.${stack}.yaml at ${head_rev}; create it or fix the variable" >&2
      exit 1
    fi
    stacks[$stack]=1
  done
fi

json="["
separator=""
while IFS= read -r stack; do
  [[ -n $stack ]] || continue
  json+="${separator}\"${stack}\""
  separator=","
done < <(printf '%s\n' "${!stacks[@]}" | sort)
echo "${json}]"
