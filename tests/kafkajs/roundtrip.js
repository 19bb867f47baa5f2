// kafkajs against a broker: admin, keyed produce with headers and gzip, a consumer group,
// and transactions (commit and abort). Prints one JSON object for tests/test_kafkajs.py.
//   node roundtrip.js HOST:PORT PREFIX
"use strict";
const { Kafka, CompressionTypes, logLevel } = require("kafkajs");

const [bootstrap, prefix] = process.argv.slice(2);
const kafka = new Kafka({ clientId: "odradek-kafkajs", brokers: [bootstrap], logLevel: logLevel.ERROR,
                          retry: { retries: 8, initialRetryTime: 100 } });
const topic = `${prefix}-plain`;
const txnTopic = `${prefix}-txn`;
const group = `${prefix}-group`;
const KEYS = ["alice", "bob", "carol", "dave"];
const PER_KEY = 25;

async function consumeAll(groupId, topicName, expected, options = {}) {
  const consumer = kafka.consumer({ groupId, ...options });
  await consumer.connect();
  await consumer.subscribe({ topic: topicName, fromBeginning: true });
  const got = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${expected} messages from ${topicName}`)),
                             30000);
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        got.push({
          partition,
          offset: Number(message.offset),
          key: message.key ? message.key.toString() : null,
          value: message.value.toString(),
          headers: Object.fromEntries(Object.entries(message.headers || {}).map(([k, v]) => [k, v.toString()])),
          timestamp: Number(message.timestamp),
        });
        if (got.length >= expected) {
          clearTimeout(timer);
          resolve();
        }
      },
    }).catch(reject);
  });
  // a short wait: nothing more may arrive (aborted records must never show up)
  await new Promise((r) => setTimeout(r, 1000));
  await consumer.disconnect();
  return got;
}

async function main() {
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: 3 }, { topic: txnTopic, numPartitions: 2 }], waitForLeaders: true,
  });
  const metadata = await admin.fetchTopicMetadata({ topics: [topic] });

  const producer = kafka.producer();
  await producer.connect();
  const sent = [];
  const before = Date.now();
  for (let i = 0; i < PER_KEY; i++) {
    const acks = await producer.send({
      topic,
      compression: i % 2 ? CompressionTypes.GZIP : CompressionTypes.None,
      messages: KEYS.map((k) => ({ key: k, value: `${k}-${i}`, headers: { source: "kafkajs", seq: String(i) } })),
    });
    sent.push(...acks.map((a) => ({ partition: a.partition, baseOffset: Number(a.baseOffset), error: a.errorCode })));
  }
  await producer.disconnect();

  const consumed = await consumeAll(group, topic, KEYS.length * PER_KEY);
  const committed = await admin.fetchOffsets({ groupId: group, topics: [topic] });

  const txProducer = kafka.producer({ transactionalId: `${prefix}-tid`, idempotent: true, maxInFlightRequests: 1 });
  await txProducer.connect();
  let txn = await txProducer.transaction();
  await txn.send({ topic: txnTopic, messages: [0, 1, 2].map((i) => ({ key: `k${i}`, value: `committed-${i}` })) });
  await txn.commit();
  txn = await txProducer.transaction();
  await txn.send({ topic: txnTopic, messages: [0, 1, 2].map((i) => ({ key: `k${i}`, value: `aborted-${i}` })) });
  await txn.abort();
  txn = await txProducer.transaction();
  await txn.send({ topic: txnTopic, messages: [{ key: "k9", value: "committed-last" }] });
  await txn.commit();
  await txProducer.disconnect();

  const readCommitted = await consumeAll(`${group}-rc`, txnTopic, 4);
  const readUncommitted = await consumeAll(`${group}-ru`, txnTopic, 7, { readUncommitted: true });
  const groups = await admin.listGroups();
  await admin.disconnect();

  console.log(JSON.stringify({
    created,
    partitions: metadata.topics[0].partitions.length,
    sent,
    before,
    consumed,
    committed: committed[0].partitions.map((p) => ({ partition: p.partition, offset: Number(p.offset) })),
    readCommitted: readCommitted.map((m) => m.value),
    readUncommitted: readUncommitted.map((m) => m.value),
    groups: groups.groups.map((g) => g.groupId),
  }));
}

main().then(() => process.exit(0), (err) => {
  console.error(`kafkajs failed: ${err.stack || err}`);
  process.exit(1);
});
