#!/usr/bin/env bash
# Runs the same loopback load against chatd, a featureless relay, ngircd and
# InspIRCd, in one run, alternating servers within each round and starting
# each fresh for every measurement, with the server pinned to one core and
# the load generator to the other, and prints medians with ratios
# (README.md, "Performance").
#
# Usage: contrib/bench/compare.sh [ROUNDS]     (default 3; needs root for apt)
# Environment:
#   SCENARIOS="fanout10 fanout1 steady fanout10k1 idle10k idle1k churn"
#                                     compared on every server (fanout10long:
#                                     fanout10 with 20,000 messages, steadier)
#   SCALE="fanout10k idle1k100 idle19k"  chatd alone (growth)
#   SERVERS="chatd relay ngircd inspircd"   (any of: chatd relay baseline
#                              ngircd inspircd chatd-ws chatd-noweb chatd-tls
#                              relay-tls)
#       chatd-tls: chatd's TLS port (a self-signed certificate made here);
#       only the idle scenarios, for the memory a TLS connection costs;
#       relay-tls: the relay over TLS (rustls, chatd's server configuration),
#       the ceiling for chatd-tls
#       relay: `chatd-bench relay`, one thread, a slab, each line encoded once
#       into a shared buffer, one writev per connection per turn, nothing
#       else: the practical ceiling, for ratios within one run
#       chatd-ws: the same daemon driven over WebSockets (--ws), as browsers
#       drive it; chatd-noweb: chatd --no-web (no greeting hold, no HTTP)
#   BASELINE=path/to/chatd     another chatd build, run as server "baseline"
#                              with chatd's flags (before/after a change)
#   FSYNC=never|batch|always   run chatd with a journal instead of --ephemeral
#   REPEAT_SHORT=3    runs per round of the scenarios whose measured part is
#                     a fraction of a second (fanout1, fanout10k1: 100 lines
#                     into 10,000 members take ~0.12 s, and single runs of the
#                     same server spread by 50%); servers still alternate
#
# Each run's rows are left in $CARGO_TARGET_DIR (or target)/compare-results.jsonl
# and the load generator's messages (why a run failed) in compare-bench.log.
#
# Flood limits are raised as far as each daemon's configuration allows:
# - chatd: --rate 0 --conn-rate 0, no per-address limit, --ephemeral (the IRC
#   daemons keep nothing on disk either; FSYNC= measures with a journal);
# - InspIRCd: threshold and commandrate of 10^9 (its "no limit" is not a
#   value it accepts: 0 means "kill at once"), fakelag off, send and receive
#   queues of 100 MB, no per-address limits; senders are operators;
# - ngircd: its per-client command throttle cannot be configured away; an
#   IRC operator may set user mode +F (relaxed flood protection), so the
#   senders OPER and set +F. Receivers only read, which ngircd does not
#   throttle. What cannot be lifted: ngircd answers each new client's JOIN
#   only after a penalty of about a second, and handles joins into a big
#   room slowly (about 30 a second into a 1,000-member room here), so its
#   setup phases are long; they are not part of any figure.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
SCENARIOS=${SCENARIOS-"fanout10 fanout1 steady fanout10k1 idle10k idle1k churn"}
SCALE=${SCALE-"fanout10k idle1k100 idle19k"}
SERVERS=${SERVERS:-"chatd relay ngircd inspircd"}
# The server on core 1, the load generator on core 0 (SERVER_CPU, LOAD_CPU).
SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
PIN_SERVER="taskset -c $SERVER_CPU"
PIN_LOAD="taskset -c $LOAD_CPU"
command -v taskset >/dev/null || { PIN_SERVER=""; PIN_LOAD=""; echo "no taskset: not pinned" >&2; }
FSYNC=${FSYNC:-}
export DEBIAN_FRONTEND=noninteractive
case " $SERVERS " in
*" ngircd "* | *" inspircd "*)
    for p in ngircd inspircd; do
        dpkg -s "$p" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq ngircd inspircd >/dev/null; }
    done ;;
esac
systemctl stop ngircd inspircd >/dev/null 2>&1 || true
pkill -x ngircd || true
pkill -x inspircd || true
cargo build --release --bins --quiet
WORK=$(mktemp -d)
trap 'pkill -P $$ || true; rm -rf "$WORK"' EXIT
# Copies, so that a rebuild during the run cannot mix two binaries.
T=${CARGO_TARGET_DIR:-target}
cp "$T/release/chatd" "$T/release/chatd-bench" "$WORK/"
BENCH=$WORK/chatd-bench
CHATD=$WORK/chatd
if [ -n "${BASELINE:-}" ]; then cp "$BASELINE" "$WORK/chatd-baseline"; fi
git rev-parse --short HEAD 2>/dev/null | sed 's/^/commit /' >&2 || true
ulimit -n "$(ulimit -Hn)"

cat >"$WORK/ngircd.conf" <<CONF
[Global]
Name = irc.bench.local
Info = benchmark
Listen = 127.0.0.1
Ports = 16667
MotdPhrase = bench
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 31
MaxListSize = 100
PingTimeout = 600
PongTimeout = 600
[Options]
DNS = no
Ident = no
PAM = no
[Operator]
Name = bench
Password = bench
CONF

cat >"$WORK/inspircd.conf" <<CONF
<server name="irc.bench.local" description="benchmark" network="bench">
<admin name="bench" nick="bench" email="bench@localhost">
<bind address="127.0.0.1" port="16668" type="clients">
<class name="all" commands="*" privs="*" usermodes="*" chanmodes="*">
<type name="bench" classes="all">
<oper name="bench" password="bench" host="*@*" type="bench">
<connect allow="*" timeout="120" pingfreq="600" hardsendq="104857600" softsendq="104857600"
         recvq="104857600" threshold="1000000000" commandrate="1000000000" fakelag="no"
         localmax="1000000" globalmax="1000000" limit="1000000" useident="no" maxchans="1000"
         resolvehostnames="no">
<performance netbuffersize="65536" somaxconn="4096" softlimit="100000" clonesonconnect="no"
             timeskipwarn="0" nouserdns="yes">
<options hostintopic="no" defaultmodes="nt">
<security hidewhois="" announceinvites="none">
<limits maxchan="64" maxnick="31" maxuser="12">
<channels users="1000" opers="1000">
<pid file="$WORK/inspircd.pid">
<log method="file" type="*" level="sparse" target="$WORK/inspircd.log">
CONF

case " $SERVERS " in
*" chatd-tls "* | *" relay-tls "*)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -addext basicConstraints=critical,CA:FALSE \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost \
        -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null ;;
esac

start() { # name -> prints "port pid"
    case $1 in
    chatd | baseline | chatd-ws | chatd-noweb | chatd-tls)
        local bin=$CHATD
        [ "$1" = baseline ] && bin=$WORK/chatd-baseline
        local state="--ephemeral"
        if [ -n "$FSYNC" ]; then
            rm -rf "$WORK/chatd-state"
            state="--state-dir $WORK/chatd-state --fsync $FSYNC"
        fi
        # Per-address limits lifted: every client here is 127.0.0.1 (an
        # older build, as BASELINE, may not know the newer flags).
        local lift="--max-per-ip 1000000 --max-conns 100000"
        [ "$1" = chatd-noweb ] && lift="$lift --no-web"
        [ "$1" = chatd-tls ] && lift="$lift --tls-listen 127.0.0.1:16672 --tls-cert $WORK/tls.crt --tls-key $WORK/tls.key"
        case $("$bin" --help) in *--max-rooms-per-ip*) lift="$lift --max-rooms-per-ip 1000000" ;; esac
        # shellcheck disable=SC2086
        RUST_LOG=warn $PIN_SERVER "$bin" --listen 127.0.0.1:16670 $state --rate 0 --conn-rate 0 \
            $lift 2>>"$WORK/chatd.log" &
        echo "16670 $!" ;;
    relay)
        $PIN_SERVER "$BENCH" relay --listen 127.0.0.1:16671 2>>"$WORK/relay.log" &
        echo "16671 $!" ;;
    relay-tls)
        $PIN_SERVER "$BENCH" relay --listen 127.0.0.1:16673 --tls-cert "$WORK/tls.crt" \
            --tls-key "$WORK/tls.key" 2>>"$WORK/relay.log" &
        echo "16673 $!" ;;
    ngircd)
        $PIN_SERVER ngircd -n -f "$WORK/ngircd.conf" >>"$WORK/ngircd.log" 2>&1 &
        echo "16667 $!" ;;
    inspircd)
        $PIN_SERVER inspircd --nofork --runasroot --config="$WORK/inspircd.conf" >>"$WORK/inspircd.out" 2>&1 &
        echo "16668 $!" ;;
    esac
}

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server on port $1 did not start" >&2
    return 1
}

stop() { # pid: the server is gone (and its port free) before the next starts
    kill "$1" 2>/dev/null || true
    # Not this shell's child (started in a process substitution): poll.
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    sleep 1
}

run() { # server scenario
    read -r port pid < <(start "$1")
    wait_port "$port"
    local irc="" oper=""
    case $1 in
    chatd | baseline | chatd-noweb | relay) ;;
    chatd-ws) irc="--ws" ;;
    chatd-tls) irc="--tls-ca $WORK/tls.crt"; port=16672 ;;
    relay-tls) irc="--tls-ca $WORK/tls.crt" ;;
    *) irc="--irc"; oper="--oper bench:bench" ;;
    esac
    local a="--addr 127.0.0.1:$port --pid $pid"
    if [ "${1%-tls}" != "$1" ] && [ "${2#idle}" = "$2" ]; then
        # Over TLS only memory is measured.
        stop "$pid"
        return 0
    fi
    # shellcheck disable=SC2086
    local BENCH="$PIN_LOAD $BENCH"
    case $2 in
    fanout10) $BENCH fanout $a $irc $oper --receivers 1000 --senders 10 --messages 5000 ;;
    # The same four times longer: 5,000 messages last a quarter of a second
    # on a fast day, too short to tell 10% from noise.
    fanout10long) $BENCH fanout $a $irc $oper --receivers 1000 --senders 10 --messages 20000 ;;
    fanout1) $BENCH fanout $a $irc $oper --receivers 1000 --senders 1 --messages 200 ;;
    steady) $BENCH fanout $a $irc $oper --receivers 1000 --senders 10 --messages 5000 --rate 1000 ;;
    fanout10k1) $BENCH fanout $a $irc $oper --receivers 10000 --senders 1 --messages 100 ;;
    fanout10k) $BENCH fanout $a $irc $oper --receivers 10000 --senders 10 --messages 1000 ;;
    idle10k) $BENCH idle $a $irc --connections 10000 --room-size 100 ;;
    idle1k) $BENCH idle $a $irc --connections 1000 --room-size 1000 ;;
    idle1k100) $BENCH idle $a $irc --connections 1000 --room-size 100 ;;
    idle19k) $BENCH idle $a $irc --connections 19000 --room-size 100 ;;
    churn) $BENCH churn --addr "127.0.0.1:$port" --pid "$pid" $irc --parallel 1000 --cycles 5000 --room-size 10 ;;
    esac 2>>"$WORK/bench.log" | sed "s/^{/{\"server\":\"$1\",/" || echo "{\"server\":\"$1\",\"scenario\":\"$2\",\"failed\":true}"
    stop "$pid"
}

RESULTS=$WORK/results.jsonl
for round in $(seq "$ROUNDS"); do
    for sc in $SCENARIOS; do
        reps=1
        case $sc in fanout1 | fanout10k1) reps=${REPEAT_SHORT:-3} ;; esac
        for rep in $(seq "$reps"); do
            for srv in $SERVERS; do
                echo "round $round: $sc on $srv ($rep of $reps)" >&2
                run "$srv" "$sc" | sed "s/^{/{\"tag\":\"$sc\",/" >>"$RESULTS"
            done
        done
    done
    for sc in $SCALE; do
        echo "round $round: $sc on chatd" >&2
        run chatd "$sc" | sed "s/^{/{\"tag\":\"$sc\",/" >>"$RESULTS"
    done
done
cp "$RESULTS" "$T/compare-results.jsonl"
# The load generator's messages, a failed run's reason among them.
cp "$WORK/bench.log" "$T/compare-bench.log" 2>/dev/null || true
tail -n 20 "$WORK/bench.log" >&2 || true
python3 - "$RESULTS" "$SERVERS" "$ROUNDS" "${REPEAT_SHORT:-3}" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
metrics = {
    "fanout10": [("deliveries_per_sec", "fan-out R=1000 S=10, 5000 msgs: deliveries/s", True),
                 ("cpu_s_per_million", "  server CPU s per 1 M deliveries", False),
                 ("lost", "  lost deliveries", False)],
    "fanout10long": [("deliveries_per_sec", "fan-out R=1000 S=10, 20000 msgs: deliveries/s", True),
                     ("cpu_s_per_million", "  server CPU s per 1 M deliveries", False)],
    "fanout1": [("deliveries_per_sec", "fan-out R=1000 S=1, 200 msgs: deliveries/s", True),
                ("cpu_s_per_million", "  server CPU s per 1 M deliveries", False)],
    "steady": [("p99_ms", "1,000 msgs/s into 1,000 members: p99 ms", False),
               ("p50_ms", "  p50 ms", False),
               ("cpu_s_per_million", "  server CPU s per 1 M deliveries", False)],
    "fanout10k1": [("deliveries_per_sec", "fan-out R=10,000 S=1, 100 msgs: deliveries/s", True),
                   ("cpu_s_per_million", "  server CPU s per 1 M deliveries", False)],
    "idle10k": [("bytes_per_connection", "idle B/connection, 10,000 in rooms of 100", False),
              ("marginal_bytes_per_connection", "  each of the second 5,000", False),
              ("rss_bytes_per_connection", "  counting code paged in (VmRSS)", False)],
    "idle1k": [("bytes_per_connection", "idle B/connection, 1,000 in one room", False),
             ("marginal_bytes_per_connection", "  each of the second 500", False),
             ("rss_bytes_per_connection", "  counting code paged in (VmRSS)", False)],
    "churn": [("cycles_per_sec", "churn 5,000 cycles, 1,000 parallel: cycles/s", True),
              ("cpu_us_per_cycle", "  server CPU us per cycle", False),
              ("failed", "  cycles that failed (no answer in 30 s)", False)],
    "fanout10k": [("deliveries_per_sec", "chatd: fan-out R=10,000 S=10: deliveries/s", True),
                  ("cpu_s_per_million", "  server CPU s per 1 M deliveries", False)],
    "idle1k100": [("bytes_per_connection", "chatd: idle B/connection, 1,000 in rooms of 100", False)],
    "idle19k": [("bytes_per_connection", "chatd: idle B/connection, 19,000 in rooms of 100", False)],
}
def vals(tag, srv, key):
    # "failed": true marks a run that did not finish; churn's "failed" is a count.
    return [r[key] for r in rows if r.get("tag") == tag and r.get("server") == srv
            and r.get(key) is not None and r.get("failed") is not True]
def med(tag, srv, key):
    v = vals(tag, srv, key)
    return statistics.median(v) if v else None
servers = sys.argv[2].split()
others = [s for s in servers if s != "chatd"]
names = {"chatd": "chatd", "relay": "relay", "baseline": "baseline", "ngircd": "ngircd", "inspircd": "InspIRCd",
         "chatd-ws": "chatd/ws", "chatd-noweb": "--no-web", "chatd-tls": "chatd/tls",
         "relay-tls": "relay/tls"}
rounds, repeat = sys.argv[3], sys.argv[4]
head = f"{'figure':52}" + "".join(f" {names.get(s, s):>12}" for s in servers)
head += "".join(f" {'vs ' + names.get(s, s):>14}" for s in others)
print(head)
for tag, ms in metrics.items():
    for key, label, higher in ms:
        got = {s: med(tag, s, key) for s in servers}
        if all(v is None for v in got.values()):
            continue
        c = got.get("chatd")
        def ratio(o):
            if key in ("lost", "failed") or c is None or o in (None, 0) or c == 0:
                return "-"
            return f"{(c / o if higher else o / c):.2f}x"
        f = lambda x: "-" if x is None else (f"{x:,.0f}" if x >= 100 or key in ("lost", "failed") else f"{x:.3f}")
        row = f"{label:52}" + "".join(f" {f(got[s]):>12}" for s in servers)
        row += "".join(f" {ratio(got[s]):>14}" for s in others)
        print(row)
failed = [r for r in rows if r.get("failed") is True]
print(f"(medians of {rounds} rounds, fanout1 and fanout10k1 of {rounds} x {repeat} runs; ratios: chatd as a fraction of the other, higher-is-better both ways (1.00x = level, 0.50x = half as good); {len(failed)} runs failed)")
PY
