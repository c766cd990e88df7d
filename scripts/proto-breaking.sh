#!/usr/bin/env bash
# buf breaking: the protos of the working tree against those of the last
# landed commit. The base is, in order: CALLVAULT_PROTO_BASE if set; the
# commit named in proto/LANDED (the last commit of the last landed issue,
# moved forward when an issue lands); the merge-base with origin/main (a
# clone); the merge-base with a local main branch (a repository without a
# remote); HEAD~ when none exists. A base
# without proto/buf.yaml (the history does not reach one) is skipped with a
# message, never silently.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=${BUF:-buf}

base=${CALLVAULT_PROTO_BASE:-}
if [[ -z "$base" && -s proto/LANDED ]]; then
	base=$(git rev-parse -q --verify "$(tr -d '[:space:]' <proto/LANDED)^{commit}" || true)
fi
if [[ -z "$base" ]]; then
	for ref in origin/main main; do
		if git rev-parse -q --verify "$ref^{commit}" >/dev/null; then
			base=$(git merge-base HEAD "$ref" || true)
			[[ -n "$base" ]] && break
		fi
	done
fi
if [[ -z "$base" ]]; then
	base=$(git rev-parse -q --verify 'HEAD~^{commit}' || true)
fi
if [[ -z "$base" ]] || ! git cat-file -e "$base:proto/buf.yaml" 2>/dev/null; then
	if [[ "$(git rev-parse --is-shallow-repository)" == true ]]; then
		echo "proto-breaking: skipped: this is a shallow clone without the base commit; fetch more history (git fetch --unshallow)" >&2
	else
		echo "proto-breaking: skipped: no earlier commit has proto/buf.yaml to compare with" >&2
	fi
	exit 0
fi

# The common git dir is the repository itself, also from a worktree
# (where .git is a file).
repo=$(cd "$(git rev-parse --git-common-dir)" && pwd)
echo "proto-breaking: against $(git log -1 --format='%h %s' "$base")"
cd proto
"$BUF" breaking --against "$repo#format=git,ref=$base,subdir=proto"
echo "proto-breaking: no breaking change"
