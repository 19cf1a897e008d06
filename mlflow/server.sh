#!/usr/bin/env bash
# Start the MLflow tracking server and UI for the strategy evolution engine.
#
#   bash mlflow/server.sh                      # SQLite: ./mlflow.db, artifacts in ./mlartifacts
#   MLFLOW_BACKEND_STORE_URI=postgresql+psycopg2://user@127.0.0.1:5432/mlflow bash mlflow/server.sh
#
# Environment (all optional):
#   MLFLOW_BACKEND_STORE_URI   backend store; default sqlite:///mlflow.db (MLflow 3 refuses ./mlruns)
#   MLFLOW_ARTIFACTS_DESTINATION  where the server keeps artifacts; default ./mlartifacts
#   MLFLOW_HOST, MLFLOW_PORT   default 127.0.0.1 and 5000
#   MLFLOW_WORKERS             default 1 (this is a 2-core machine)
#   MLFLOW_GUNICORN_OPTS       default "--threads 4 --timeout 120": gunicorn serves MLflow's Flask
#                              app (about 30% less server CPU per request than the default uvicorn
#                              front, measured here), 4 threads for the runs' parallel uploads
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION  default false: no GenAI job runner (7 processes, ~1.7 GB)
# Then point runs at it: export MLFLOW_TRACKING_URI=http://127.0.0.1:5000
set -euo pipefail

backend="${MLFLOW_BACKEND_STORE_URI:-sqlite:///mlflow.db}"
artifacts="${MLFLOW_ARTIFACTS_DESTINATION:-./mlartifacts}"
host="${MLFLOW_HOST:-127.0.0.1}"
port="${MLFLOW_PORT:-5000}"
workers="${MLFLOW_WORKERS:-1}"
gunicorn_opts="${MLFLOW_GUNICORN_OPTS:---threads 4 --timeout 120}"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"

case "$backend" in
  postgresql://*)
    # SQLAlchemy 2 maps postgresql:// to psycopg 3; the project installs psycopg2
    backend="postgresql+psycopg2://${backend#postgresql://}" ;;
esac

mkdir -p "$artifacts"
echo "mlflow server: backend ${backend%%\?*}, artifacts $artifacts, UI at http://$host:$port" >&2
exec mlflow server \
  --backend-store-uri "$backend" \
  --artifacts-destination "$artifacts" \
  --host "$host" --port "$port" --workers "$workers" --gunicorn-opts "$gunicorn_opts"
