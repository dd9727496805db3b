#!/bin/sh
# Creates one login role and one schema per Loom service (provision.sql), as the
# database administrator. libpq reads the connection from PGHOST, PGPORT, PGUSER,
# PGPASSWORD and PGDATABASE. Each role's password comes from
# LOOM_<SERVICE>_DB_PASSWORD; LOOM_ROLE_PREFIX names the roles (default loom_).
set -eu
here=$(dirname "$0")
prefix=${LOOM_ROLE_PREFIX:-loom_}
for service in batch rules tracking scheduler; do
    upper=$(echo "$service" | tr '[:lower:]' '[:upper:]')
    eval "password=\${LOOM_${upper}_DB_PASSWORD:?LOOM_${upper}_DB_PASSWORD is not set}"
    psql --no-psqlrc --quiet \
        -v database="$PGDATABASE" -v schema="$service" -v role="${prefix}${service}" -v password="$password" \
        -f "$here/provision.sql"
    echo "provisioned role ${prefix}${service} with schema $service"
done
