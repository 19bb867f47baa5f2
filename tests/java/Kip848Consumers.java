// Several Kafka Java consumers (kafka-clients 4.x) in one group, joining and leaving on a schedule
// while a producer writes, driven by tests/test_consumer_protocol.py and bench/rebalance_bench.py.
//
//   java -cp 'tests/java/lib/*' tests/java/Kip848Consumers.java BOOTSTRAP TOPIC GROUP PROTOCOL RECORDS SCHEDULE [UNTIL]
//
// PROTOCOL is group.protocol: "consumer" (KIP-848) or "classic"; every other setting is the
// client's default (so classic uses Kafka 4's default assignors, range then cooperative-sticky).
// RECORDS values "0".."RECORDS-1" are produced evenly over the schedule's length (0: none; the
// topic is then read as it is). SCHEDULE is one "START-STOP" (ms after start; STOP empty: until
// the end) per consumer, comma separated; UNTIL (ms) keeps them running at least that long. Every poll's records are committed synchronously, and
// revoked partitions' offsets in onPartitionsRevoked, so a graceful handover processes nothing twice.
//
// Prints JSON lines: {"event": "assigned"|"revoked"|"lost", "consumer": i, "partitions": [...],
// "t_ms": ...} as the rebalance listener sees them (one clock for all consumers), then one
// {"event": "processed", "consumer": i, "values": [...]} per consumer, and {"event": "done", ...}.

import com.fasterxml.jackson.databind.ObjectMapper;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class Kip848Consumers {
    static final ObjectMapper JSON = new ObjectMapper();
    static final long T0 = System.nanoTime();
    static final Set<String> SEEN = ConcurrentHashMap.newKeySet();
    static final AtomicBoolean FINISHED = new AtomicBoolean();

    static long now() {
        return (System.nanoTime() - T0) / 1_000_000;
    }

    static synchronized void emit(Object... keyValues) {
        Map<String, Object> line = new LinkedHashMap<>();
        for (int i = 0; i < keyValues.length; i += 2) {
            line.put((String) keyValues[i], keyValues[i + 1]);
        }
        try {
            System.out.println(JSON.writeValueAsString(line));
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
        System.out.flush();
    }

    static List<Integer> partitions(Collection<TopicPartition> tps) {
        List<Integer> out = new ArrayList<>();
        for (TopicPartition tp : tps) out.add(tp.partition());
        out.sort(null);
        return out;
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1], group = args[2], protocol = args[3];
        int records = Integer.parseInt(args[4]);
        String[] schedule = args[5].split(",");
        long length = 0;
        for (String s : schedule) {
            String[] se = s.split("-", -1);
            length = Math.max(length, Long.parseLong(se[0]));
            if (!se[1].isEmpty()) length = Math.max(length, Long.parseLong(se[1]));
        }
        final long produceOver = Math.max(length, 1000);
        if (args.length > 6) length = Math.max(length, Long.parseLong(args[6]));
        Thread producer = new Thread(() -> produce(bootstrap, topic, records, produceOver));
        producer.start();
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < schedule.length; i++) {
            String[] se = schedule[i].split("-", -1);
            long start = Long.parseLong(se[0]);
            long stop = se[1].isEmpty() ? -1 : Long.parseLong(se[1]);
            int id = i;
            Thread t = new Thread(() -> consume(bootstrap, topic, group, protocol, id, start, stop));
            t.start();
            threads.add(t);
        }
        producer.join();
        long deadline = now() + 120_000;
        while ((SEEN.size() < records || now() < length) && now() < deadline) Thread.sleep(50);
        FINISHED.set(true);
        for (Thread t : threads) t.join();
        emit("event", "done", "seen", SEEN.size(), "t_ms", now());
    }

    static void produce(String bootstrap, String topic, int records, long overMs) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("linger.ms", "5");
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < records; i++) {
                producer.send(new ProducerRecord<>(topic, Integer.toString(i), Integer.toString(i)));
                long due = overMs * (i + 1) / records;
                long wait = due - now();
                if (wait > 0) Thread.sleep(wait);
            }
            producer.flush();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    static void consume(String bootstrap, String topic, String group, String protocol, int id, long start, long stop) {
        try {
            while (now() < start) Thread.sleep(10);
        } catch (InterruptedException e) {
            return;
        }
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("group.id", group);
        p.put("client.id", "c" + id);
        p.put("group.protocol", protocol);
        p.put("auto.offset.reset", "earliest");
        p.put("enable.auto.commit", "false");
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        List<String> values = new ArrayList<>();
        Map<TopicPartition, OffsetAndMetadata> pending = new HashMap<>();
        KafkaConsumer<String, String> consumer = new KafkaConsumer<>(p);
        consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
            public void onPartitionsRevoked(Collection<TopicPartition> tps) {
                Map<TopicPartition, OffsetAndMetadata> done = new HashMap<>();
                for (TopicPartition tp : tps) {
                    OffsetAndMetadata o = pending.remove(tp);
                    if (o != null) done.put(tp, o);
                }
                if (!done.isEmpty()) consumer.commitSync(done);
                if (!tps.isEmpty()) emit("event", "revoked", "consumer", id, "partitions", partitions(tps), "t_ms", now());
            }

            public void onPartitionsAssigned(Collection<TopicPartition> tps) {
                if (!tps.isEmpty()) emit("event", "assigned", "consumer", id, "partitions", partitions(tps), "t_ms", now());
            }

            public void onPartitionsLost(Collection<TopicPartition> tps) {
                for (TopicPartition tp : tps) pending.remove(tp);
                if (!tps.isEmpty()) emit("event", "lost", "consumer", id, "partitions", partitions(tps), "t_ms", now());
            }
        });
        try {
            while (!FINISHED.get() && (stop < 0 || now() < stop)) {
                ConsumerRecords<String, String> batch = consumer.poll(Duration.ofMillis(100));
                for (ConsumerRecord<String, String> r : batch) {
                    values.add(r.value());
                    SEEN.add(r.value());
                    pending.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                }
                if (!pending.isEmpty()) {
                    consumer.commitSync(pending);
                    pending.clear();
                }
            }
        } catch (Exception e) {
            emit("event", "error", "consumer", id, "error", e.toString(), "t_ms", now());
        } finally {
            consumer.close();  // revokes (committing) and leaves the group
            emit("event", "closed", "consumer", id, "t_ms", now());
            emit("event", "processed", "consumer", id, "values", values);
        }
    }
}
