#!/usr/bin/env bash
# Prints XCTest's final tally as one plain closing line: `unit-tests: N passed, N failed[, N skipped]`.
# (swift test's own last line is Swift Testing's "0 tests" summary, since the suites are XCTest.)
# A skipped test fails the run as a failed one does: no test may go quiet.
set -euo pipefail
line=$(grep -E "Executed [0-9]+ tests?, with" "$1" | tail -n 1)
[ -n "$line" ] || { echo "summarize-xctest: no XCTest summary in $1" >&2; exit 1; }
total=$(sed -E 's/.*Executed ([0-9]+) tests?.*/\1/' <<<"$line")
failed=$(sed -E 's/.* ([0-9]+) failures?.*/\1/' <<<"$line")
skipped=$(grep -oE '[0-9]+ tests? skipped' <<<"$line" | grep -oE '^[0-9]+' || true)
skipped=${skipped:-0}
summary="unit-tests: $((total - failed - skipped)) passed, $failed failed"
[ "$skipped" = 0 ] || summary="$summary, $skipped skipped"
echo "$summary"
if [ "$skipped" != 0 ]; then
  grep -E "Test Case .* skipped|: Skipped|XCTSkip" "$1" | head -n 20 >&2 || true
  echo "summarize-xctest: $skipped skipped tests: no test may skip itself" >&2
fi
[ "$failed" = 0 ] && [ "$skipped" = 0 ]
