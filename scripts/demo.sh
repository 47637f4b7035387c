#!/usr/bin/env bash
# The betlake demo on local defaults.
#   1. batch: a day of telemetry generated, reference data loaded, the file ingested, the day's
#      288 windows recomputed in one Dagster run, figures printed;
#   2. stream: the local Kafka broker started, telemetry produced live (two hours of event time
#      in about a minute), `betlake stream` publishing each window as the watermark passes it.
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

echo; echo "== the day mirrored to BigQuery (the local emulator) =="
betlake local start bigquery
eval "$(betlake local env bigquery)"
.venv/bin/dagster asset materialize -m betlake.definitions --select site_window_stats_bigquery \
  --partition-range "${day}-00:00...${day}-23:55" 2>&1 | grep -oE "RUN_(SUCCESS|FAILURE).*"
betlake local stop bigquery

echo; echo "== the stream: live telemetry through Kafka, a window published every few seconds =="
betlake broker start
live_start=$(date -u -d '-3 hours' +%Y-%m-%dT%H:%M)
betlake generate --to kafka --count 120000 --rate 2000 --start "$live_start" --span 2h \
  --seed "$(date +%s)" >/dev/null &
producer=$!
trap 'kill $producer 2>/dev/null || true; .venv/bin/betlake broker stop >/dev/null' EXIT
betlake stream --drain-when-idle 15
betlake query "SELECT window_start, pane, count(*) AS sites, sum(events) AS events,
                      sum(ggr_eur) AS ggr_eur
               FROM site_window_stats WHERE pane <> 'BATCH'
               GROUP BY ALL ORDER BY window_start DESC LIMIT 12"

cat <<TXT

Open the Dagster UI:  .venv/bin/betlake ui   then http://127.0.0.1:3000
(assets bet_sites, players, fx_rates, site_window_stats; the runs above are in its run list).
Query the lake:       .venv/bin/betlake query "SELECT ..."
Run the stream:       .venv/bin/betlake broker start && .venv/bin/betlake stream
TXT
