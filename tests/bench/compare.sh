#!/usr/bin/env bash
# Herald and nginx + nchan side by side: the same load from `herald bench`, on the same machine,
# in the same run. Each server runs pinned to core 0, the load generator to core 1; servers
# alternate within each repetition; every run gets a freshly started server (Herald with its
# default durable settings and a fresh data dir). Prints medians and the Herald/nchan ratio per
# figure as a markdown table. See BENCHMARKS.md, "Server end to end".
#
# With SERVERS="herald cluster" it compares Herald's embedded log with cluster mode instead:
# two instances on the Redis at REDIS_URL (subscribers on one, publishes to the other, both
# pinned to core 0 with Redis, so the servers' side still has one core).
#
# Herald over its other transports, each a server name of its own (subscribers one connection
# each, publishes over the same scheme): h2c (HTTP/2 with prior knowledge), https (HTTP/1.1
# over TLS) and h2 (HTTP/2 over TLS by ALPN, as browsers reach an HTTPS deployment). The
# script makes a test CA and an ECDSA P-256 server certificate with openssl for them.
# SERVERS="herald h2" compares plain HTTP/1.1 subscribers with browsers over HTTPS.
#
# Usage: tests/bench/compare.sh
# Environment (defaults in brackets):
#   SERVERS the two servers compared: herald, nchan, cluster, h2c, https, h2 ["herald nchan"]
#   REDIS_URL the Redis for cluster runs               [redis://127.0.0.1:6379]
#   SIZES   subscriber counts                          ["1000 10000"]
#   RATES   events/s, 0 = unpaced                      ["10 1000 0"]
#   REPS    repetitions per server and configuration  [3]
#   EVENTS  events per run                             [100]
#   OUT     where the per-run JSON reports and the table go [target/bench-compare]
#   HERALD_PORT, NCHAN_PORT                            [7391, 7392]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SERVERS=${SERVERS:-"herald nchan"}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
SIZES=${SIZES:-"1000 10000"}
RATES=${RATES:-"10 1000 0"}
REPS=${REPS:-3}
EVENTS=${EVENTS:-100}
OUT=${OUT:-$ROOT/target/bench-compare}
HERALD_PORT=${HERALD_PORT:-7391}
NCHAN_PORT=${NCHAN_PORT:-7392}
PUBLISH_PORT=${PUBLISH_PORT:-7393}
HERALD=$ROOT/target/release/herald
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so

log() { echo "compare: $*" >&2; }

read -r -a servers <<<"$SERVERS"
[ ${#servers[@]} = 2 ] || { log "SERVERS names two servers, got: $SERVERS"; exit 1; }
for server in "${servers[@]}"; do
    case $server in
    herald | nchan | cluster | h2c | https | h2) ;;
    *) log "unknown server $server (herald, nchan, cluster, h2c, https, h2)"; exit 1 ;;
    esac
done
if [[ " $SERVERS " == *" nchan "* ]] && { ! command -v nginx >/dev/null || [ ! -e "$NCHAN_MODULE" ]; }; then
    log "installing nginx and libnginx-mod-nchan from Debian"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx libnginx-mod-nchan >&2
fi
command -v python3 >/dev/null || { log "python3 is needed for the summary"; exit 1; }

log "building herald (release)"
(cd "$ROOT" && cargo build --release -q -p herald-server)

WORK=$(mktemp -d /tmp/herald-compare.XXXXXX)
chmod 755 "$WORK" # nginx's worker runs as www-data
rm -rf "$OUT"
mkdir -p "$OUT"
SERVER_PID=""
PUBLISHER_PID=""

stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Stops the server started last (by pid), politely and then not.
stop_server() {
    stop_pid "$SERVER_PID"
    stop_pid "$PUBLISHER_PID"
    SERVER_PID=""
    PUBLISHER_PID=""
}
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for_port() {
    local pid=${2:-$SERVER_PID}
    for _ in $(seq 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$pid" 2>/dev/null || { log "the server exited"; return 1; }
        sleep 0.1
    done
    log "nothing listens on port $1 after 30 s"
    return 1
}

# Makes the test CA and the server's certificate for the TLS runs, once.
make_certs() {
    [ -e "$WORK/ca.pem" ] && return 0
    command -v openssl >/dev/null || { log "openssl is needed for the TLS runs"; return 1; }
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    (
        cd "$WORK"
        openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj /CN=herald-bench-ca
        openssl req "${ec[@]}" -keyout key.pem -out cert.csr -subj /CN=localhost
        printf 'basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' >cert.ext
        openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile cert.ext -out cert.pem
    ) >/dev/null 2>&1 || { log "openssl could not make the test certificates"; return 1; }
}

# Starts Herald (with `extra` flags after the name); sets SERVER_PID (the process to measure as
# well as to stop).
start_herald() {
    local run=$WORK/$1
    shift
    mkdir -p "$run"
    taskset -c 0 "$HERALD" serve --dev --data-dir "$run/data" --listen "127.0.0.1:$HERALD_PORT" \
        "$@" >"$run/out" 2>"$run/err" &
    SERVER_PID=$!
    wait_for_port "$HERALD_PORT"
    MEASURED_PID=$SERVER_PID
}

# Starts two Herald instances sharing Redis under a prefix of this run's own: the measured one
# (subscribers) and one that takes the publishes.
start_cluster() {
    local run=$WORK/$1
    local flags=(serve --dev --redis "$REDIS_URL" --redis-prefix "herald-bench-$$-$1")
    mkdir -p "$run"
    taskset -c 0 "$HERALD" "${flags[@]}" --listen "127.0.0.1:$HERALD_PORT" \
        >"$run/out" 2>"$run/err" &
    SERVER_PID=$!
    taskset -c 0 "$HERALD" "${flags[@]}" --listen "127.0.0.1:$PUBLISH_PORT" \
        >"$run/publisher.out" 2>"$run/publisher.err" &
    PUBLISHER_PID=$!
    wait_for_port "$HERALD_PORT"
    wait_for_port "$PUBLISH_PORT" "$PUBLISHER_PID"
    MEASURED_PID=$SERVER_PID
}

# Starts nginx + nchan; SERVER_PID is the master, MEASURED_PID its one worker.
start_nchan() {
    local run=$WORK/$1 nofile
    mkdir -p "$run"
    chmod 755 "$run"
    nofile=$(ulimit -Hn)
    [ "$nofile" = unlimited ] && nofile=65536
    sed -e "s#@PORT@#$NCHAN_PORT#g" -e "s#@RUN@#$run#g" \
        -e "s#worker_rlimit_nofile .*;#worker_rlimit_nofile $nofile;#" \
        -e "s#worker_connections .*;#worker_connections $nofile;#" \
        "$ROOT/tests/bench/nchan.conf" >"$run/nginx.conf"
    taskset -c 0 nginx -p "$run" -c "$run/nginx.conf" -e "$run/error.log" >"$run/out" 2>&1 &
    SERVER_PID=$!
    wait_for_port "$NCHAN_PORT"
    MEASURED_PID=""
    for _ in $(seq 50); do
        MEASURED_PID=$(pgrep -P "$SERVER_PID" | head -n1 || true)
        [ -n "$MEASURED_PID" ] && break
        sleep 0.1
    done
    [ -n "$MEASURED_PID" ] || { log "no nginx worker under pid $SERVER_PID"; return 1; }
}

# run_one SERVER N RATE REP: one fresh server, one `herald bench`, the JSON report kept.
run_one() {
    local server=$1 n=$2 rate=$3 rep=$4
    local name=$server-n$n-r$rate-$rep
    local topic=bench-$n-$rate-$rep
    local args=(--subscribers "$n" --events "$EVENTS" --rate "$rate" --topic "$topic" --json)
    if [ "$server" = herald ] || [ "$server" = h2c ]; then
        start_herald "$name"
        args+=(--url "http://127.0.0.1:$HERALD_PORT")
        [ "$server" = h2c ] && args+=(--http2)
    elif [ "$server" = https ] || [ "$server" = h2 ]; then
        make_certs
        start_herald "$name" --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem"
        args+=(--url "https://127.0.0.1:$HERALD_PORT" --ca-file "$WORK/ca.pem")
        [ "$server" = h2 ] && args+=(--http2)
    elif [ "$server" = cluster ]; then
        start_cluster "$name"
        args+=(--url "http://127.0.0.1:$HERALD_PORT"
            --publish-url "http://127.0.0.1:$PUBLISH_PORT/publish")
    else
        start_nchan "$name"
        args+=(--url "http://127.0.0.1:$NCHAN_PORT" --subscribe-url '{url}/sub?id={topic}'
            --publish-url '{url}/pub?id={topic}' --body-template '{data}')
    fi
    args+=(--server-pid "$MEASURED_PID")
    log "$name"
    if ! taskset -c 1 "$HERALD" bench "${args[@]}" >"$OUT/$name.json" 2>"$OUT/$name.err"; then
        log "$name failed: $(tail -n3 "$OUT/$name.err")"
        rm -f "$OUT/$name.json"
    fi
    stop_server
    if [ "$server" = cluster ] && command -v redis-cli >/dev/null; then
        redis-cli -u "$REDIS_URL" del "herald-bench-$$-$name:events" >/dev/null || true
    fi
}

started=$(date +%s)
for n in $SIZES; do
    for rate in $RATES; do
        for rep in $(seq "$REPS"); do
            # Alternate which server goes first, so drift on a shared machine hits both.
            if [ $((rep % 2)) = 1 ]; then
                order="${servers[0]} ${servers[1]}"
            else
                order="${servers[1]} ${servers[0]}"
            fi
            for server in $order; do
                run_one "$server" "$n" "$rate" "$rep"
            done
        done
    done
done
log "all runs took $(($(date +%s) - started)) s; reports in $OUT"

python3 - "$OUT" "$EVENTS" "${servers[@]}" <<'PY' | tee "$OUT/table.md"
import json, pathlib, statistics, sys
out, events = pathlib.Path(sys.argv[1]), int(sys.argv[2])
first, second = sys.argv[3], sys.argv[4]
NAMES = {"herald": "Herald", "nchan": "nchan", "cluster": "Herald cluster",
         "h2c": "Herald HTTP/2 cleartext", "https": "Herald HTTPS/1.1", "h2": "Herald HTTPS/2"}
runs = {}
for f in sorted(out.glob("*.json")):
    server, n, rate, _ = f.stem.split("-")
    try:
        runs.setdefault((int(n[1:]), float(rate[1:]), server), []).append(json.loads(f.read_text()))
    except ValueError:
        pass

def get(r, path):
    if path == "client_busy":
        cpu, phase = r.get("client_cpu_s"), r.get("phase_s")
        return cpu / phase if cpu is not None and phase else None
    for key in path.split("."):
        r = r.get(key) if isinstance(r, dict) else None
    return r

# (label, path, format, how to combine the repetitions)
FIGURES = [
    ("connect all (s)", "connect_s", "{:.3f}", "median"),
    ("load generator CPU while connecting (s)", "connect_client_cpu_s", "{:.3f}", "median"),
    ("server CPU per connection (µs)", "server.cpu_per_connection_us", "{:.1f}", "median"),
    ("deliveries/s", "deliveries_per_s", "{:,.0f}", "median"),
    ("latency p50 (ms)", "latency_ms.p50", "{:.2f}", "median"),
    ("latency p90 (ms)", "latency_ms.p90", "{:.2f}", "median"),
    ("latency p99 (ms)", "latency_ms.p99", "{:.2f}", "median"),
    ("latency max (ms)", "latency_ms.max", "{:.2f}", "median"),
    ("fan-out p50 (ms)", "fanout_ms.p50", "{:.2f}", "median"),
    ("fan-out p99 (ms)", "fanout_ms.p99", "{:.2f}", "median"),
    ("arrival latency p50 (ms)", "arrival_latency_ms.p50", "{:.2f}", "median"),
    ("arrival latency p99 (ms)", "arrival_latency_ms.p99", "{:.2f}", "median"),
    ("arrival fan-out p50 (ms)", "arrival_fanout_ms.p50", "{:.2f}", "median"),
    ("publish RTT p50 (ms)", "publish_rtt_ms.p50", "{:.2f}", "median"),
    ("publish RTT p99 (ms)", "publish_rtt_ms.p99", "{:.2f}", "median"),
    ("publishes/s achieved", "publish_rate", "{:,.0f}", "median"),
    ("RSS per idle conn (KB)", "server.rss_per_connection_bytes", "{:.1f}", "median_kb"),
    ("server CPU per delivery (µs)", "server.cpu_per_delivery_us", "{:.3f}", "median"),
    ("server busy (cores)", "server.busy_cores", "{:.2f}", "median"),
    ("load generator busy (cores)", "client_busy", "{:.2f}", "median"),
    ("whole machine busy (cores)", "machine_busy_cores", "{:.2f}", "median"),
    ("complete clients (worst)", "complete_clients", "{:.0f}", "min"),
    ("duplicates (worst)", "duplicates", "{:.0f}", "max"),
    ("out of order (worst)", "out_of_order", "{:.0f}", "max"),
]

def combine(values, how):
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return None
    if how == "min":
        return min(values)
    if how == "max":
        return max(values)
    m = statistics.median(values)
    return m / 1000 if how == "median_kb" else m

a, b = NAMES.get(first, first), NAMES.get(second, second)
print(f"| N | rate/s | figure | {a} | {b} | {a}/{b} |")
print(f"|---|---|---|---|---|---|")
for n, rate in sorted({(n, r) for n, r, _ in runs}):
    pace = "unpaced" if rate == 0 else f"{rate:g}"
    for label, path, fmt, how in FIGURES:
        cells, values = [], []
        for server in (first, second):
            reps = runs.get((n, rate, server), [])
            v = combine([get(r, path) for r in reps], how)
            values.append(v)
            cells.append("-" if v is None else fmt.format(v))
        h, c = values
        ratio = f"{h / c:.2f}" if h is not None and c not in (None, 0) else "-"
        print(f"| {n:,} | {pace} | {label} | {cells[0]} | {cells[1]} | {ratio} |")
counts = {k: len(v) for k, v in runs.items()}
print()
print("Runs per cell (server, N, rate): " + ", ".join(f"{s} {n} {r:g}: {c}" for (n, r, s), c in sorted(counts.items())))
PY
