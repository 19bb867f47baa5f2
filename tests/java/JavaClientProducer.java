// Kafka's Java producer (kafka-clients) against odradek, driven by tests/test_java_client.py.
//
//   java -cp "OUT:tests/java/lib/*" JavaClientProducer BOOTSTRAP PREFIX SCENARIO...
//
// (OUT holds this file compiled with ClientScenarios.java, which runs the scenarios.) Each
// scenario makes its own topics (named PREFIX-...), runs, and prints JSON lines
// {"scenario": ..., ...}; a scenario that throws prints {"scenario": ..., "error": ...} and the
// next one still runs. The test asserts on what is printed (and reads the topics itself).
//
// Scenarios: acks, idempotence, compression, headers, partitioner, transactions.

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Future;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ProducerState;
import org.apache.kafka.clients.admin.TransactionListing;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.Partitioner;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Cluster;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;

public class JavaClientProducer extends ClientScenarios {
    public static void main(String[] args) throws Exception {
        runScenarios(args, Map.of("acks", JavaClientProducer::acks, "idempotence", JavaClientProducer::idempotence,
                "compression", JavaClientProducer::compression, "headers", JavaClientProducer::headers,
                "partitioner", JavaClientProducer::partitioner, "transactions", JavaClientProducer::transactions));
    }

    // -- helpers -------------------------------------------------------------------------

    static KafkaProducer<String, String> producer(Object... keyValues) {
        return producer(props(), keyValues);
    }

    static KafkaConsumer<String, String> consumer(Object... keyValues) {
        return consumer(props("group.id", prefix + "-reader-" + System.nanoTime(), "auto.offset.reset", "earliest",
                "enable.auto.commit", "false"), keyValues);
    }

    /** Everything in `partitions` of `topic` up to their end offsets (as this consumer's isolation sees them). */
    static List<ConsumerRecord<String, String>> readAll(KafkaConsumer<String, String> c, String topic, int partitions) {
        List<TopicPartition> tps = partitions(topic, partitions);
        c.assign(tps);
        c.seekToBeginning(tps);
        Map<TopicPartition, Long> ends = c.endOffsets(tps);
        List<ConsumerRecord<String, String>> got = new ArrayList<>();
        long deadline = System.currentTimeMillis() + 20_000;
        while (System.currentTimeMillis() < deadline) {
            boolean done = true;
            for (TopicPartition tp : tps) {
                done &= c.position(tp) >= ends.get(tp);
            }
            if (done) {
                break;
            }
            for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                got.add(r);
            }
        }
        return got;
    }

    static List<Long> offsets(List<Future<RecordMetadata>> sent) throws Exception {
        List<Long> out = new ArrayList<>();
        for (Future<RecordMetadata> f : sent) {
            out.add(f.get().offset());
        }
        return out;
    }

    // -- scenarios -----------------------------------------------------------------------

    /** Five records with each of acks=0, 1 and all into one partition; the offsets the producer learnt. */
    static void acks() throws Exception {
        String topic = createTopic("acks", 1);
        for (String acks : List.of("0", "1", "all")) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            try (KafkaProducer<String, String> p = producer("acks", acks, "enable.idempotence", acks.equals("all"))) {
                for (int i = 0; i < 5; i++) {
                    sent.add(p.send(new ProducerRecord<>(topic, "acks" + acks + "-" + i)));
                }
                p.flush();
            }
            emit("acks", "acks", acks, "topic", topic, "offsets", offsets(sent));
        }
    }

    /** 200 records from an idempotent producer (5 requests in flight), and what DescribeProducers says of it. */
    static void idempotence() throws Exception {
        String topic = createTopic("idempotent", 1);
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<String, String> p = producer("enable.idempotence", true, "acks", "all",
                "max.in.flight.requests.per.connection", 5, "batch.size", 200, "linger.ms", 0)) {
            for (int i = 0; i < 200; i++) {
                sent.add(p.send(new ProducerRecord<>(topic, "idem-" + i)));
            }
            p.flush();
        }
        List<Map<String, Object>> producers = new ArrayList<>();
        try (Admin admin = Admin.create(props())) {
            TopicPartition tp = new TopicPartition(topic, 0);
            for (ProducerState s : admin.describeProducers(List.of(tp)).partitionResult(tp).get().activeProducers()) {
                producers.add(Map.of("producerId", s.producerId(), "epoch", s.producerEpoch(),
                        "lastSequence", s.lastSequence()));
            }
        }
        emit("idempotence", "topic", topic, "offsets", offsets(sent), "producers", producers);
    }

    /** 100 records per codec, each codec its own topic, read back by the Java consumer. */
    static void compression() throws Exception {
        for (String codec : List.of("gzip", "snappy", "lz4", "zstd")) {
            String topic = createTopic(codec, 1);
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            try (KafkaProducer<String, String> p = producer("compression.type", codec, "linger.ms", 100,
                    "batch.size", 1 << 20)) {
                for (int i = 0; i < 100; i++) {
                    sent.add(p.send(new ProducerRecord<>(topic, "k" + i, codec + "-" + i + "-" + "x".repeat(100))));
                }
                p.flush();
            }
            List<String> read;
            try (KafkaConsumer<String, String> c = consumer()) {
                read = values(readAll(c, topic, 1));
            }
            emit("compression", "codec", codec, "topic", topic, "offsets", offsets(sent), "read", read);
        }
    }

    /** Headers (repeated keys, a null value, binary bytes), a null key and a null value (tombstone). */
    static void headers() throws Exception {
        String topic = createTopic("headers", 1);
        try (KafkaProducer<String, String> p = producer()) {
            RecordHeaders h = new RecordHeaders();
            h.add("trace", "abc-123".getBytes(StandardCharsets.UTF_8));
            h.add("dup", "1".getBytes(StandardCharsets.UTF_8));
            h.add("dup", "2".getBytes(StandardCharsets.UTF_8));
            h.add("empty", null);
            h.add("bytes", new byte[] {0, (byte) 0xff, 10});
            p.send(new ProducerRecord<>(topic, null, "k1", "with-headers", h)).get();
            p.send(new ProducerRecord<>(topic, null, null, "no-key")).get();
            p.send(new ProducerRecord<>(topic, null, "k1", null)).get();
        }
        try (KafkaConsumer<String, String> c = consumer()) {
            for (ConsumerRecord<String, String> r : readAll(c, topic, 1)) {
                List<List<Object>> headers = new ArrayList<>();
                for (Header header : r.headers()) {
                    headers.add(Arrays.asList(header.key(), header.value() == null ? null : toUnsigned(header.value())));
                }
                emit("headers", "topic", topic, "offset", r.offset(), "key", r.key(), "value", r.value(),
                        "headers", headers);
            }
        }
    }

    static List<Integer> toUnsigned(byte[] bytes) {
        List<Integer> out = new ArrayList<>();
        for (byte b : bytes) {
            out.add(b & 0xff);
        }
        return out;
    }

    /** Sends "vip-*" keys to partition 0 and every other key by its length to the others. */
    public static class VipPartitioner implements Partitioner {
        @Override
        public int partition(String topic, Object key, byte[] keyBytes, Object value, byte[] valueBytes, Cluster cluster) {
            int n = cluster.partitionCountForTopic(topic);
            String k = (String) key;
            return k.startsWith("vip-") ? 0 : 1 + k.length() % (n - 1);
        }

        @Override
        public void close() {}

        @Override
        public void configure(Map<String, ?> configs) {}
    }

    /** Keyed records through the default partitioner (murmur2) and through VipPartitioner. */
    static void partitioner() throws Exception {
        String topic = createTopic("partitioned", 6);
        Map<String, Integer> byDefault = new LinkedHashMap<>();
        try (KafkaProducer<String, String> p = producer()) {
            for (int i = 0; i < 40; i++) {
                String key = "key-" + i;
                byDefault.put(key, p.send(new ProducerRecord<>(topic, key, "default-" + i)).get().partition());
            }
        }
        String custom = createTopic("custom-partitioned", 4);
        Map<String, Integer> byCustom = new LinkedHashMap<>();
        try (KafkaProducer<String, String> p = producer("partitioner.class", VipPartitioner.class)) {
            for (String key : List.of("vip-a", "vip-bb", "x", "yy", "zzz", "wwww", "vip-c")) {
                byCustom.put(key, p.send(new ProducerRecord<>(custom, key, "custom-" + key)).get().partition());
            }
        }
        emit("partitioner", "topic", topic, "default", byDefault, "customTopic", custom, "custom", byCustom);
    }

    /**
     * Consume-transform-produce: the records of an input topic are read by a group member and
     * written upper-cased to an output topic in one transaction with the group's offsets
     * (sendOffsetsToTransaction); then a transaction is aborted and one more committed. Prints
     * what read_committed and read_uncommitted consumers see, the group's committed offsets and
     * the transaction as ListTransactions shows it.
     */
    static void transactions() throws Exception {
        String in = createTopic("txn-in", 2);
        String out = createTopic("txn-out", 2);
        String group = prefix + "-txn-group";
        String txnId = prefix + "-txn";
        try (KafkaProducer<String, String> p = producer()) {
            for (int i = 0; i < 10; i++) {
                p.send(new ProducerRecord<>(in, i % 2, "k" + i, "in-" + i));
            }
        }
        try (KafkaProducer<String, String> tp = producer("transactional.id", txnId);
             KafkaConsumer<String, String> c = consumer("group.id", group, "isolation.level", "read_committed")) {
            tp.initTransactions();
            c.subscribe(List.of(in));
            List<ConsumerRecord<String, String>> batch = new ArrayList<>();
            long deadline = System.currentTimeMillis() + 20_000;
            while (batch.size() < 10 && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    batch.add(r);
                }
            }
            tp.beginTransaction();
            Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
            for (ConsumerRecord<String, String> r : batch) {
                tp.send(new ProducerRecord<>(out, r.partition(), r.key(), r.value().toUpperCase()));
                offsets.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
            }
            tp.sendOffsetsToTransaction(offsets, c.groupMetadata());
            tp.commitTransaction();

            tp.beginTransaction();
            for (int i = 0; i < 3; i++) {
                tp.send(new ProducerRecord<>(out, i % 2, "a" + i, "aborted-" + i));
            }
            tp.flush();
            tp.abortTransaction();

            tp.beginTransaction();
            tp.send(new ProducerRecord<>(out, 0, "last", "after-abort"));
            tp.commitTransaction();
            emit("transactions", "consumed", batch.size());
        }
        List<String> committed;
        List<String> uncommitted;
        try (KafkaConsumer<String, String> c = consumer("isolation.level", "read_committed")) {
            committed = values(readAll(c, out, 2));
        }
        try (KafkaConsumer<String, String> c = consumer("isolation.level", "read_uncommitted")) {
            uncommitted = values(readAll(c, out, 2));
        }
        Map<String, Long> groupOffsets = new HashMap<>();
        List<Map<String, Object>> listed = new ArrayList<>();
        try (Admin admin = Admin.create(props())) {
            admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get()
                    .forEach((tp, om) -> groupOffsets.put(tp.toString(), om.offset()));
            for (TransactionListing t : admin.listTransactions().all().get()) {
                if (t.transactionalId().equals(txnId)) {
                    listed.add(Map.of("transactionalId", t.transactionalId(), "producerId", t.producerId(),
                            "state", t.state().toString()));
                }
            }
        }
        emit("transactions", "out", out, "readCommitted", committed, "readUncommitted", uncommitted,
                "groupOffsets", groupOffsets, "listed", listed);
    }
}
