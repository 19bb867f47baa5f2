// kafkajs over SASL_SSL with SCRAM-SHA-512: produce, consume with a group, and a login with a
// wrong password. Prints one JSON object for tests/test_sasl.py.
//   node sasl.js HOST:PORT CA_FILE USER PASSWORD TOPIC
"use strict";
const fs = require("fs");
const { Kafka, logLevel } = require("kafkajs");

const [bootstrap, caFile, username, password, topic] = process.argv.slice(2);
const ssl = { ca: [fs.readFileSync(caFile, "utf-8")], rejectUnauthorized: true };

function client(pass) {
  return new Kafka({ clientId: "odradek-kafkajs-sasl", brokers: [bootstrap], logLevel: logLevel.NOTHING, ssl,
                     sasl: { mechanism: "scram-sha-512", username, password: pass },
                     retry: { retries: 2, initialRetryTime: 100 } });
}

async function main() {
  const kafka = client(password);
  const producer = kafka.producer();
  await producer.connect();
  const sent = await producer.send({ topic, messages: [0, 1, 2, 3, 4].map((i) => ({ key: `k${i}`, value: `v${i}` })) });
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: `${topic}-group` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const consumed = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${consumed.length} of 5 messages`)), 30000);
    consumer.run({
      eachMessage: async ({ message }) => {
        consumed.push(message.value.toString());
        if (consumed.length >= 5) {
          clearTimeout(timer);
          resolve();
        }
      },
    }).catch(reject);
  });
  await consumer.disconnect();

  let refused = null;
  const wrong = client(`${password}-wrong`).producer();
  try {
    await wrong.connect();
  } catch (err) {
    refused = { name: err.name, message: err.message };
  }
  console.log(JSON.stringify({ sent: sent.map((r) => r.errorCode), consumed, refused }));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
