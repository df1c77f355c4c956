#!/usr/bin/env bash
# Runs each fuzz target for FUZZ_SECONDS (default 60) on stable Rust, from the committed
# corpus, and prints one line per target: executions, their rate, coverage (libFuzzer's
# `cov`: edges, `ft`: features), corpus size, and the result. New inputs go to
# target/fuzz/corpus/<target> (not committed); a crash leaves its input in
# target/fuzz/artifacts/<target>/ and makes the script fail once every target has run.
# Usage: dataplane/fuzz/run.sh [target...]   (CARGO_FUZZ: the cargo-fuzz binary)
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${FUZZ_SECONDS:-60}
cargo_fuzz=${CARGO_FUZZ:-cargo-fuzz}
work=target/fuzz
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=(wire pipeline fib_batch apply_request fpm_scan write_request); fi

# The build first, alone, so that its time is not fuzzing time.
for t in "${targets[@]}"; do
	mkdir -p "$work"
	if ! CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} "$cargo_fuzz" fuzz build --fuzz-dir dataplane/fuzz \
		-s none --features fuzzing "$t" >"$work/build.log" 2>&1; then
		tail -n 30 "$work/build.log"
		exit 1
	fi
done

failed=0
printf '%-14s %7s %12s %9s %7s %7s %7s  %s\n' target seconds executions exec/s cov ft corpus result
for t in "${targets[@]}"; do
	mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
	log="$work/$t.log"
	result=ok
	if ! "$cargo_fuzz" fuzz run --fuzz-dir dataplane/fuzz -s none --features fuzzing "$t" \
		"$work/corpus/$t" "dataplane/fuzz/corpus/$t" -- \
		-max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
		-artifact_prefix="$work/artifacts/$t/" >"$log" 2>&1; then
		result="FAILED: see $log and $work/artifacts/$t/"
		failed=1
	fi
	last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
	field() { sed -nE "s/.* $1: ([0-9]+).*/\\1/p" <<<"$last"; }
	stat() { sed -nE "s/^stat::$1: *([0-9]+).*/\\1/p" "$log" | tail -n 1; }
	printf '%-14s %7s %12s %9s %7s %7s %7s  %s\n' "$t" "$seconds" "$(stat number_of_executed_units)" \
		"$(stat average_exec_per_sec)" "$(field cov)" "$(field ft)" "$(field corp | cut -d/ -f1)" "$result"
done
exit "$failed"
