#!/usr/bin/env bash
# Drives the real nc (Debian's netcat-openbsd) against a real chatd: two users
# name themselves, chat in #lobby, one joins another room, a direct message
# arrives, /quit leaves. Every wait is for a line, with a deadline.
#
# Usage: tests/nc_session.sh [path/to/chatd]
set -euo pipefail

CHATD=${1:-target/release/chatd}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    exec 3>&- 4>&- 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
    echo "nc_session: FAIL: $*" >&2
    for f in "$WORK"/*.out "$WORK"/chatd.log; do
        echo "--- $f" >&2
        cat "$f" >&2 || true
    done
    exit 1
}

# wait_for FILE TEXT: wait up to 10 s for a line equal to TEXT in FILE.
wait_for() {
    local deadline=$((SECONDS + 10))
    until grep -qxF -- "$2" "$1" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || fail "no line '$2' in $(basename "$1")"
        sleep 0.05
    done
}

RUST_LOG=info "$CHATD" --listen 127.0.0.1:0 2>"$WORK/chatd.log" &
PIDS+=($!)
deadline=$((SECONDS + 10))
until PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$WORK/chatd.log" | cut -d: -f2) && [ -n "$PORT" ]; do
    [ $SECONDS -lt $deadline ] || fail "chatd did not start"
    sleep 0.05
done

mkfifo "$WORK/a.in" "$WORK/b.in"
nc 127.0.0.1 "$PORT" <"$WORK/a.in" >"$WORK/a.out" &
PIDS+=($!)
nc 127.0.0.1 "$PORT" <"$WORK/b.in" >"$WORK/b.out" &
NC_B=$!
PIDS+=($NC_B)
exec 3>"$WORK/a.in" 4>"$WORK/b.in"

echo alice >&3
wait_for "$WORK/a.out" "*** alice joined #lobby"
echo bob >&4
wait_for "$WORK/b.out" "*** bob joined #lobby"
wait_for "$WORK/a.out" "*** bob joined #lobby"

echo "hello bob" >&3
wait_for "$WORK/b.out" "#lobby <alice> hello bob"

echo "/join #rust" >&4
wait_for "$WORK/b.out" "*** bob joined #rust"

echo "/dm bob see you in #rust" >&3
wait_for "$WORK/b.out" "@alice -> bob: see you in #rust"

echo "/quit bye all" >&4
wait_for "$WORK/b.out" "*** bye!"
wait_for "$WORK/a.out" "*** bob quit (bye all)"

# Debian's nc stays until its stdin ends even after the server closes; once
# stdin ends, it exits only if the network side is closed too, so its exit
# shows that the server closed bob's connection.
exec 4>&-
grep -q ": closed by the server" "$WORK/chatd.log" || fail "server did not close bob"
deadline=$((SECONDS + 10))
while kill -0 "$NC_B" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || fail "nc for bob did not exit after /quit"
    sleep 0.05
done
echo "nc_session: 1 passed, 0 failed"
