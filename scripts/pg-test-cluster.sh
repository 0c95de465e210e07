#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests (loopback only), e.g. the ledger's PostgreSQL suite.
#
#   env_lines=$(scripts/pg-test-cluster.sh start) && eval "$env_lines"
#       installs the server with apt-get if no initdb is found (as root), creates a cluster in a new
#       temp dir (owned by the `postgres` user when run as root: initdb refuses root), starts it on a
#       free 127.0.0.1 port with its unix socket in that dir, creates database `fiveplane_test`, and
#       prints `export FIVEPLANE_TEST_PG_URL=postgresql+psycopg://…` and `export FIVEPLANE_PG_TEST_DIR=…`.
#   scripts/pg-test-cluster.sh stop "$FIVEPLANE_PG_TEST_DIR"
#       stops that cluster and deletes its directory.
#
# Diagnostics go to stderr; only the export lines go to stdout.
set -euo pipefail

log() { echo "pg-test-cluster: $*" >&2; }

find_bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin /usr/local/pgsql/bin; do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; fi
    done | sort -V | tail -n 1 | grep . && return 0
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    return 1
}

install_server() {
    if [ "$(id -u)" -ne 0 ]; then
        log "initdb not found and not root: install PostgreSQL (apt-get install postgresql) or set FIVEPLANE_TEST_PG_URL"
        exit 1
    fi
    log "installing postgresql with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
}

free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    else
        echo $((20000 + RANDOM % 20000))
    fi
}

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    local bindir dir port attempt
    bindir=$(find_bindir) || { install_server; bindir=$(find_bindir); }
    dir=$(mktemp -d "${TMPDIR:-/tmp}/fiveplane-pg.XXXXXX")
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
        chown postgres: "$dir"
    fi
    chmod 700 "$dir"
    as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
        as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 ||
        { log "initdb failed:"; cat "$dir/initdb.log" >&2; exit 1; }
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        if as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 -c fsync=on -c synchronous_commit=on" \
            start >&2; then
            break
        fi
        log "start on port $port failed (attempt $attempt)"
        port=""
    done
    if [ -z "$port" ]; then
        log "could not start PostgreSQL:"; tail -n 20 "$dir/server.log" >&2; exit 1
    fi
    as_owner "$bindir/createdb" -h "$dir" -p "$port" -U postgres fiveplane_test
    echo "$bindir" >"$dir/bindir"
    log "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (dir $dir)"
    echo "export FIVEPLANE_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:$port/fiveplane_test"
    echo "export FIVEPLANE_PG_TEST_DIR=$dir"
}

stop() {
    local dir=${1:-${FIVEPLANE_PG_TEST_DIR:-}}
    if [ -z "$dir" ] || [ ! -d "$dir/data" ]; then
        log "no cluster directory given"; return 0
    fi
    as_owner "$(cat "$dir/bindir")/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    rm -rf "$dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
