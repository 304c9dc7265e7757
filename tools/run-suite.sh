#!/bin/sh
# usage: tools/run-suite.sh <results dir> <suite> <command...>
# Runs one suite with its JSON report on stdout into <dir>/<suite>.json and
# keeps its exit status beside it: a runner that fails without saying so in
# its report (valgrind's error exit, a sanitizer abort) still counts.
dir=$1 suite=$2
shift 2
"$@" > "$dir/$suite.json"
rc=$?
echo "$rc" > "$dir/$suite.rc"
exit "$rc"
