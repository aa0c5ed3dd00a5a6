#!/bin/sh
# Writes the compose stack's secrets into an env file (default: deploy/.env, next to
# docker-compose.yml, where `docker compose` reads it), mode 0600: a random value (43 letters
# and digits, 256 bits) for each one it does not hold yet. Values already there are kept, so
# running it again changes nothing. Never commit the file.
set -eu
env_file="${1:-$(dirname "$0")/.env}"
umask 077
touch "$env_file"
for name in SLUICE_AUTH_JWT_SECRET SLUICE_QUERY_ADMIN_TOKEN SLUICE_CLICKHOUSE_PASSWORD \
    CLICKHOUSE_GRAFANA_PASSWORD GRAFANA_ADMIN_PASSWORD; do
    if ! grep -q "^$name=" "$env_file"; then
        value=$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 43)
        printf '%s=%s\n' "$name" "$value" >>"$env_file"
        echo "$env_file: generated $name"
    fi
done
