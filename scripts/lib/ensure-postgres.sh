# Sourced by scripts/serve and scripts/test: makes sure PostgreSQL server binaries (14 or newer)
# are installed, installing Debian's package when they are missing and we may.

postgres_bindir() {
    if [ -n "${PG_BINDIR:-}" ] && [ -x "$PG_BINDIR/postgres" ]; then
        echo "$PG_BINDIR"
        return 0
    fi
    if command -v pg_config >/dev/null 2>&1; then
        local dir
        dir=$(pg_config --bindir 2>/dev/null || true)
        if [ -n "$dir" ] && [ -x "$dir/postgres" ] && [ -x "$dir/initdb" ]; then
            echo "$dir"
            return 0
        fi
    fi
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/postgres" ] && [ -x "$dir/initdb" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

ensure_postgres() {
    if postgres_bindir >/dev/null; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: the PostgreSQL server binaries (14 or newer) are not installed." >&2
        echo "Install them with your package manager (Fedora: dnf install postgresql-server;" >&2
        echo "macOS: brew install postgresql@16), or set PG_BINDIR to the folder holding postgres and initdb." >&2
        return 1
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "error: the PostgreSQL server binaries are missing; install them as root: apt-get install postgresql" >&2
            return 1
        fi
    fi
    echo "Installing the PostgreSQL server binaries (apt-get install postgresql)..." >&2
    # The package would otherwise create and start a system-wide cluster of its own; aide manages
    # its own private clusters, so ask for none.
    $sudo mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.d/aide.conf >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >&2
    if ! postgres_bindir >/dev/null; then
        echo "error: PostgreSQL was installed, but its server binaries were not found" >&2
        return 1
    fi
}
