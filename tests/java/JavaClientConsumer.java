// Kafka's Java consumer (kafka-clients, the classic group protocol) against odradek, driven by
// tests/test_java_client.py.
//
//   java -cp "OUT:tests/java/lib/*" JavaClientConsumer BOOTSTRAP PREFIX SCENARIO...
//
// (OUT holds this file compiled with ClientScenarios.java, which runs the scenarios.) Each
// scenario makes its own topics and groups (named PREFIX-...), produces what it reads, and
// prints JSON lines {"scenario": ..., ...}; a scenario that throws prints {"scenario": ...,
// "error": ...} and the next one still runs.
//
// Scenarios: commit, seek, pause, cooperative, static.

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.BooleanSupplier;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.WakeupException;

public class JavaClientConsumer extends ClientScenarios {
    public static void main(String[] args) throws Exception {
        runScenarios(args, Map.of("commit", JavaClientConsumer::commit, "seek", JavaClientConsumer::seek,
                "pause", JavaClientConsumer::pause, "cooperative", JavaClientConsumer::cooperative,
                "static", JavaClientConsumer::staticMembership));
    }

    // -- helpers -------------------------------------------------------------------------

    static KafkaConsumer<String, String> consumer(String group, Object... keyValues) {
        return consumer(props("group.id", group, "auto.offset.reset", "earliest", "enable.auto.commit", "false"),
                keyValues);
    }

    /** A topic with `perPartition` records "p<partition>-<i>" in each partition, timestamps given by `timestamp`. */
    static String topicWithRecords(String suffix, int partitions, int perPartition, long baseTimestamp) throws Exception {
        String topic = createTopic(suffix, partitions);
        try (KafkaProducer<String, String> producer = producer(props(), "linger.ms", 5)) {
            for (int i = 0; i < perPartition; i++) {
                for (int part = 0; part < partitions; part++) {
                    Long ts = baseTimestamp > 0 ? baseTimestamp + i * 1000L : null;
                    producer.send(new ProducerRecord<>(topic, part, ts, "k" + i, "p" + part + "-" + i));
                }
            }
        }
        return topic;
    }

    static void waitFor(String what, BooleanSupplier condition) throws Exception {
        long deadline = System.currentTimeMillis() + 30_000;
        while (!condition.getAsBoolean()) {
            if (System.currentTimeMillis() > deadline) {
                throw new IllegalStateException("timed out waiting for " + what);
            }
            Thread.sleep(20);
        }
    }

    /** Polls until `n` records came, or 20 s passed. */
    static List<ConsumerRecord<String, String>> pollFor(KafkaConsumer<String, String> c, int n) {
        List<ConsumerRecord<String, String>> got = new ArrayList<>();
        long deadline = System.currentTimeMillis() + 20_000;
        while (got.size() < n && System.currentTimeMillis() < deadline) {
            for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(100))) {
                got.add(r);
            }
        }
        return got;
    }

    static Map<Integer, Long> committed(KafkaConsumer<String, String> c, String topic, int n) {
        Map<Integer, Long> out = new TreeMap<>();
        c.committed(new java.util.HashSet<>(partitions(topic, n))).forEach((tp, om) -> {
            if (om != null) {
                out.put(tp.partition(), om.offset());
            }
        });
        return out;
    }

    static List<Integer> numbers(Collection<TopicPartition> tps) {
        List<Integer> out = new ArrayList<>();
        for (TopicPartition tp : tps) {
            out.add(tp.partition());
        }
        out.sort(null);
        return out;
    }

    /**
     * A group member polling on its own thread, recording what its ConsumerRebalanceListener is
     * told: ["assigned", [partitions]] and ["revoked", [partitions]] in order.
     */
    static final class Member implements ConsumerRebalanceListener {
        final KafkaConsumer<String, String> consumer;
        final List<List<Object>> events = new CopyOnWriteArrayList<>();
        final AtomicReference<Set<Integer>> owned = new AtomicReference<>(Set.of());
        final Thread thread;
        volatile boolean stop;
        volatile int records;

        Member(String group, String topic, Object... config) {
            Object[] all = Arrays.copyOf(config, config.length + 2);
            all[config.length] = "heartbeat.interval.ms";  // hears of a rebalance sooner than the default 3 s
            all[config.length + 1] = 300;
            consumer = consumer(group, all);
            consumer.subscribe(List.of(topic), this);
            thread = new Thread(this::run);
            thread.start();
        }

        void run() {
            try {
                while (!stop) {
                    records += consumer.poll(Duration.ofMillis(100)).count();
                }
            } catch (WakeupException e) {
                // close() below
            } finally {
                consumer.close();
            }
        }

        void close() throws InterruptedException {
            stop = true;
            consumer.wakeup();
            thread.join();
        }

        Set<Integer> owned() {
            return owned.get();
        }

        @Override
        public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
            told("assigned", partitions, true);
        }

        @Override
        public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
            told("revoked", partitions, false);
        }

        /** Records the event, and the partitions as now owned (`assigned`) or no longer. */
        void told(String event, Collection<TopicPartition> partitions, boolean assigned) {
            events.add(List.of(event, numbers(partitions)));
            Set<Integer> now = new TreeSet<>(owned.get());
            if (assigned) {
                now.addAll(numbers(partitions));
            } else {
                now.removeAll(numbers(partitions));
            }
            owned.set(now);
        }

        @Override
        public void onPartitionsLost(Collection<TopicPartition> partitions) {
            events.add(List.of("lost", numbers(partitions)));
            owned.set(Set.of());
        }
    }

    static Map<String, Object> describeGroup(String group) throws Exception {
        try (Admin admin = Admin.create(props())) {
            ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).describedGroups().get(group).get();
            List<Map<String, Object>> members = new ArrayList<>();
            d.members().forEach(m -> members.add(Map.of(
                    "instanceId", m.groupInstanceId().orElse(""),
                    "partitions", numbers(m.assignment().topicPartitions()))));
            return Map.of("state", d.groupState().toString(), "assignor", d.partitionAssignor(), "members", members);
        }
    }

    // -- scenarios -----------------------------------------------------------------------

    /**
     * subscribe + commitSync of an explicit offset, then commitAsync of the positions (its
     * callback awaited), then a second member of the group resumes where the commits say.
     */
    static void commit() throws Exception {
        String topic = topicWithRecords("commit", 3, 10, 0);
        String group = prefix + "-commit-group";
        try (KafkaConsumer<String, String> c = consumer(group)) {
            c.subscribe(List.of(topic));
            List<ConsumerRecord<String, String>> first = pollFor(c, 30);
            TopicPartition p0 = new TopicPartition(topic, 0);
            c.commitSync(Map.of(p0, new OffsetAndMetadata(4, "sync-meta")));
            Map<Integer, Long> afterSync = committed(c, topic, 3);
            String metadata = c.committed(Set.of(p0)).get(p0).metadata();
            AtomicReference<String> callback = new AtomicReference<>();
            c.commitAsync((offsets, exception) -> callback.set(exception == null ? "ok:" + offsets.size() : exception.toString()));
            long deadline = System.currentTimeMillis() + 10_000;
            while (callback.get() == null && System.currentTimeMillis() < deadline) {
                c.poll(Duration.ofMillis(50));
            }
            emit("commit", "topic", topic, "firstRead", first.size(), "afterSync", afterSync, "metadata", metadata,
                    "asyncCallback", callback.get(), "afterAsync", committed(c, topic, 3));
        }
        try (KafkaProducer<String, String> producer = producer(props())) {
            for (int part = 0; part < 3; part++) {
                producer.send(new ProducerRecord<>(topic, part, "later", "later-" + part));
            }
        }
        try (KafkaConsumer<String, String> c = consumer(group)) {
            c.subscribe(List.of(topic));
            List<String> resumed = values(pollFor(c, 3));
            resumed.sort(null);
            emit("commit", "resumed", resumed);
        }
    }

    /** assign + seek, seekToBeginning/End, position, beginningOffsets/endOffsets and offsetsForTimes. */
    static void seek() throws Exception {
        long base = System.currentTimeMillis() - 3_600_000;
        String topic = topicWithRecords("seek", 1, 20, base);
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaConsumer<String, String> c = consumer(prefix + "-seek-unused")) {
            c.assign(List.of(tp));
            c.seek(tp, 7);
            List<ConsumerRecord<String, String>> fromSeven = pollFor(c, 13);
            c.seekToBeginning(List.of(tp));
            long beginning = c.position(tp);
            c.seekToEnd(List.of(tp));
            long end = c.position(tp);
            Map<TopicPartition, OffsetAndTimestamp> times = c.offsetsForTimes(Map.of(tp, base + 5_500));
            OffsetAndTimestamp at = times.get(tp);
            Map<TopicPartition, OffsetAndTimestamp> future = c.offsetsForTimes(Map.of(tp, base + 3_600_000 * 2));
            c.seek(tp, at.offset());
            ConsumerRecord<String, String> there = pollFor(c, 1).get(0);
            emit("seek", "topic", topic, "firstOffset", fromSeven.get(0).offset(), "values", values(fromSeven),
                    "beginning", beginning, "end", end,
                    "beginningOffsets", c.beginningOffsets(List.of(tp)).get(tp),
                    "endOffsets", c.endOffsets(List.of(tp)).get(tp),
                    "forTimeOffset", at.offset(), "forTimeTimestamp", at.timestamp() - base,
                    "futureIsNull", future.get(tp) == null, "seekedValue", there.value(),
                    "seekedTimestamp", there.timestamp() - base);
        }
    }

    /** Two assigned partitions, one paused: polls return only the other until it is resumed. */
    static void pause() throws Exception {
        String topic = topicWithRecords("pause", 2, 10, 0);
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        try (KafkaConsumer<String, String> c = consumer(prefix + "-pause-unused")) {
            c.assign(List.of(p0, p1));
            c.pause(List.of(p1));
            List<ConsumerRecord<String, String>> whilePaused = pollFor(c, 10);
            for (int i = 0; i < 5; i++) {  // more polls: still nothing from the paused partition
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(100))) {
                    whilePaused.add(r);
                }
            }
            List<Integer> paused = numbers(c.paused());
            c.resume(List.of(p1));
            List<ConsumerRecord<String, String>> afterResume = pollFor(c, 10);
            emit("pause", "topic", topic, "whilePaused", values(whilePaused), "paused", paused,
                    "afterResume", values(afterResume), "pausedAfterResume", numbers(c.paused()));
        }
    }

    /**
     * The cooperative-sticky assignor (KIP-429): a second member joins a group whose first member
     * owns all four partitions; the first gives up only the partitions that move.
     */
    static void cooperative() throws Exception {
        String topic = topicWithRecords("coop", 4, 5, 0);
        String group = prefix + "-coop-group";
        Object[] config = {"partition.assignment.strategy",
                "org.apache.kafka.clients.consumer.CooperativeStickyAssignor", "client.id", "first"};
        Member a = new Member(group, topic, config);
        waitFor("the first member to own 4 partitions", () -> a.owned().size() == 4);
        config[3] = "second";
        Member b = new Member(group, topic, config);
        waitFor("two members with 2 partitions each",
                () -> a.owned().size() == 2 && b.owned().size() == 2 && a.records + b.records >= 20);
        Map<String, Object> described = describeGroup(group);
        emit("cooperative", "topic", topic, "first", a.events, "second", b.events,
                "firstOwns", a.owned(), "secondOwns", b.owned(), "records", a.records + b.records,
                "group", described);
        b.close();
        a.close();
    }

    /**
     * Static membership (KIP-345): members with group.instance.id; one is closed and a new
     * consumer with the same id comes back within the session timeout. It gets the partitions it
     * had, and the other member sees no rebalance.
     */
    static void staticMembership() throws Exception {
        String topic = topicWithRecords("static", 4, 5, 0);
        String group = prefix + "-static-group";
        Member a = new Member(group, topic, "group.instance.id", "member-a", "session.timeout.ms", 30_000);
        waitFor("member-a to own 4 partitions", () -> a.owned().size() == 4);
        Member b = new Member(group, topic, "group.instance.id", "member-b", "session.timeout.ms", 30_000);
        waitFor("two members with 2 partitions each", () -> a.owned().size() == 2 && b.owned().size() == 2);
        Set<Integer> aBefore = a.owned();
        Set<Integer> bBefore = b.owned();
        int bEventsBefore = b.events.size();
        a.close();
        Map<String, Object> whileAway = describeGroup(group);
        Member again = new Member(group, topic, "group.instance.id", "member-a", "session.timeout.ms", 30_000);
        waitFor("member-a back with partitions", () -> !again.owned().isEmpty());
        Thread.sleep(1_000);  // a rebalance, were there one, would reach member-b within this second
        emit("static", "topic", topic, "aBefore", aBefore, "bBefore", bBefore, "aAfter", again.owned(),
                "bAfter", b.owned(), "bEventsBefore", bEventsBefore, "bEventsAfter", b.events.size(),
                "bEvents", b.events, "againEvents", again.events, "whileAway", whileAway,
                "after", describeGroup(group));
        again.close();
        b.close();
    }
}
