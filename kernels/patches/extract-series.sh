#!/bin/bash
# Write one patch series, as posted to a mailing list, as a folder of
# .patch files that a kernel definition's `build: {patches: NAME}` takes.
#
# usage: extract-series.sh ARCHIVE_GIT COVER_MESSAGE_ID OUT_DIR [--leave-out [K:]PATH]...
#
# ARCHIVE_GIT is a git mirror of a list archive that keeps one message
# per commit in the file `m` (the linux-mailinglist-archives repositories
# on GitHub, e.g. live-patching.vger.kernel.org.0). The series is every
# message that answers the cover letter with a subject "[PATCH ... k/n]",
# k from 1 to n; a missing or doubled k is an error.
#
# --leave-out PATH drops PATH's part from every message, for a series that
# needs porting there: a separate port patch in OUT_DIR redoes it.
# --leave-out K:PATH drops it from patch K only. OUT_DIR/
# SOURCES names every message taken, its archive commit, and what was left
# out, so anyone can check the folder against the archive.
set -euo pipefail

usage() {
	echo "usage: $0 ARCHIVE_GIT COVER_MESSAGE_ID OUT_DIR [--leave-out [K:]PATH]..." >&2
	exit 2
}
[[ $# -ge 3 ]] || usage
archive=$1 cover=$2 out=$3
shift 3
leave_out=()
while [[ $# -gt 0 ]]; do
	[[ $1 == --leave-out && $# -ge 2 ]] || usage
	leave_out+=("$2")
	shift 2
done
cover=${cover#<}
cover=${cover%>}

command -v git >/dev/null || { echo "$0: needs git (package git)" >&2; exit 1; }
git --git-dir="$archive" rev-parse --verify -q HEAD >/dev/null ||
	{ echo "$0: $archive is not a git repository" >&2; exit 1; }

# The unfolded value of header $1 in the message on stdin.
header() {
	awk -v name="$1" '
		/^$/ { exit }
		/^[ \t]/ { if (found == 1) value = value " " substr($0, 2); next }
		{ if (found == 1) found = 2 }
		tolower($0) ~ "^" tolower(name) ":" && !found {
			found = 1; value = substr($0, length(name) + 2)
		}
		END { gsub(/^[ \t]+|[ \t]+$/, "", value); gsub(/[ \t]+/, " ", value); print value }'
}

# The message on stdin without the diff sections of the files in $@.
without_files() {
	awk -v paths="$*" '
		BEGIN { n = split(paths, list, " "); for (i = 1; i <= n; i++) drop["a/" list[i]] = 1 }
		/^diff --git / { skipping = ($3 in drop) }
		/^-- $/ { skipping = 0 }
		!skipping { print }'
}

declare -A by_number=()
total=""
while read -r commit subject; do
	message=$(git --git-dir="$archive" show "$commit:m")
	[[ $(header In-Reply-To <<<"$message") == "<$cover>" ]] || continue
	subject=$(header Subject <<<"$message")
	[[ $subject =~ ^\[PATCH[^]]*[[:space:]]0*([0-9]+)/([0-9]+)\] ]] || continue
	number=${BASH_REMATCH[1]} of=${BASH_REMATCH[2]}
	[[ $number -ge 1 ]] || continue
	if [[ -n ${by_number[$number]:-} ]]; then
		echo "$0: two messages are patch $number: ${by_number[$number]} and $commit" >&2
		exit 1
	fi
	[[ -z $total || $total == "$of" ]] ||
		{ echo "$0: patches say both /$total and /$of" >&2; exit 1; }
	total=$of
	by_number[$number]=$commit
done < <(git --git-dir="$archive" log --format='%H %s' | grep -E ' \[PATCH[^]]* [0-9]+/[0-9]+\]')

[[ -n $total ]] || { echo "$0: no patch answers <$cover> in $archive" >&2; exit 1; }
for ((k = 1; k <= total; k++)); do
	[[ -n ${by_number[$k]:-} ]] ||
		{ echo "$0: patch $k of $total of <$cover> is not in $archive" >&2; exit 1; }
done

# The archive as its owner names it: fetched mirrors live in .../OWNER+NAME/repo.
archive_name=$(cd "$archive" && pwd)
archive_name=${archive_name%/repo}
archive_name=${archive_name##*/}
archive_name=${archive_name/+//}

mkdir -p "$out"
sources="$out/SOURCES"
{
	echo "# Extracted by kernels/patches/extract-series.sh from the list archive"
	echo "# archive: $archive_name"
	echo "# cover letter: <$cover>"
	for path in "${leave_out[@]}"; do
		if [[ $path =~ ^([0-9]+):(.*)$ ]]; then
			echo "# left out of patch ${BASH_REMATCH[1]}, redone by a port patch: ${BASH_REMATCH[2]}"
		else
			echo "# left out of every message, redone by a port patch: $path"
		fi
	done
	echo "# file  archive-commit  message-id  subject"
} >"$sources"
for ((k = 1; k <= total; k++)); do
	commit=${by_number[$k]}
	message=$(git --git-dir="$archive" show "$commit:m")
	subject=$(header Subject <<<"$message")
	slug=$(sed -E 's/^\[[^]]*\] *//; s/[^A-Za-z0-9]+/-/g; s/^-|-$//g' <<<"$subject" | cut -c1-52)
	file=$(printf '%04d-%s.patch' "$k" "$slug")
	here=()
	for path in "${leave_out[@]}"; do
		if [[ $path =~ ^([0-9]+):(.*)$ ]]; then
			[[ $((10#${BASH_REMATCH[1]})) -ne $k ]] || here+=("${BASH_REMATCH[2]}")
		else
			here+=("$path")
		fi
	done
	{
		echo "From $commit Mon Sep 17 00:00:00 2001"
		if [[ ${#here[@]} -eq 0 ]]; then
			git --git-dir="$archive" show "$commit:m"
		else
			git --git-dir="$archive" show "$commit:m" | without_files "${here[@]}"
		fi
	} >"$out/$file"
	echo "$file  $commit  $(header Message-ID <<<"$message")  $subject" >>"$sources"
	echo "$file: $subject" >&2
done
