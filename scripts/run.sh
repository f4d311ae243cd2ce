#!/usr/bin/env bash
# Builds chatd and runs it on the embedded default: a SQLite file chatd.db
# in the repository root, served at http://localhost:8080.
#
#   ./scripts/run.sh [chatd options...]
#
# On a fresh Debian 12 machine, as root, this is all the set-up there is:
# missing packages are installed (scripts/deps.sh build), configure is
# generated and run if it has not been, chatd is built in the source tree,
# and the script becomes chatd with the arguments given. A second run only
# rebuilds what changed.
set -euo pipefail

cd "$(dirname "$0")/.."

./scripts/deps.sh build
if [[ ! -x configure ]]; then
	./autogen.sh
fi
if [[ ! -f Makefile ]]; then
	./configure --enable-werror
fi
make -j"$(nproc)"
exec ./chatd "$@"
