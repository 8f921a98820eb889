#!/bin/sh
# The image's entry point: `freqcap` by default, so each component is just a different command
# (`serve --workers 2`, `stream --metrics-port 9108`). The other programs the image ships run as themselves:
# the Airflow Helm chart starts its containers with `bash -c "exec airflow ..."`.
set -e
case "${1:-}" in
    airflow|mlflow|evidently|feast|celery|python|python3|bash|sh)
        exec "$@" ;;
    *)
        exec freqcap "$@" ;;
esac
