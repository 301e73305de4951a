#!/usr/bin/env bash
# Commit what a running `fedca leaderboard` has recorded so far: its ledger and the README
# table rendered from it, as one consistent snapshot (retried while the ledger changes).
set -euo pipefail
cd "$(dirname "$0")/.."
ledger=${1:-docs/results/leaderboard/strict}
git diff --quiet README.md || { echo "README.md has other uncommitted changes; commit them first" >&2; exit 1; }
for attempt in 1 2 3 4 5; do
  .venv/bin/python scripts/readme_tables.py > /dev/null
  git add "$ledger" README.md
  if .venv/bin/python scripts/readme_tables.py --check 2> /dev/null; then
    git diff --cached --quiet && { echo "nothing new"; exit 0; }
    git commit -q -m "Leaderboard: $(tail -n +2 "$ledger/results.csv" 2> /dev/null | wc -l) reruns and $(tail -n +2 "$ledger/tuned.csv" 2> /dev/null | wc -l) tuned cells recorded"
    git log --oneline -1
    exit 0
  fi
  sleep 5
done
echo "the ledger kept changing; try again" >&2
exit 1
