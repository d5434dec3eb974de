# Shared by the scripts in this folder: where things are cached, how servers are fetched,
# started, awaited and stopped. Sourced, not run.

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Downloads and unpacked servers; kept across runs. Maven's own cache (~/.m2) is kept too.
CACHE="${CDC_SINK_CACHE:-$REPO/.cache}"
KAFKA_VERSION=4.3.1
ES_VERSION=8.19.4
KAFKA_LIB="$CACHE/kafka-$KAFKA_VERSION/lib"
# Kafka Connect at the Kafka version the Debezium release is built against.
CONNECT_VERSION=4.1.1
CONNECT_LIB="$CACHE/connect-$CONNECT_VERSION/lib"
DEBEZIUM_VERSION=3.5.0.Final
# Kafka Connect's plugin.path: one plugin dir holding Debezium's PostgreSQL and MariaDB connectors.
DEBEZIUM_PLUGINS="$CACHE/debezium-$DEBEZIUM_VERSION/plugins"
# Elasticsearch refuses to run as root: as root it runs as this unprivileged user, from a copy
# of the distribution that user can read.
ES_USER=cdcsink
DRUID_VERSION=33.0.0
DRUID_LIB="$CACHE/druid-$DRUID_VERSION/lib"
DRUID_EXTENSIONS="$CACHE/druid-$DRUID_VERSION/extensions"

# spawn NAME COMMAND...: COMMAND in the background in a process group of its own (ended with
# `kill -- -PID`), its output in $logs/NAME (the caller's directory).
spawn() {
  local name="$1"; shift
  set -m
  ( "$@" < /dev/null > "$logs/$name" 2>&1 ) &
  set +m
}
# finish NAME PID: waits for a spawned job, prints its output, and returns its exit code.
finish() {
  local rc=0
  wait "$2" || rc=$?
  cat "$logs/$1"
  return $rc
}

say() { printf '\033[1m[cdc-sink]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[cdc-sink] %s\033[0m\n' "$*" >&2; exit 1; }

# free_port: a loopback port free now, below the kernel's ephemeral range. A port the kernel
# picks (binding port 0) is in that range, where any outgoing connection may take it before the
# server binds it: PostgreSQL found its port taken while the tests ran.
free_port() {
  python3 -c '
import random, socket
try:
    low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
except OSError:
    low, high = 32768, 60999
ports = range(10000, low) if low > 11000 else range(high + 1, 65536)
for _ in range(500):
    port = random.choice(ports)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
'
}

java_home() {
  if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then echo "$JAVA_HOME"; return; fi
  dirname "$(dirname "$(readlink -f "$(command -v java)")")"
}

es_home() {
  if [ "$(id -u)" = 0 ]; then echo "/var/lib/$ES_USER/elasticsearch-$ES_VERSION"; else echo "$CACHE/elasticsearch-$ES_VERSION"; fi
}

# Installs the Debian packages in "$@" that are missing (as root), or says which to install.
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "missing Debian packages: ${missing[*]} (install them as root)"
    say "installing Debian packages: ${missing[*]}"
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Build dependencies of the worker (librdkafka is compiled from source by rdkafka-sys).
install_build_deps() {
  apt_install build-essential pkg-config libssl-dev zlib1g-dev python3 curl openssl
  command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs"
}

# debug_c_flags: the debug builds' C flags, for scripts/test and scripts/demo alike (so that
# neither rebuilds the other's dependencies). librdkafka's C, and the C++ wrapper rdkafka-sys
# builds beside it, compiled without optimisation or debug symbols: its build (mklove) compiles
# with `-g -O2` whatever Cargo's profile, and took 102 of the tests' build's 377 CPU-s (its `make`
# 51 s on two cores); with these flags, added after its own, 36 CPU-s, and that build 199 -> 171 s.
# The tests had spent 0.7% of their CPU in librdkafka's code at -O2 (perf over the integration
# tests but the live ones). Release builds (the benchmarks', users') keep `-O2`. The `cc` crate
# reads CFLAGS too, so a build by hand with other CFLAGS runs the C dependencies' build scripts
# again (ring, zstd, mimalloc, then librdkafka's with those CFLAGS) and rebuilds what uses them.
debug_c_flags() {
  export CFLAGS="${CFLAGS--O0 -g0}" CXXFLAGS="${CXXFLAGS--O0 -g0}"
}

install_java_maven() {
  command -v java >/dev/null && command -v mvn >/dev/null && return 0
  apt_install openjdk-17-jdk-headless maven
}

# Apache Kafka (broker, KRaft) and its runtime dependencies, from Maven Central, into one lib dir.
fetch_kafka() {
  maven_libs "Apache Kafka $KAFKA_VERSION" "$REPO/scripts/maven/kafka/pom.xml" "$KAFKA_LIB" -Dkafka.version="$KAFKA_VERSION"
}

# maven_libs LABEL POM DIR [mvn args…]: the runtime dependencies of POM copied into DIR, once per
# POM content (a changed POM fetches again).
maven_libs() {
  local label="$1" pom="$2" dir="$3"; shift 3
  local stamp; stamp="$dir/.pom-$(sha256sum "$pom" | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  install_java_maven
  say "fetching $label from Maven Central"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dir.tmp" "$@" >&2 \
    || die "could not fetch the artifacts of $pom from Maven Central (see Maven's output above)"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  touch "$stamp"
}

# A Kafka Connect worker and the Debezium connectors, from Maven Central.
fetch_connect() {
  maven_libs "Kafka Connect $CONNECT_VERSION" "$REPO/scripts/maven/connect/pom.xml" "$CONNECT_LIB" \
    -Dkafka.version="$CONNECT_VERSION"
  # Kafka's and SLF4J's classes come from the worker, not from the plugin.
  maven_libs "the Debezium $DEBEZIUM_VERSION PostgreSQL and MariaDB connectors" \
    "$REPO/scripts/maven/debezium/pom.xml" "$DEBEZIUM_PLUGINS/debezium" \
    -Ddebezium.version="$DEBEZIUM_VERSION" -DexcludeGroupIds=org.apache.kafka,org.slf4j
}

# Apache Druid from Maven Central: the services into one lib dir, and the Kafka indexing service as
# an extension folder holding only the jars the lib dir lacks (as Druid's distribution lays it out).
fetch_druid() {
  maven_libs "Apache Druid $DRUID_VERSION" "$REPO/scripts/maven/druid/pom.xml" "$DRUID_LIB" \
    -Ddruid.version="$DRUID_VERSION"
  local ext="$DRUID_EXTENSIONS/druid-kafka-indexing-service"
  local stamp; stamp="$ext/.pom-$(cat "$REPO/scripts/maven/druid/pom.xml" "$REPO/scripts/maven/druid-kafka/pom.xml" | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  maven_libs "Druid's Kafka indexing service" "$REPO/scripts/maven/druid-kafka/pom.xml" "$ext.all" \
    -Ddruid.version="$DRUID_VERSION"
  rm -rf "$ext.tmp" && mkdir -p "$ext.tmp"
  local jar
  for jar in "$ext.all"/*.jar; do
    [ -f "$DRUID_LIB/$(basename "$jar")" ] || cp "$jar" "$ext.tmp/"
  done
  rm -rf "$ext" && mv "$ext.tmp" "$ext"
  touch "$stamp"
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# PostgreSQL and MariaDB servers and clients from Debian's packages (installing does not start them).
install_databases() {
  [ -n "$(pg_bin)" ] || apt_install postgresql
  [ -n "$(pg_bin)" ] || die "PostgreSQL's server binaries not found under /usr/lib/postgresql"
  command -v psql >/dev/null || apt_install postgresql-client
  command -v mariadbd >/dev/null || apt_install mariadb-server
  command -v mariadb >/dev/null || apt_install mariadb-client
}

# start_postgres DIR: a cluster of its own (wal_level=logical) on a free port; writes DIR/postgres.env.
# PostgreSQL refuses to run as root: as root it runs as Debian's `postgres` user.
start_postgres() {
  local dir="$1/postgres"; mkdir -p "$dir"
  local bin port; bin="$(pg_bin)"; port=$(free_port)
  local run=()
  if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; run=(runuser -u postgres --); fi
  rm -rf "$dir/data" # what a failed start left
  "${run[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-instructions \
    > "$dir/initdb.log" 2>&1 || { say "initdb failed:"; tail -n 20 "$dir/initdb.log" >&2; return 1; }
  say "starting PostgreSQL on 127.0.0.1:$port (log: $dir/postgres.log)"
  setsid "${run[@]}" "$bin/postgres" -D "$dir/data" -p "$port" \
    -c listen_addresses=127.0.0.1 -c unix_socket_directories="$dir" -c wal_level=logical \
    -c max_wal_senders=20 -c max_replication_slots=20 -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off -c shared_buffers=64MB -c timezone=UTC > "$dir/postgres.log" 2>&1 < /dev/null &
  echo $! > "$dir/pid"
  wait_for PostgreSQL "$dir/postgres.log" "$(cat "$dir/pid")" "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" || return 1
  echo "PG_PORT=$port" > "$1/postgres.env"
}

# start_mariadb DIR: a server of its own (binlog in ROW format) on a free port; writes DIR/mariadb.env.
start_mariadb() {
  local dir="$1/mariadb"; mkdir -p "$dir"
  local port; port=$(free_port)
  local user=()
  if [ "$(id -u)" = 0 ]; then chown mysql "$dir"; user=(--user=mysql); fi
  rm -rf "$dir/data" # what a failed start left
  mariadb-install-db --no-defaults "${user[@]}" --datadir="$dir/data" --skip-test-db \
    --auth-root-authentication-method=socket > "$dir/install.log" 2>&1 \
    || { say "mariadb-install-db failed:"; tail -n 20 "$dir/install.log" >&2; return 1; }
  say "starting MariaDB on 127.0.0.1:$port (log: $dir/mariadb.log)"
  setsid mariadbd --no-defaults "${user[@]}" --datadir="$dir/data" --port="$port" --bind-address=127.0.0.1 \
    --socket="$dir/mariadb.sock" --pid-file="$dir/mariadb.pid" --log-error="$dir/mariadb.log" \
    --log-bin="$dir/data/mariadb-bin" --binlog-format=ROW --binlog-row-image=FULL --server-id=1 \
    --innodb-buffer-pool-size=64M --innodb-flush-log-at-trx-commit=0 --skip-name-resolve \
    --default-time-zone=+00:00 > "$dir/stdout.log" 2>&1 < /dev/null &
  echo $! > "$dir/pid"
  wait_for MariaDB "$dir/mariadb.log" "$(cat "$dir/pid")" mariadb-admin --socket="$dir/mariadb.sock" ping || return 1
  # Debezium's user (https://debezium.io/documentation/reference/stable/connectors/mariadb.html).
  mariadb --socket="$dir/mariadb.sock" < "$REPO/demo/sql/mariadb-debezium-user.sql"
  printf 'MARIADB_PORT=%s\nMARIADB_SOCKET=%s\n' "$port" "$dir/mariadb.sock" > "$1/mariadb.env"
}

# start_connect DIR: a Kafka Connect worker with the Debezium connectors, on the Kafka of DIR;
# writes DIR/connect.env. Connector configs may use ${env:VAR} (EnvVarConfigProvider).
# Plugins are found by their ServiceLoader manifests only (`plugin.discovery=service_load`),
# not by scanning every class of every jar as well (the default, `hybrid_warn`): the worker was
# ready in 2.9 s instead of 6.0-6.5 s, with 3 CPU-s instead of 7. Debezium's connectors and
# transforms and Kafka's own plugins all have manifests (`/connector-plugins` lists the same
# connectors either way); a plugin added to DEBEZIUM_PLUGINS without one would not be found.
start_connect() {
  local dir="$1/connect"; mkdir -p "$dir"
  local kafka; kafka="$(sed -n 's/^KAFKA_BOOTSTRAP=//p' "$1/kafka.env")"
  local port; port=$(free_port)
  cat > "$dir/connect.properties" <<EOF
bootstrap.servers=$kafka
group.id=cdc-sink-connect
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=true
value.converter.schemas.enable=true
config.storage.topic=_connect-configs
offset.storage.topic=_connect-offsets
status.storage.topic=_connect-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
offset.storage.partitions=1
status.storage.partitions=1
offset.flush.interval.ms=5000
listeners=http://127.0.0.1:$port
rest.advertised.host.name=127.0.0.1
rest.advertised.port=$port
plugin.path=$DEBEZIUM_PLUGINS
plugin.discovery=service_load
config.providers=env
config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider
EOF
  write_log4j2 "$dir/log4j2.properties" org.reflections=ERROR org.apache.kafka=WARN
  echo "CONNECT_URL=http://127.0.0.1:$port" > "$dir/url.env"
  run_connect "$1"
}

# run_connect DIR: (re)starts the Kafka Connect worker configured under DIR/connect, with the
# addresses of DIR's servers in its environment for ${env:…} references in connector configs.
run_connect() {
  local dir="$1/connect" url
  url="$(sed -n 's/^CONNECT_URL=//p' "$dir/url.env")"
  say "starting Kafka Connect $CONNECT_VERSION with Debezium $DEBEZIUM_VERSION on ${url#http://} (log: $dir/connect.log)"
  (
    set -a
    for f in "$1"/kafka.env "$1"/postgres.env "$1"/mariadb.env; do [ -f "$f" ] && source "$f"; done
    PG_HOST=127.0.0.1 MARIADB_HOST=127.0.0.1
    set +a
    exec setsid "$(java_home)/bin/java" -Xms256m -Xmx768m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
      -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$CONNECT_LIB/*" \
      org.apache.kafka.connect.cli.ConnectDistributed "$dir/connect.properties" >> "$dir/connect.log" 2>&1 < /dev/null
  ) &
  echo $! > "$dir/pid"
  wait_for "Kafka Connect" "$dir/connect.log" "$(cat "$dir/pid")" curl -sf "$url/connector-plugins" || return 1
  cp "$dir/url.env" "$1/connect.env"
}

# kill_server DIR NAME: SIGKILL, as a crash (no shutdown hooks, nothing flushed).
kill_server() {
  local pidfile="$1/$2/pid"
  [ -f "$pidfile" ] || return 0
  kill -KILL -- "-$(cat "$pidfile")" 2>/dev/null || kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
  rm -f "$pidfile"
}

# Elasticsearch's integ-test distribution (runs on the machine's Java 17), from Maven Central.
fetch_elasticsearch() {
  local home; home="$(es_home)"
  [ -x "$home/bin/elasticsearch" ] && return 0
  install_java_maven
  apt_install unzip
  say "fetching Elasticsearch $ES_VERSION from Maven Central"
  local zipdir="$CACHE/downloads"
  mkdir -p "$zipdir"
  mvn -q -B -Dstyle.color=never dependency:copy -Dartifact="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip" \
    -DoutputDirectory="$zipdir" >&2 || die "could not fetch Elasticsearch from Maven Central (see Maven's output above)"
  if [ "$(id -u)" = 0 ]; then
    id "$ES_USER" >/dev/null 2>&1 || useradd --system --create-home --home-dir "/var/lib/$ES_USER" --shell /usr/sbin/nologin "$ES_USER"
  fi
  local parent; parent="$(dirname "$home")"
  mkdir -p "$parent"
  rm -rf "$home.tmp" && mkdir "$home.tmp"
  unzip -q "$zipdir/elasticsearch-$ES_VERSION.zip" -d "$home.tmp"
  mv "$home.tmp/elasticsearch-$ES_VERSION" "$home" && rmdir "$home.tmp"
  [ "$(id -u)" = 0 ] && chown -R "$ES_USER" "$parent"
  return 0
}

# write_log4j2 FILE LOGGER=LEVEL…: a log4j2 config printing INFO and up to stdout, with the given
# loggers set to their levels.
write_log4j2() {
  local file="$1"; shift
  {
    echo "rootLogger.level = INFO"
    echo "rootLogger.appenderRef.stdout.ref = STDOUT"
    echo "appender.stdout.type = Console"
    echo "appender.stdout.name = STDOUT"
    echo "appender.stdout.layout.type = PatternLayout"
    echo "appender.stdout.layout.pattern = [%d] %p %m (%c)%n"
    local i=0 l
    for l in "$@"; do
      i=$((i + 1))
      echo "logger.l$i.name = ${l%=*}"
      echo "logger.l$i.level = ${l#*=}"
    done
  } > "$file"
}

# wait_for NAME LOG PID COMMAND...: runs COMMAND until it succeeds; on timeout or when PID dies,
# names the server and shows the last lines of its log.
wait_for() {
  local name="$1" log="$2" pid="$3" timeout="${WAIT_TIMEOUT:-180}"; shift 3
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "$name exited while starting; last lines of $log:"; tail -n 30 "$log" >&2; return 1
    fi
    if (( SECONDS - start > timeout )); then
      say "$name did not start within ${timeout}s; last lines of $log:"; tail -n 30 "$log" >&2; return 1
    fi
    sleep 0.5
  done
}

# make_tls DIR: a throwaway CA (DIR/ca.pem) and a certificate for 127.0.0.1 and localhost that it
# signed (DIR/server.pem: the PKCS#8 key, then the certificate), for the test stack's TLS
# listeners. Kept if already there.
make_tls() {
  local d="$1"; mkdir -p "$d"
  [ -s "$d/server.pem" ] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=cdc-sink test CA" \
    -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null || die "openssl could not make the test CA"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$d/san.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 30 -extfile "$d/san.ext" -out "$d/server.crt" 2>/dev/null || die "openssl could not sign the test certificate"
  cat "$d/server.key" "$d/server.crt" > "$d/server.pem"
}

# start_kafka DIR: a single KRaft node on free loopback ports; writes DIR/kafka.env. Besides the
# PLAINTEXT listener it has a SASL_SSL one (SCRAM-SHA-512 over TLS, a certificate of a throwaway
# CA in DIR/tls) with one user, for the secured-connection tests.
# No time retention (`log.retention.ms=-1`): the dead-letter tests' records carry fixed Kafka
# timestamps from 2023 (a copy keeps its record's, and they compare them), and Kafka's retention
# counts from a record's timestamp, so its check (30 s after the start, then every 5 min) deleted
# whatever such records a topic held at that moment, the active segment's too. A test reading a
# dead-letter topic back then found its first nine copies gone; with checks every second, that
# test failed four runs of five, and none of three with this. The demo's broker, started here
# too, keeps its (current) records for good as well.
start_kafka() {
  local dir="$1/kafka"; mkdir -p "$dir"
  local port ctl sport; port=$(free_port); ctl=$(free_port); sport=$(free_port)
  make_tls "$1/tls"
  local scram_user=cdc-sink scram_password
  scram_password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  cat > "$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctl
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctl,SASL_SSL://127.0.0.1:$sport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sport
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$1/tls/server.pem
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
auto.create.topics.enable=true
log.retention.ms=-1
EOF
  write_log4j2 "$dir/log4j2.properties" kafka=WARN org.apache.kafka=WARN kafka.server.KafkaRaftServer=INFO
  # A storage an earlier start in DIR formatted carries that run's cluster id, and this run's
  # format refuses it: each start is a fresh broker on new ports.
  if [ -e "$dir/data/meta.properties" ]; then
    say "removing the Kafka storage an earlier start left in $dir/data"
    rm -rf "$dir/data"
  fi
  # A URL-safe id may start with `-`: passed as `--cluster-id=…`, or the parser takes it for an option.
  local cluster_id
  cluster_id=$(python3 -c 'import uuid,base64; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
  local java; java="$(java_home)/bin/java"
  "$java" -cp "$KAFKA_LIB/*" -Dlog4j2.configurationFile="$dir/log4j2.properties" kafka.tools.StorageTool format \
    --cluster-id="$cluster_id" -c "$dir/server.properties" \
    --add-scram "SCRAM-SHA-512=[name=$scram_user,password=$scram_password]" > "$dir/format.log" 2>&1 \
    || { say "formatting Kafka's storage failed:"; tail -n 20 "$dir/format.log" >&2; return 1; }
  say "starting Kafka $KAFKA_VERSION on 127.0.0.1:$port (log: $dir/kafka.log)"
  setsid "$java" -Xms256m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$KAFKA_LIB/*" \
    kafka.Kafka "$dir/server.properties" > "$dir/kafka.log" 2>&1 < /dev/null &
  echo $! > "$dir/pid"
  wait_for Kafka "$dir/kafka.log" "$(cat "$dir/pid")" \
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" || return 1
  # The broker answers metadata requests once it has registered with its controller.
  wait_for Kafka "$dir/kafka.log" "$(cat "$dir/pid")" grep -q "Kafka Server started" "$dir/kafka.log" || return 1
  cat > "$1/kafka.env" <<EOF
KAFKA_BOOTSTRAP=127.0.0.1:$port
KAFKA_SASL_SSL=127.0.0.1:$sport
KAFKA_SCRAM_USER=$scram_user
KAFKA_SCRAM_PASSWORD=$scram_password
TLS_CA=$1/tls/ca.pem
TLS_SERVER_PEM=$1/tls/server.pem
EOF
}

# start_elasticsearch DIR: a single node on free loopback ports; writes DIR/elasticsearch.env.
# CDCSINK_ES_JAVA_OPTS adds JVM options (scripts/test: the quick compiler only).
start_elasticsearch() {
  local dir="$1/elasticsearch"; mkdir -p "$dir/data" "$dir/logs" "$dir/tmp"
  local home; home="$(es_home)"
  cp -r "$home/config" "$dir/config"
  local port tport; port=$(free_port); tport=$(free_port)
  cat > "$dir/config/elasticsearch.yml" <<EOF
cluster.name: cdc-sink
node.name: cdc-sink-1
discovery.type: single-node
network.host: 127.0.0.1
http.port: $port
transport.port: $tport
path.data: $dir/data
path.logs: $dir/logs
xpack.security.enabled: false
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
EOF
  local run=()
  if [ "$(id -u)" = 0 ]; then
    chown -R "$ES_USER" "$dir"
    run=(runuser -u "$ES_USER" --)
  fi
  say "starting Elasticsearch $ES_VERSION on 127.0.0.1:$port (log: $dir/elasticsearch.log)"
  pushd "$dir" >/dev/null
  setsid env ES_JAVA_HOME="$(java_home)" ES_PATH_CONF="$dir/config" ES_TMPDIR="$dir/tmp" \
    ES_JAVA_OPTS="-Xms1g -Xmx1g -Xlog:disable -Xlog:all=warning:stderr ${CDCSINK_ES_JAVA_OPTS:-}" \
    "${run[@]}" "$home/bin/elasticsearch" > "$dir/elasticsearch.log" 2>&1 < /dev/null &
  echo $! > "$dir/pid"
  popd >/dev/null
  wait_for Elasticsearch "$dir/elasticsearch.log" "$(cat "$dir/pid")" \
    curl -sf "http://127.0.0.1:$port/_cluster/health?wait_for_status=yellow&timeout=1s" || return 1
  echo "ES_URL=http://127.0.0.1:$port" > "$1/elasticsearch.env"
}

# start_druid DIR: the smallest Apache Druid cluster that ingests from the Kafka of DIR and answers
# SQL, all on loopback: ZooKeeper, a coordinator that is also the overlord (it starts the Derby
# metadata store), a broker, a historical and an indexer (tasks run as its threads), with local
# deep storage under DIR/druid. Writes DIR/druid.env (DRUID_URL: the broker, for SQL;
# DRUID_OVERLORD_URL: the coordinator/overlord, for supervisors).
start_druid() {
  local dir="$1/druid"; mkdir -p "$dir"
  local zk derby coord broker hist idx
  zk=$(free_port); derby=$(free_port); coord=$(free_port); broker=$(free_port); hist=$(free_port); idx=$(free_port)
  mkdir -p "$dir/_common" "$dir/zookeeper/data"
  cat > "$dir/_common/common.runtime.properties" <<EOF
druid.extensions.directory=$DRUID_EXTENSIONS
druid.extensions.loadList=["druid-kafka-indexing-service"]
druid.host=127.0.0.1
druid.bindOnHost=true
druid.startup.logging.logProperties=false
druid.zk.service.host=127.0.0.1:$zk
druid.zk.paths.base=/druid
druid.metadata.storage.type=derby
druid.metadata.storage.connector.connectURI=jdbc:derby://127.0.0.1:$derby/$dir/metadata.db;create=true
druid.metadata.storage.connector.host=127.0.0.1
druid.metadata.storage.connector.port=$derby
druid.storage.type=local
druid.storage.storageDirectory=$dir/segments
druid.indexer.logs.type=file
druid.indexer.logs.directory=$dir/indexing-logs
druid.selectors.indexing.serviceName=druid/overlord
druid.selectors.coordinator.serviceName=druid/coordinator
druid.monitoring.monitors=[]
druid.emitter=noop
druid.sql.enable=true
druid.lookup.enableLookupSyncOnStartup=false
druid.processing.buffer.sizeBytes=16MiB
druid.processing.numMergeBuffers=2
druid.processing.numThreads=1
EOF
  cat > "$dir/_common/log4j2.xml" <<'EOF'
<Configuration status="WARN">
  <Appenders>
    <Console name="Console" target="SYSTEM_OUT">
      <PatternLayout pattern="%d{ISO8601} %p [%t] %c - %m%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="warn"><AppenderRef ref="Console"/></Root>
    <Logger name="org.apache.druid.java.util.common.lifecycle.Lifecycle" level="info" additivity="false">
      <AppenderRef ref="Console"/>
    </Logger>
    <Logger name="org.apache.druid.indexing.seekablestream" level="info" additivity="false">
      <AppenderRef ref="Console"/>
    </Logger>
  </Loggers>
</Configuration>
EOF
  local s
  for s in coordinator broker historical indexer; do mkdir -p "$dir/$s/tmp"; done
  printf 'druid.service=druid/coordinator\ndruid.plaintextPort=%s\ndruid.coordinator.startDelay=PT5S\ndruid.coordinator.period=PT5S\ndruid.manager.segments.pollDuration=PT5S\ndruid.coordinator.asOverlord.enabled=true\ndruid.coordinator.asOverlord.overlordService=druid/overlord\ndruid.indexer.queue.startDelay=PT1S\ndruid.indexer.storage.type=metadata\n' \
    "$coord" > "$dir/coordinator/runtime.properties"
  # The broker plans SQL with the columns it last read from the segments, read again every minute
  # by default (`metadataRefreshPeriod`): a column added to a table reached Druid's rows at once
  # and its SQL a minute later, which the live Druid test waited out (80 s; 19 s at PT5S).
  printf 'druid.service=druid/broker\ndruid.plaintextPort=%s\ndruid.broker.http.numConnections=5\ndruid.server.http.numThreads=12\ndruid.sql.planner.metadataRefreshPeriod=PT5S\n' \
    "$broker" > "$dir/broker/runtime.properties"
  printf 'druid.service=druid/historical\ndruid.plaintextPort=%s\ndruid.server.http.numThreads=12\ndruid.segmentCache.locations=[{"path":"%s","maxSize":"2GiB"}]\n' \
    "$hist" "$dir/historical/segment-cache" > "$dir/historical/runtime.properties"
  # One task slot per supervisor, and room: the demo alone runs ten (five tables, two databases).
  printf 'druid.service=druid/indexer\ndruid.plaintextPort=%s\ndruid.worker.capacity=12\ndruid.indexer.task.baseTaskDir=%s\ndruid.indexer.task.restoreTasksOnRestart=true\n' \
    "$idx" "$dir/indexer/task" > "$dir/indexer/runtime.properties"

  local java; java="$(java_home)/bin/java"
  # Druid's Java 17 flags (its docs, "Java runtime": strong encapsulation).
  local flags=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Duser.timezone=UTC -Dfile.encoding=UTF-8
    -Djava.util.logging.manager=org.apache.logging.log4j.jul.LogManager
    --add-exports=java.base/jdk.internal.misc=ALL-UNNAMED --add-exports=java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.ref=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED
    --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED)
  say "starting Apache Druid $DRUID_VERSION: ZooKeeper, coordinator/overlord, broker, historical, indexer (logs: $dir/*/*.log)"
  setsid "$java" -Xms32m -Xmx128m -XX:+UseSerialGC -Dzookeeper.admin.enableServer=false \
    -Dlog4j2.configurationFile="$dir/_common/log4j2.xml" -cp "$DRUID_LIB/*" \
    org.apache.zookeeper.server.ZooKeeperServerMain "$zk" "$dir/zookeeper/data" > "$dir/zookeeper/zookeeper.log" 2>&1 < /dev/null &
  echo $! > "$dir/zookeeper/pid"
  wait_for ZooKeeper "$dir/zookeeper/zookeeper.log" "$(cat "$dir/zookeeper/pid")" \
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $zk), 1)" || return 1
  local heap
  for s in coordinator broker historical indexer; do
    case "$s" in indexer) heap=640m ;; *) heap=384m ;; esac
    setsid "$java" -Xms"$heap" -Xmx"$heap" -XX:MaxDirectMemorySize=256m "${flags[@]}" \
      -Djava.io.tmpdir="$dir/$s/tmp" -cp "$dir/_common:$dir/$s:$DRUID_LIB/*" \
      org.apache.druid.cli.Main server "$s" > "$dir/$s/$s.log" 2>&1 < /dev/null &
    echo $! > "$dir/$s/pid"
  done
  local port
  for s in coordinator broker historical indexer; do
    port=$(sed -n 's/^druid.plaintextPort=//p' "$dir/$s/runtime.properties")
    wait_for "Druid $s" "$dir/$s/$s.log" "$(cat "$dir/$s/pid")" curl -sf "http://127.0.0.1:$port/status/health" || return 1
  done
  # Ready to ingest once the overlord lists the indexer as a worker; ready to query once the
  # broker answers SQL.
  wait_for "Druid's overlord" "$dir/coordinator/coordinator.log" "$(cat "$dir/coordinator/pid")" \
    sh -c "curl -sf http://127.0.0.1:$coord/druid/indexer/v1/workers | grep -q '\"host\"'" || return 1
  wait_for "Druid's broker" "$dir/broker/broker.log" "$(cat "$dir/broker/pid")" \
    curl -sf -H 'Content-Type: application/json' -d '{"query":"SELECT 1"}' "http://127.0.0.1:$broker/druid/v2/sql" || return 1
  printf 'DRUID_URL=http://127.0.0.1:%s\nDRUID_OVERLORD_URL=http://127.0.0.1:%s\n' "$broker" "$coord" > "$1/druid.env"
}

# stop_dir DIR [SERVER...]: stops every server started under DIR, or only those named (their
# whole process groups; Druid's services keep their pid files one level deeper, under DIR/druid).
stop_dir() {
  local d="$1" pidfile pid n; shift
  local which=("$@") pidfiles=()
  [ $# -gt 0 ] || which=("*")
  # shellcheck disable=SC2206 # globs, on purpose
  for n in "${which[@]}"; do pidfiles+=("$d"/$n/pid "$d"/$n/*/pid); done
  for pidfile in "${pidfiles[@]}"; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  # Ten seconds for them all to end, then SIGKILL: one wait of ten seconds each had taken 48 s
  # at the end of a test run.
  local deadline=$((SECONDS + 10))
  for pidfile in "${pidfiles[@]}"; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    while [ "$SECONDS" -lt "$deadline" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
  # Their addresses are no longer good (`servers start` skips a server whose file is there).
  for n in "${which[@]}"; do rm -f "$d"/$n.env; done
}
