#!/usr/bin/env bash
# Runs the fuzz targets one after another (the machine is small), each for
# SECONDS, growing fuzz/corpus/TARGET, then minimizes that corpus so the
# committed copy stays small. Prints exec/s, coverage and corpus size per
# target; exits 1 when a target found a crash (see fuzz/artifacts/TARGET/).
#
#   fuzz/run-all.sh [SECONDS] [TARGET...]     # default: 600 s, every target
set -uo pipefail
cd "$(dirname "$0")"

secs=${1:-600}
shift || true
all=(command_parse framer data_automaton bdat_framing config_parse users_parse auth_decode session)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi

# Safe Rust: AddressSanitizer adds nothing that a panic does not already
# report, and costs half the speed. Debug assertions (overflow checks) stay on.
flags=(--sanitizer none)
cargo +nightly fuzz build "${flags[@]}" || exit 1
mkdir -p artifacts/logs

dict_for() {
    case $1 in
        command_parse | framer | session) echo "-dict=$PWD/dict/smtp.dict" ;;
        config_parse) echo "-dict=$PWD/dict/config.dict" ;;
        users_parse) echo "-dict=$PWD/dict/users.dict" ;;
    esac
}

# Long enough for every limit the target can reach (2048-byte lines, the
# 1000-byte message limit of the session target, the example config).
max_len_for() {
    case $1 in
        framer | session | config_parse) echo 8192 ;;
        *) echo 1024 ;;
    esac
}

failed=()
report=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log="artifacts/logs/$t.log"
    echo "== $t: ${secs}s (log: fuzz/$log)"
    # shellcheck disable=SC2046 # dict_for prints zero or one word
    if ! cargo +nightly fuzz run "${flags[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len="$(max_len_for "$t")" -print_final_stats=1 \
        $(dict_for "$t") >"$log" 2>&1; then
        failed+=("$t")
        grep -E "panicked|Test unit written|Base64" "$log" | head -5
    fi
    # Minimize on edges alone (no hit counters), by set cover: a corpus of
    # a few hundred small files that keeps every edge the run reached.
    cargo +nightly fuzz cmin "${flags[@]}" "$t" "corpus/$t" -- \
        -use_counters=0 -set_cover_merge=1 -max_len="$(max_len_for "$t")" \
        >"artifacts/logs/$t.cmin.log" 2>&1 || echo "   cmin failed: see fuzz/artifacts/logs/$t.cmin.log"
    last=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE).*exec/s' "$log" | tail -1)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    files=$(find "corpus/$t" -type f | wc -l)
    kib=$(du -sk --apparent-size "corpus/$t" | cut -f1)
    report+=("$(printf '%-15s %10s runs %7s exec/s  cov %5s  ft %6s  corpus %4s files %5s KiB' \
        "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "$files" "$kib")")
done

echo
printf '%s\n' "${report[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/<target>/)"
    exit 1
fi
