#!/bin/sh
# Runs once, when the postgres container initialises an empty volume: one database per server
# (StreamFlow's tables and Feast's stores, MLflow's tracking store, Dagster's instance), owned
# by POSTGRES_USER. Names come from POSTGRES_DATABASES (space-separated).
set -eu
for database in ${POSTGRES_DATABASES:-streamflow mlflow dagster}; do
    echo "creating database ${database}"
    psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname postgres \
        -c "CREATE DATABASE \"${database}\" OWNER \"${POSTGRES_USER}\";"
done
