#!/bin/sh
# Runs libFuzzer targets, FUZZ_JOBS at a time (default 1), and prints a
# summary line each.
#   fuzz/run.sh BIN_DIR SECONDS TARGET...
# Each target fuzzes a copy of its seeds in fuzz/corpus-run/<target>/ (kept
# between runs, git-ignored); logs and crash inputs go to fuzz/out/.
# Exits non-zero if any target crashed, timed out or broke an invariant.
set -u
bin=$1 secs=$2
shift 2
jobs=${FUZZ_JOBS:-1}
mkdir -p fuzz/out fuzz/corpus-run
summary="" failed=0 json_ok="" json_bad=""
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

# One target: its log in fuzz/out/<t>.log, its exit status in <t>.rc.
run_one() {
    t=$1
    run=fuzz/corpus-run/$t log=fuzz/out/$t.log
    mkdir -p "$run"
    cp -n fuzz/corpus/"$t"/* "$run"/ 2>/dev/null
    # Session records are long; cookie headers past 4 KB add nothing here.
    case $t in session_parse) max_len=16384 ;; *) max_len=4096 ;; esac
    "$bin/$t" -max_total_time="$secs" -max_len=$max_len -timeout=10 \
        -print_final_stats=1 -artifact_prefix="fuzz/out/$t-" "$run" \
        >"$log" 2>&1
    echo $? > "fuzz/out/$t.rc"
}

# What one finished target did: a summary line, details on failure.
report() {
    t=$1 log=fuzz/out/$1.log
    rc=$(cat "fuzz/out/$t.rc" 2>/dev/null || echo 99)
    runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
    took=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -n 1)
    stat=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    cov=$(echo "$stat" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$stat" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    corp=$(echo "$stat" | sed -n 's/.* corp: \([0-9]*\).*/\1/p')
    if [ "$rc" -eq 0 ]; then
        verdict=ok
    else
        verdict="FAILED (exit $rc, log $log)"
        failed=$((failed + 1))
        runs=${runs:-$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")}
        echo "---- $t: last lines of $log"
        grep -E 'ERROR|invariant failed|runtime error|SUMMARY|Test unit written' "$log" | head -n 10
        grep -E '^ *#[0-9]+ .* (csrc|fuzz)/' "$log" | head -n 8
        unit=$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)
        [ -n "$unit" ] && echo "reproduce: $bin/$t $unit"
        echo "----"
    fi
    line=$(printf '%-16s %12s runs in %4ss  cov %5s  ft %6s  corpus %5s  %s' \
        "$t" "${runs:-?}" "${took:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$verdict")
    echo "fuzz: $line"
    summary="$summary$line
"
    entry="{\"name\":\"fuzz $t ${secs}s: ${runs:-?} runs\"}"
    if [ "$verdict" = ok ]; then json_ok="$json_ok${json_ok:+,}$entry"
    else json_bad="$json_bad${json_bad:+,}$entry"; fi
}

# Batches of $jobs targets in parallel (libFuzzer runs one process each).
set -- "$@"
while [ $# -gt 0 ]; do
    batch=""
    i=0
    while [ $i -lt "$jobs" ] && [ $# -gt 0 ]; do
        seeds=$(ls fuzz/corpus/"$1" | wc -l)
        echo "fuzz: $1 for ${secs}s ($seeds seeds)"
        rm -f "fuzz/out/$1.rc"
        run_one "$1" &
        batch="$batch $1"
        i=$((i + 1))
        shift
    done
    wait
    for t in $batch; do report "$t"; done
done

# For the test summary: the same verdicts in busted's JSON shape.
if [ -n "${FUZZ_JSON:-}" ]; then
    printf '{"successes":[%s],"failures":[%s],"errors":[],"pending":[]}\n' \
        "$json_ok" "$json_bad" > "$FUZZ_JSON"
fi

echo
echo "fuzz summary (${secs}s per target, $jobs at a time, libFuzzer + ASan + UBSan):"
printf '%s' "$summary"
[ $failed -eq 0 ] || { echo "fuzz: $failed target(s) failed"; exit 1; }
