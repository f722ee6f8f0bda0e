# Sourced by scripts/test, scripts/faults and scripts/soak: the other real parts the tests run
# against, installed when missing.

# moto's S3 server (a real S3-protocol server, from PyPI) in a virtualenv kept under target/;
# exports AIDE_TEST_MOTO_SERVER for the storage tests, which start it on a free port.
ensure_moto() {
    local venv=target/test-tools/moto
    if [ ! -x "$venv/bin/moto_server" ]; then
        echo "Installing moto's S3 server for the storage tests (pip install 'moto[server]')..." >&2
        if ! python3 -m venv "$venv" >&2; then
            local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
            $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >&2
            python3 -m venv "$venv" >&2
        fi
        "$venv/bin/pip" install -q 'moto[server]==5.*' >&2
    fi
    export AIDE_TEST_MOTO_SERVER="$PWD/$venv/bin/moto_server"
}

# nginx, the reverse proxy the soak puts in front of several servers (Debian's nginx-light).
ensure_nginx() {
    if [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1; then
        return 0
    fi
    echo "Installing nginx for the soak's reverse proxy (apt-get install nginx-light)..." >&2
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >&2
}
