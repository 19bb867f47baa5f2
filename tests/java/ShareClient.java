import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListGroupsOptions;
import org.apache.kafka.clients.admin.ListShareGroupOffsetsSpec;
import org.apache.kafka.clients.admin.ShareGroupDescription;
import org.apache.kafka.clients.admin.ShareMemberDescription;
import org.apache.kafka.clients.admin.SharePartitionOffsetInfo;
import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicIdPartition;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * KIP-932 share groups with Kafka's own KafkaShareConsumer and Admin, for tests/test_share_groups.py.
 * Usage: ShareClient <bootstrap> <scenario> <args...>; prints one JSON line per result, flushed at once
 * (the restart scenario is read while it runs).
 */
public class ShareClient {
    static String bootstrap;

    public static void main(String[] args) throws Exception {
        bootstrap = args[0];
        String scenario = args[1];
        try {
            switch (scenario) {
                case "config" -> config(args[2], args[3], args[4]);
                case "work" -> work(args[2], args[3], Integer.parseInt(args[4]), Integer.parseInt(args[5]));
                case "bench" -> bench(args[2], args[3], Integer.parseInt(args[4]), Integer.parseInt(args[5]));
                case "acks" -> acks(args[2], args[3], Integer.parseInt(args[4]));
                case "lock" -> lock(args[2], args[3], Integer.parseInt(args[4]));
                case "restart" -> restart(args[2], args[3], Integer.parseInt(args[4]));
                case "admin" -> admin(args[2], args[3]);
                case "offsets" -> offsets(args[2], args[3], Long.parseLong(args[4]));
                default -> throw new IllegalArgumentException(scenario);
            }
        } catch (Exception e) {
            emit(scenario, Map.of("error", e.toString()));
            e.printStackTrace();
        }
        System.exit(0);
    }

    static synchronized void emit(String scenario, Map<String, Object> fields) {
        StringBuilder sb = new StringBuilder("{\"scenario\":").append(json(scenario));
        for (Map.Entry<String, Object> e : fields.entrySet()) {
            sb.append(',').append(json(e.getKey())).append(':').append(json(e.getValue()));
        }
        System.out.println(sb.append('}'));
        System.out.flush();
    }

    static String json(Object o) {
        if (o == null) return "null";
        if (o instanceof Number || o instanceof Boolean) return o.toString();
        if (o instanceof Map<?, ?> m) {
            return m.entrySet().stream().map(e -> json(String.valueOf(e.getKey())) + ":" + json(e.getValue()))
                .collect(Collectors.joining(",", "{", "}"));
        }
        if (o instanceof Collection<?> c) return c.stream().map(ShareClient::json).collect(Collectors.joining(",", "[", "]"));
        return "\"" + o.toString().replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    static Admin admin() {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        return Admin.create(p);
    }

    static KafkaShareConsumer<String, String> consumer(String group, boolean explicit) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("group.id", group);
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        p.put("share.acknowledgement.mode", explicit ? "explicit" : "implicit");
        return new KafkaShareConsumer<>(p);
    }

    /** Group configs (key=value,...) by IncrementalAlterConfigs on the GROUP resource, read back. */
    static void config(String group, String pairs, String unused) throws Exception {
        try (Admin admin = admin()) {
            ConfigResource res = new ConfigResource(ConfigResource.Type.GROUP, group);
            List<AlterConfigOp> ops = new ArrayList<>();
            for (String pair : pairs.split(",")) {
                String[] kv = pair.split("=", 2);
                ops.add(new AlterConfigOp(new ConfigEntry(kv[0], kv[1]), AlterConfigOp.OpType.SET));
            }
            admin.incrementalAlterConfigs(Map.of(res, ops)).all().get();
            Map<String, String> got = new HashMap<>();
            for (ConfigEntry e : admin.describeConfigs(List.of(res)).all().get().get(res).entries()) {
                got.put(e.name(), e.value());
            }
            emit("config", Map.of("configs", got));
        }
    }

    /** `consumers` share consumers (implicit acknowledgement) until `expected` records are delivered. */
    static void work(String group, String topic, int consumers, int expected) throws Exception {
        Map<String, List<Integer>> received = new ConcurrentHashMap<>();
        AtomicLong total = new AtomicLong();
        List<Thread> threads = new ArrayList<>();
        long deadline = System.currentTimeMillis() + 90_000;
        for (int i = 0; i < consumers; i++) {
            int id = i;
            Thread t = new Thread(() -> {
                int mine = 0;
                try (KafkaShareConsumer<String, String> c = consumer(group, false)) {
                    c.subscribe(List.of(topic));
                    while (total.get() < expected && System.currentTimeMillis() < deadline) {
                        for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) {
                            received.computeIfAbsent(r.value(), k -> new ArrayList<>()).add(id);
                            total.incrementAndGet();
                            mine++;
                            Thread.sleep(2); // some work per record, so that the load is shared
                        }
                    }
                    c.commitSync();
                } catch (Exception e) {
                    emit("work", Map.of("error", e.toString()));
                }
                emit("work", Map.of("consumer", id, "count", mine));
            });
            t.start();
            threads.add(t);
        }
        for (Thread t : threads) t.join();
        Map<String, Object> out = new HashMap<>();
        out.put("distinct", received.size());
        out.put("deliveries", total.get());
        out.put("duplicates", received.entrySet().stream().filter(e -> e.getValue().size() > 1)
            .map(Map.Entry::getKey).limit(20).collect(Collectors.toList()));
        emit("work", out);
    }

    /** bench/share_bench.py: `consumers` share consumers (implicit acknowledgement, no work per record)
     *  until `expected` records are delivered; the time from the first record to the last. */
    static void bench(String group, String topic, int consumers, int expected) throws Exception {
        AtomicLong total = new AtomicLong();
        AtomicLong first = new AtomicLong();
        AtomicLong last = new AtomicLong();
        List<Thread> threads = new ArrayList<>();
        long deadline = System.currentTimeMillis() + 300_000;
        for (int i = 0; i < consumers; i++) {
            Thread t = new Thread(() -> {
                try (KafkaShareConsumer<String, String> c = consumer(group, false)) {
                    c.subscribe(List.of(topic));
                    while (total.get() < expected && System.currentTimeMillis() < deadline) {
                        int n = c.poll(Duration.ofMillis(200)).count();
                        if (n > 0) {
                            first.compareAndSet(0, System.nanoTime());
                            if (total.addAndGet(n) >= expected) last.compareAndSet(0, System.nanoTime());
                        }
                    }
                    c.commitSync();
                } catch (Exception e) {
                    emit("bench", Map.of("error", e.toString()));
                }
            });
            t.start();
            threads.add(t);
        }
        for (Thread t : threads) t.join();
        double seconds = (last.get() - first.get()) / 1e9;
        emit("bench", Map.of("consumers", consumers, "records", total.get(), "seconds", seconds,
                             "records_per_s", total.get() / Math.max(seconds, 1e-9)));
    }

    /** Explicit acknowledgement by the value's prefix: accept-, release- (once), reject-, poison- (always
     *  released). Every delivery is printed with its delivery count; stops when idle for `idleMs`. */
    static void acks(String group, String topic, int idleMs) throws Exception {
        try (KafkaShareConsumer<String, String> c = consumer(group, true)) {
            c.subscribe(List.of(topic));
            long last = System.currentTimeMillis();
            boolean seen = false;
            while (System.currentTimeMillis() - last < (seen ? idleMs : 60_000)) {
                ConsumerRecords<String, String> records = c.poll(Duration.ofMillis(500));
                for (ConsumerRecord<String, String> r : records) {
                    seen = true;
                    last = System.currentTimeMillis();
                    short count = r.deliveryCount().orElse((short) -1);
                    emit("acks", Map.of("value", r.value(), "delivery", (int) count));
                    AcknowledgeType type = AcknowledgeType.ACCEPT;
                    if (r.value().startsWith("reject-")) type = AcknowledgeType.REJECT;
                    else if (r.value().startsWith("poison-")) type = AcknowledgeType.RELEASE;
                    else if (r.value().startsWith("release-") && count == 1) type = AcknowledgeType.RELEASE;
                    c.acknowledge(r, type);
                }
                if (!records.isEmpty()) {
                    for (Map.Entry<TopicIdPartition, Optional<KafkaException>> e : c.commitSync().entrySet()) {
                        e.getValue().ifPresent(ex -> emit("acks", Map.of("ack_error", ex.toString())));
                    }
                }
            }
        }
    }

    /** Consumer A takes records and holds them past the lock duration without acknowledging;
     *  consumer B, in the same group, gets them once the locks time out. */
    static void lock(String group, String topic, int holdMs) throws Exception {
        List<String> held = new ArrayList<>();
        try (KafkaShareConsumer<String, String> a = consumer(group, true)) {
            a.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 60_000;
            while (held.isEmpty() && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : a.poll(Duration.ofMillis(500))) {
                    held.add(r.value());
                }
            }
            emit("lock", Map.of("held", held));
            Map<String, Integer> redelivered = new HashMap<>();
            try (KafkaShareConsumer<String, String> b = consumer(group, false)) {
                b.subscribe(List.of(topic));
                long end = System.currentTimeMillis() + holdMs;
                while (System.currentTimeMillis() < end && redelivered.size() < held.size()) {
                    for (ConsumerRecord<String, String> r : b.poll(Duration.ofMillis(500))) {
                        redelivered.put(r.value(), (int) r.deliveryCount().orElse((short) -1));
                    }
                }
                b.commitSync();
            }
            emit("lock", Map.of("redelivered", redelivered));
            // A's records were taken over: acknowledging them now is refused, not applied
            // (the explicit mode wants them acknowledged before the next poll or close).
        } catch (Exception e) {
            emit("lock", Map.of("close_error", e.toString()));
        }
    }

    /** Acknowledge every record (ACCEPT, commitSync) and print what was delivered and what was
     *  acknowledged for sure; ends once `expected` distinct records are acknowledged, or idle 40 s. */
    static void restart(String group, String topic, int expected) throws Exception {
        Set<String> acked = new HashSet<>();
        KafkaShareConsumer<String, String> c = consumer(group, true);
        try {
            c.subscribe(List.of(topic));
            long last = System.currentTimeMillis();
            while (acked.size() < expected && System.currentTimeMillis() - last < 40_000) {
                ConsumerRecords<String, String> records;
                try {
                    records = c.poll(Duration.ofMillis(500));
                } catch (KafkaException e) {
                    emit("restart", Map.of("poll_error", e.toString()));
                    continue;
                }
                if (records.isEmpty()) continue;
                last = System.currentTimeMillis();
                Map<Integer, List<String>> byPartition = new HashMap<>();
                List<String> delivered = new ArrayList<>();
                for (ConsumerRecord<String, String> r : records) {
                    delivered.add(r.value());
                    byPartition.computeIfAbsent(r.partition(), k -> new ArrayList<>()).add(r.value());
                    c.acknowledge(r, AcknowledgeType.ACCEPT);
                }
                emit("restart", Map.of("delivered", delivered));
                Map<TopicIdPartition, Optional<KafkaException>> result;
                try {
                    result = c.commitSync(Duration.ofSeconds(15));
                } catch (KafkaException e) {
                    emit("restart", Map.of("commit_error", e.toString()));
                    continue;
                }
                List<String> ok = new ArrayList<>();
                for (Map.Entry<TopicIdPartition, Optional<KafkaException>> e : result.entrySet()) {
                    if (e.getValue().isEmpty()) ok.addAll(byPartition.getOrDefault(e.getKey().partition(), List.of()));
                    else emit("restart", Map.of("ack_error", e.getValue().get().toString()));
                }
                acked.addAll(ok);
                emit("restart", Map.of("acked", ok));
            }
        } finally {
            // the client sends a closing ShareAcknowledge to every broker it had a share session with,
            // a killed one too, and retries it until close's timeout (30 s by default)
            c.close(Duration.ofSeconds(5));
        }
        emit("restart", Map.of("done", acked.size()));
    }

    /** With a member polling: ListGroups (share type), DescribeShareGroups, listShareGroupOffsets, and
     *  alterShareGroupOffsets refused while the group has a member. */
    static void admin(String group, String topic) throws Exception {
        try (Admin admin = admin(); KafkaShareConsumer<String, String> c = consumer(group, false)) {
            c.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 30_000;
            int got = 0;
            while (got == 0 && System.currentTimeMillis() < deadline) got += c.poll(Duration.ofMillis(500)).count();
            c.commitSync();
            List<Map<String, Object>> listed = new ArrayList<>();
            for (GroupListing g : admin.listGroups(ListGroupsOptions.forShareGroups()).all().get()) {
                listed.add(Map.of("group", g.groupId(), "type", String.valueOf(g.type().orElse(null)),
                                  "state", String.valueOf(g.groupState().orElse(null))));
            }
            emit("admin", Map.of("listed", listed));
            ShareGroupDescription d = admin.describeShareGroups(List.of(group)).all().get().get(group);
            List<Object> members = new ArrayList<>();
            for (ShareMemberDescription m : d.members()) {
                members.add(m.assignment().topicPartitions().stream().map(TopicPartition::toString).sorted()
                    .collect(Collectors.toList()));
            }
            emit("admin", Map.of("state", d.groupState().toString(), "members", members, "got", got));
            emit("admin", Map.of("offsets", offsets(admin, group)));
            try {
                admin.alterShareGroupOffsets(group, Map.of(new TopicPartition(topic, 0), 0L)).all().get();
                emit("admin", Map.of("altered", "ok"));
            } catch (Exception e) {
                emit("admin", Map.of("alter_error", e.getCause() == null ? e.toString() : e.getCause().getClass().getSimpleName()));
            }
        }
    }

    /** On an empty group: alter partition 0's start offset, then delete the topic's offsets. */
    static void offsets(String group, String topic, long to) throws Exception {
        try (Admin admin = admin()) {
            emit("offsets", Map.of("before", offsets(admin, group)));
            admin.alterShareGroupOffsets(group, Map.of(new TopicPartition(topic, 0), to)).all().get();
            emit("offsets", Map.of("altered", offsets(admin, group)));
            admin.deleteShareGroupOffsets(group, Set.of(topic)).all().get();
            emit("offsets", Map.of("deleted", offsets(admin, group)));
            admin.deleteShareGroups(List.of(group)).all().get();
            List<String> left = new ArrayList<>();
            for (GroupListing g : admin.listGroups(ListGroupsOptions.forShareGroups()).all().get()) left.add(g.groupId());
            emit("offsets", Map.of("groups_after_delete", left));
        }
    }

    static Map<String, Object> offsets(Admin admin, String group) throws Exception {
        Map<String, Object> out = new HashMap<>();
        Map<TopicPartition, SharePartitionOffsetInfo> got = admin
            .listShareGroupOffsets(Map.of(group, new ListShareGroupOffsetsSpec())).partitionsToOffsetInfo(group).get();
        for (Map.Entry<TopicPartition, SharePartitionOffsetInfo> e : got.entrySet()) {
            SharePartitionOffsetInfo info = e.getValue();
            out.put(e.getKey().toString(), info == null ? null
                : Map.of("start", info.startOffset(), "lag", info.lag().orElse(-1L)));
        }
        return out;
    }
}
