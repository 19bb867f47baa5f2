#!/usr/bin/env bash
# librdkafka's own regression suite against odradek (issue 21).
#
# The source comes from the npm registry: node-rdkafka's package carries librdkafka's whole tree,
# tests/ included (node-rdkafka 3.6.1 = librdkafka 2.12.0). It is built without TLS/SASL, and the
# suite runs in quick mode (-Q) against one odradek broker with num.partitions=4, as its harness
# expects. Tests that need Kafka's shell scripts (KAFKA_PATH), more than one broker or TLS/SASL
# skip themselves; the summary lists PASSED / FAILED / SKIPPED per test.
#
#   bash bench/librdkafka_suite.sh [TESTS]     # e.g. TESTS=0011 for one test; default: all
#
# Work files live in .bench/librdkafka (the build is kept between runs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/.bench/librdkafka
NODE_RDKAFKA=${NODE_RDKAFKA:-3.6.1}
mkdir -p "$WORK"

SRC=$WORK/package/deps/librdkafka
if [ ! -x "$SRC/tests/test-runner" ]; then
  (cd "$WORK" && rm -rf package node-rdkafka-*.tgz && npm pack "node-rdkafka@$NODE_RDKAFKA" --silent >/dev/null \
    && tar xzf node-rdkafka-*.tgz)
  (cd "$SRC" && ./configure --disable-ssl --disable-gssapi --disable-sasl --disable-curl --disable-zstd \
     --disable-lz4-ext >"$WORK/configure.log" 2>&1 && make -j2 libs >"$WORK/make.log" 2>&1 \
     && make -j2 -C tests build >>"$WORK/make.log" 2>&1)
fi

# KAFKA_PATH for the tests that call Kafka's scripts: bin/*.sh running Kafka's own tool classes
# from tests/java/lib (./dev test fetches them from Maven Central).
KAFKA_PATH=$WORK/kafka
mkdir -p "$KAFKA_PATH/bin"
for tool in kafka-topics.sh:org.apache.kafka.tools.TopicCommand kafka-acls.sh:org.apache.kafka.tools.AclCommand \
            kafka-configs.sh:kafka.admin.ConfigCommand; do
  printf '#!/bin/sh\nexec java -Xmx256m -cp "%s/tests/java/lib/*" %s "$@"\n' "$ROOT" "${tool#*:}" \
    >"$KAFKA_PATH/bin/${tool%%:*}"
  chmod +x "$KAFKA_PATH/bin/${tool%%:*}"
done
export KAFKA_PATH

[ -x .venv/bin/odradek ] || ./dev test --collect-only -q >/dev/null
PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DATA=$(mktemp -d)
# The StandardAuthorizer with allow.everyone.if.no.acl.found: the ACL tests (0109, 0115) deny a
# topic with kafka-acls.sh, everything else is allowed as with no authorizer.
printf '%s\n' num.partitions=4 auto.create.topics.enable=true \
  authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer \
  allow.everyone.if.no.acl.found=true >"$DATA.properties"
.venv/bin/odradek serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --config "$DATA.properties" >"$WORK/broker.log" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null; wait $BROKER 2>/dev/null; rm -rf "$DATA" "$DATA.properties"' EXIT
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done

printf 'bootstrap.servers=127.0.0.1:%s\ntest.timeout.multiplier=2\n' "$PORT" >"$SRC/tests/test.conf"
cd "$SRC/tests"
start=$(date +%s)
set +e
# A Kafka 3.x+ broker for the harness: its scripts take --bootstrap-server (BROKERS), not ZooKeeper.
export BROKERS=127.0.0.1:$PORT TEST_KAFKA_VERSION=${TEST_KAFKA_VERSION:-3.9.0}
TESTS=${1:-${TESTS:-}} ./run-test.sh -Q -E -p1 >"$WORK/suite.log" 2>&1
rc=$?
set -e
echo "librdkafka $(grep -m1 'define RD_KAFKA_VERSION' ../src/rdkafka.h | awk '{print $3}') suite rc=$rc in $(( $(date +%s) - start )) s"
table=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/suite.log" | grep -aE '^\| [0-9]{4}_')
echo "$table" | awk -F'|' '{gsub(/ /,"",$3); print $3}' | sort | uniq -c
echo "$table" | grep -a FAILED || true
echo "full log: $WORK/suite.log, broker log: $WORK/broker.log"
