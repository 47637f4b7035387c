#!/usr/bin/env bash
# The betlake demo on local defaults: a day of telemetry generated, reference data loaded,
# the file ingested, the day's 288 windows recomputed in one Dagster run, figures printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="$PWD/dagster_home"
betlake() { .venv/bin/betlake "$@"; }

day=$(date -u -d yesterday +%Y-%m-%d)
today=$(date -u +%Y-%m-%d)
betlake generate --to data/telemetry/demo.jsonl --count "${DEMO_EVENTS:-200000}" --start "$day"
betlake reference
betlake ingest data/telemetry/demo.jsonl
betlake reprocess --start "$day" --end "$today"
betlake query "SELECT site_name, sum(events) AS events, sum(active_players) AS player_windows,
                      sum(stake_eur) AS stake_eur, sum(ggr_eur) AS ggr_eur
               FROM site_window_stats WHERE window_date = DATE '$day'
               GROUP BY ALL ORDER BY ggr_eur DESC LIMIT 10"
betlake query "SELECT reason, count(*) AS rejected FROM telemetry_rejected GROUP BY ALL
               ORDER BY rejected DESC"
cat <<TXT

Open the Dagster UI:  DAGSTER_HOME=$DAGSTER_HOME .venv/bin/dagster dev -h 127.0.0.1 -p 3000
then http://127.0.0.1:3000 (assets bet_sites, players, fx_rates, site_window_stats; the runs
above are in its run list). Query the lake:  .venv/bin/betlake query "SELECT ... "
TXT
