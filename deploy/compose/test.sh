#!/usr/bin/env bash
# make compose-test: docker-compose.yml run for real, end to end.
#
#  1. installs Docker (Debian's docker.io: dockerd, containerd, runc) and
#     docker-compose 1.29 when missing (apt-get, idempotent);
#  2. starts dockerd when no daemon answers (in the background, logging to
#     $KEYRELAY_DOCKERD_LOG, overlay2, falling back to vfs), and stops it
#     again at the end if it started it (KEYRELAY_KEEP_DOCKERD=1 keeps it);
#  3. creates the relay's database on the host's PostgreSQL, a keyring in
#     data/compose/ (unless one is there) and a lookup token;
#  4. builds the images (FROM scratch, out of bin/image: nothing is
#     pulled), starts the stack and waits until every service is healthy;
#  5. publishes from the host through the published NATS ports, waits for
#     the confirmation and reads the value back through both workers'
#     lookup APIs;
#  6. publishes 5 events, SIGKILLs worker-1 (docker kill), publishes 5
#     more, and checks that all 10 are confirmed once each and served by
#     worker-2;
#  7. sends a key.deleted through the PostgreSQL outbox and checks the
#     relay's event is confirmed and the key is gone from the lookup API;
#  8. starts worker-1 again and checks it becomes ready and serves the
#     newest keys;
#  9. `down -v` and drops the database, whatever happened before.
#
# Prints each step and ends with "PASS: N passed, 0 failed"; exits non-zero
# on a failure, after printing the services' state and logs.
# Exits 0 with a SKIP line only where no container engine can start: not
# root and no daemon reachable, or dockerd fails to start (its log says
# why). Run by `make compose-test` (which builds bin/keyrelay and
# bin/image first) and at the end of `make test`.
set -euo pipefail
cd "$(dirname "$0")/../.."

PROJECT=keyrelay-test
# KEYRELAY_COMPOSE runs another Compose (e.g. "docker compose", a v2
# plugin) instead of Debian's docker-compose 1.29.
read -r -a COMPOSE_CMD <<<"${KEYRELAY_COMPOSE:-docker-compose}"
COMPOSE=("${COMPOSE_CMD[@]}" -p "$PROJECT" -f docker-compose.yml)
NATS_URL=nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224
KEYRING=data/compose/keyring.json
DB=keyrelay_compose
DOCKERD_LOG=${KEYRELAY_DOCKERD_LOG:-/var/log/keyrelay-dockerd.log}
# The services with a healthcheck, and the host ports the stack publishes
# (the relay listens on 9467 in the host's network namespace).
SERVICES=(nats-1 nats-2 nats-3 worker-1 worker-2 outbox-relay)
PORTS=(14222 14223 14224 9465 9466 9467 9470 9471)
T0=$(date +%s)
CHECKS=0
STACK_UP=
DB_CREATED=
DOCKERD_PID=
SKIPPED=
WORK=$(mktemp -d)

elapsed() { echo $(($(date +%s) - T0)); }
step() { printf '\n== [%3ss] %s\n' "$(elapsed)" "$*"; }
ok() { CHECKS=$((CHECKS + 1)); echo "   ok: $*"; }
fail() {
	echo "FAIL: $*" >&2
	exit 1
}
skip() {
	SKIPPED=1
	echo "SKIP: compose-test: $*"
	exit 0
}

psql_() { PGOPTIONS='-c client_min_messages=warning' psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
# indent: Compose's output, indented, without v1's "... " progress lines
# (each is repeated with "... done").
indent() { tr -d '\r' | sed -e '/\.\.\. *$/d' -e 's/^/   /'; }
kr() { ./bin/keyrelay --nats-url "$NATS_URL" --keyring "$KEYRING" --log-level warn "$@"; }

cleanup() {
	local rc=$?
	set +e
	rm -rf "$WORK"
	[ -n "$SKIPPED" ] && exit 0
	if [ -n "$STACK_UP" ]; then
		if [ "$rc" -ne 0 ]; then
			echo
			echo "-- state at the failure:"
			"${COMPOSE[@]}" ps
			"${COMPOSE[@]}" logs --no-color --tail=25 2>&1 | cut -c1-400
		fi
		step "down -v"
		"${COMPOSE[@]}" down -v --remove-orphans 2>&1 | indent
		echo "   containers left: $(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | wc -l)," \
			"volumes left: $(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | wc -l)"
	fi
	if [ -n "$DB_CREATED" ]; then
		psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" && echo "   dropped database $DB"
	fi
	if [ -n "$DOCKERD_PID" ] && [ -z "${KEYRELAY_KEEP_DOCKERD:-}" ]; then
		echo "   stopping the dockerd this run started (pid $DOCKERD_PID; KEYRELAY_KEEP_DOCKERD=1 keeps it)"
		kill -TERM "$DOCKERD_PID"
		for _ in $(seq 1 60); do
			kill -0 "$DOCKERD_PID" 2>/dev/null || break
			sleep 0.5
		done
	fi
	echo
	if [ "$rc" -eq 0 ]; then
		echo "compose-test: every check passed in $(elapsed)s"
		echo "PASS: $CHECKS passed, 0 failed"
	else
		echo "compose-test: FAILED after $(elapsed)s"
		echo "FAIL: $CHECKS passed, 1 failed"
	fi
	exit "$rc"
}
trap cleanup EXIT

# until SECONDS WHAT CMD...: runs CMD every second until it succeeds.
until_ok() {
	local limit=$1 what=$2
	shift 2
	local start
	start=$(date +%s)
	until "$@" >/dev/null 2>&1; do
		if [ $(($(date +%s) - start)) -ge "$limit" ]; then
			fail "$what: not within ${limit}s"
		fi
		sleep 1
	done
}

# ---------------------------------------------------------------------------
step "packages: docker.io, docker-compose"
need=()
command -v dockerd >/dev/null || need+=(docker.io)
[ -n "${KEYRELAY_COMPOSE:-}" ] || command -v docker-compose >/dev/null || need+=(docker-compose)
command -v psql >/dev/null || need+=(postgresql-client)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		docker info >/dev/null 2>&1 || skip "not root and no Docker daemon reachable: cannot install ${need[*]} or start one"
		fail "missing ${need[*]} (install them, or run as root)"
	fi
	echo "   apt-get install -y ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -q "${need[@]}" >"$WORK/apt.log" 2>&1; then
		apt-get update -q >>"$WORK/apt.log" 2>&1 || true
		if ! apt-get install -y -q "${need[@]}" >>"$WORK/apt.log" 2>&1; then
			tail -n 20 "$WORK/apt.log"
			fail "apt-get install ${need[*]} failed"
		fi
	fi
fi
echo "   $(dockerd --version)"
echo "   $("${COMPOSE_CMD[@]}" version 2>/dev/null | head -n 1)"

# ---------------------------------------------------------------------------
step "container engine"
start_dockerd() {
	local driver=$1 pidfile=/var/run/docker.pid
	# A pid file left by a daemon that died stops the next one from starting.
	if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
		rm -f "$pidfile"
	fi
	echo "   starting dockerd --storage-driver $driver (log: $DOCKERD_LOG)"
	echo "=== $(date -u +%FT%TZ) keyrelay compose-test: dockerd --storage-driver $driver" >>"$DOCKERD_LOG"
	setsid dockerd --storage-driver "$driver" >>"$DOCKERD_LOG" 2>&1 </dev/null &
	DOCKERD_PID=$!
	for _ in $(seq 1 60); do
		if [ -S /var/run/docker.sock ] && docker info >/dev/null 2>&1; then
			return 0
		fi
		if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
			break
		fi
		sleep 0.5
	done
	kill -TERM "$DOCKERD_PID" 2>/dev/null || true
	wait "$DOCKERD_PID" 2>/dev/null || true
	DOCKERD_PID=
	return 1
}
if docker info >/dev/null 2>&1; then
	echo "   a Docker daemon is running already: using it"
elif [ "$(id -u)" -ne 0 ]; then
	skip "no Docker daemon reachable, and only root can start one"
elif start_dockerd overlay2; then
	:
else
	echo "   overlay2 failed; the end of $DOCKERD_LOG:"
	tail -n 5 "$DOCKERD_LOG" | sed 's/^/     /'
	echo "   falling back to the vfs storage driver (slower, copies every layer)"
	if ! start_dockerd vfs; then
		echo "   the end of $DOCKERD_LOG:"
		tail -n 15 "$DOCKERD_LOG" | sed 's/^/     /'
		skip "dockerd does not start on this machine (log above), so no container engine can run the stack"
	fi
fi
docker info --format '   engine {{.ServerVersion}}, storage driver {{.Driver}}, cgroup {{.CgroupVersion}}'
ok "Docker engine answers"

# ---------------------------------------------------------------------------
step "host side: ports, PostgreSQL database, keyring, lookup token"
for p in "${PORTS[@]}"; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		fail "127.0.0.1:$p is in use; the stack publishes it (stop \`make run\` or another stack first)"
	fi
done
echo "   ports ${PORTS[*]} are free"
psql_ -d postgres -c 'SELECT 1' >/dev/null ||
	fail "no PostgreSQL answers on 127.0.0.1:5432 as user postgres (the outbox relay needs it)"
psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
DB_CREATED=1
echo "   created database $DB"
mkdir -p data/compose
if [ -f "$KEYRING" ]; then
	echo "   using the keyring already at $KEYRING"
else
	./bin/keyrelay keyring generate "$KEYRING" | sed 's/^/   /'
fi
# The images run as 65532 and the file is mode 0600.
chown 65532:65532 "$KEYRING"
tok=$(./bin/keyrelay lookup token)
TOKEN=$(awk '/^token:/ {print $2}' <<<"$tok")
KEYRELAY_LOOKUP_TOKEN_SHA256=$(awk '/^token_sha256:/ {print $2}' <<<"$tok")
export KEYRELAY_LOOKUP_TOKEN_SHA256
echo "   lookup token made (client compose-team-a, token_sha256 ${KEYRELAY_LOOKUP_TOKEN_SHA256:0:12}...)"

# ---------------------------------------------------------------------------
step "build the images (FROM scratch, context bin/image)"
ls -l bin/image/keyrelay bin/image/nats-server bin/image/healthcheck | awk '{printf "   %-28s %6.1f MB\n", $9, $5/1048576}'
# One service per image: the others name the same image and build alike.
if ! "${COMPOSE[@]}" build nats-1 worker-1 >"$WORK/build.log" 2>&1; then
	tail -n 30 "$WORK/build.log"
	fail "image build failed"
fi
sed -n -E 's/^(Building .*|Successfully tagged .*| *[a-z0-9-]+ +Built)$/   \1/p' "$WORK/build.log"
for img in keyrelay:local keyrelay-nats:local; do
	docker image inspect -f "   $img {{.Id}} {{.Size}} bytes" "$img" | cut -c1-40,72- || fail "image $img missing"
done
ok "images keyrelay:local and keyrelay-nats:local built"

# ---------------------------------------------------------------------------
step "up -d: 3 NATS servers, 2 workers, outbox migration and relay"
STACK_UP=1
"${COMPOSE[@]}" up -d 2>&1 | indent
health() {
	local cid
	cid=$("${COMPOSE[@]}" ps -a -q "$1")
	[ -n "$cid" ] || {
		echo missing
		return
	}
	docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$cid"
}
all_healthy() {
	local s
	for s in "${SERVICES[@]}"; do
		[ "$(health "$s")" = healthy ] || return 1
	done
}
wait_healthy() {
	local limit=$1 start last=0
	start=$(date +%s)
	until all_healthy; do
		local now=$(($(date +%s) - start))
		if [ "$now" -ge "$limit" ]; then
			fail "services not healthy within ${limit}s"
		fi
		if [ $((now - last)) -ge 15 ]; then
			last=$now
			local line="" s
			for s in "${SERVICES[@]}"; do line+=" $s=$(health "$s")"; done
			echo "   waiting (${now}s):$line"
		fi
		sleep 1
	done
}
wait_healthy 240
migrate=$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$("${COMPOSE[@]}" ps -a -q outbox-migrate)")
[ "$migrate" = "exited 0" ] || fail "outbox-migrate: $migrate"
for p in 9465 9466 9467; do
	r=$(curl -sf "http://127.0.0.1:$p/readyz") || fail "127.0.0.1:$p/readyz: not ready"
	echo "   127.0.0.1:$p/readyz: $(tr '\n' ' ' <<<"$r")"
done
ok "all ${#SERVICES[@]} services healthy after $(elapsed)s; outbox-migrate exited 0"

# ---------------------------------------------------------------------------
# confirmed STATUS ID...: waits (CONFIRM_WITHIN seconds, 120) until each
# event id has a confirmation, then checks it is one, with STATUS.
confirmed() {
	local want=$1 limit=${CONFIRM_WITHIN:-120} start list id missing
	shift
	start=$(date +%s)
	while :; do
		list=$(kr confirmations --team team-a 2>/dev/null || true)
		missing=0
		for id in "$@"; do
			grep -q " event=$id " <<<"$list" || missing=$((missing + 1))
		done
		[ "$missing" -eq 0 ] && break
		[ $(($(date +%s) - start)) -ge "$limit" ] && fail "$missing of $# events not confirmed within ${limit}s"
		sleep 1
	done
	for id in "$@"; do
		local line
		line=$(grep " event=$id " <<<"$list")
		[ "$(wc -l <<<"$line")" -eq 1 ] || fail "event $id: more than one confirmation: $line"
		[ "$(awk '{print $2}' <<<"$line")" = "$want" ] || fail "event $id: want $want, got: $line"
	done
}
# lookup PORT KEY: the lookup API's JSON answer for team-a's KEY.
lookup() { KEYRELAY_TOKEN=$TOKEN ./bin/keyrelay lookup get --url "http://127.0.0.1:$1" "$2"; }
value_of() { sed -n 's/^  "value": "\(.*\)",\{0,1\}$/\1/p'; }
newvalue() { echo "sk-compose-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"; }

step "publish from the host: key.created team-a/key-1"
V1=$(newvalue)
out=$(kr publish create --team team-a --key key-1 --value "$V1")
echo "   $out"
ID1=$(sed -n 's/.* id=\([^ ]*\) .*/\1/p' <<<"$out")
[ -n "$ID1" ] || fail "no event id in the publish output"
confirmed stored "$ID1"
echo "   $(grep -h " event=$ID1 " <<<"$(kr confirmations --team team-a)" | cut -c1-160)"
ok "key-1 confirmed stored"

step "lookup API: key-1 through both workers"
for p in 9470 9471; do
	got=$(lookup "$p" key-1 | value_of)
	[ "$got" = "$V1" ] || fail "127.0.0.1:$p: key-1 is '${got:0:20}', want the published value"
	echo "   127.0.0.1:$p: key-1 = ${got:0:14}... (the published value)"
done
ok "both workers answer the lookup with the published value"

# ---------------------------------------------------------------------------
step "publish key-2 .. key-6, SIGKILL worker-1 (docker kill) at once, publish key-7 .. key-11"
IDS=()
declare -A VALUES
publish_key() {
	local v out
	v=$(newvalue)
	VALUES[$1]=$v
	out=$(kr publish create --team team-a --key "$1" --value "$v")
	IDS+=("$(sed -n 's/.* id=\([^ ]*\) .*/\1/p' <<<"$out")")
}
for i in 2 3 4 5 6; do publish_key "key-$i"; done
W1=$("${COMPOSE[@]}" ps -a -q worker-1)
docker kill --signal KILL "$W1" >/dev/null
KILLED=$(date +%s)
echo "   published key-2 .. key-6; docker kill worker-1: $(docker inspect -f 'status={{.State.Status}} exit={{.State.ExitCode}}' "$W1")"
for i in 7 8 9 10 11; do publish_key "key-$i"; done
echo "   published key-7 .. key-11 with worker-1 dead"
[ "$(health worker-2)" = healthy ] || fail "worker-2 is not healthy after worker-1 was killed"
# Events worker-1 held when it died come back after worker.ack_wait (60s).
CONFIRM_WITHIN=150 confirmed stored "${IDS[@]}"
echo "   all confirmed $(($(date +%s) - KILLED))s after the kill"
ok "all 10 events confirmed stored, once each, with worker-1 killed"
for k in key-2 key-11; do
	got=$(lookup 9471 "$k" | value_of)
	[ "$got" = "${VALUES[$k]}" ] || fail "worker-2: $k is '${got:0:20}', want the published value"
done
ok "worker-2 serves key-2 and key-11"

# ---------------------------------------------------------------------------
step "PostgreSQL outbox: key.deleted team-a/key-1 through the relay"
OID=$(cat /proc/sys/kernel/random/uuid)
psql_ -d "$DB" -c "INSERT INTO keyrelay.keyrelay_outbox (payload) VALUES (jsonb_build_object(
  'spec_version', '1.0', 'id', '$OID', 'type', 'key.deleted',
  'time', to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
  'team_id', 'team-a', 'key_id', 'key-1',
  'generation', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint))"
echo "   inserted outbox row, event $OID"
confirmed deleted "$OID"
echo "   outbox status: $(./bin/keyrelay outbox status --dsn "postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable")"
until_ok 15 "key-1 gone from worker-2's lookup API" bash -c "! KEYRELAY_TOKEN='$TOKEN' ./bin/keyrelay lookup get --url http://127.0.0.1:9471 key-1"
echo "   127.0.0.1:9471: key-1: $(lookup 9471 key-1 2>&1 | tail -n 1 | cut -c1-100)"
ok "relay published the outbox row; key-1 confirmed deleted and no longer served"

# ---------------------------------------------------------------------------
# docker kill counts as a manual stop: the restart policy leaves it down.
step "start worker-1 again"
"${COMPOSE[@]}" start worker-1 2>&1 | indent
wait_healthy 120
got=$(lookup 9470 key-11 | value_of)
[ "$got" = "${VALUES[key-11]}" ] || fail "worker-1 after its restart: key-11 is '${got:0:20}', want the published value"
ok "worker-1 healthy again and serves key-11"

