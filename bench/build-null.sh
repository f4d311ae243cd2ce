#!/usr/bin/env bash
# Links chatd-null: chatd with the send transaction taken out (see
# bench/store_null.c), from the objects of an existing build, for the
# "storage taken out" baseline. Nothing of the build is recompiled.
#
#   bench/build-null.sh BUILD_DIR [OUT]
#
#   BUILD_DIR  where chatd was built (./configure && make ran there; the
#              source tree itself when built in place)
#   OUT        the binary to write (default BUILD_DIR/chatd-null)
set -euo pipefail

[[ $# -ge 1 && $# -le 2 ]] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
bench_dir=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" && pwd)
out=${2:-$build/chatd-null}
for f in Makefile src/main.o libchatd.a; do
	[[ -e "$build/$f" ]] || { echo "build-null.sh: no $build/$f: build chatd there first (make)" >&2; exit 1; }
done

# The compiler, flags and libraries the build itself used, from its
# Makefile (automake expands them; nothing is guessed here).
mapfile -t v < <(make -s --no-print-directory -C "$build" -f Makefile -f - bench-null-vars <<'MK'
bench-null-vars:
	@printf '%s\n' '$(CC)' '$(CFLAGS) $(AM_CFLAGS)' '$(top_srcdir)' '$(LDFLAGS) $(AM_LDFLAGS)' '$(CHATD_LIBS) $(LIBS)'
MK
)
((${#v[@]} == 5)) || { echo "build-null.sh: cannot read the build's flags from $build/Makefile" >&2; exit 1; }
cc=${v[0]}
read -r -a cflags <<<"${v[1]}"
srcdir=${v[2]}
read -r -a ldflags <<<"${v[3]}"
read -r -a libs <<<"${v[4]}"

cd "$build"
# shellcheck disable=SC2086 # cc may carry its own options
$cc "${cflags[@]}" -D_GNU_SOURCE -I"$srcdir/src" -c -o "$out.o" "$bench_dir/store_null.c"
# shellcheck disable=SC2086
$cc "${cflags[@]}" "${ldflags[@]}" -Wl,--wrap=store_send_batch -o "$out" \
	src/main.o "$out.o" "${libs[@]}"
rm -f "$out.o"
# The wrap must have taken: the backend's entry point is then only
# reached through __real_, never called.
if ! nm "$out" | grep '__wrap_store_send_batch' >/dev/null; then
	echo "build-null.sh: $out does not carry the null send batch" >&2
	exit 1
fi
echo "$out"
