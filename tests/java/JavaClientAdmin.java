// Kafka's Java AdminClient (kafka-clients) against odradek, driven by tests/test_java_client.py.
//
//   java -cp "OUT:tests/java/lib/*" JavaClientAdmin BOOTSTRAP PREFIX SCENARIO...
//
// (OUT holds this file compiled with ClientScenarios.java, which runs the scenarios.) Each
// scenario makes its own topics and groups (named PREFIX-...) and prints JSON lines
// {"scenario": ..., ...}; a scenario that throws prints {"scenario": ..., "error": ...} and the
// next one still runs. The "security" scenario runs against a SASL broker with an authorizer:
// -Dadmin.config=FILE (a super user's client properties) and -Dalice.config=FILE (alice's SCRAM
// login; the scenario creates her credentials with the password in that file).
//
// Scenarios: topics, configs, cluster, groups, records, transactions, security.

import java.io.FileReader;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.admin.TransactionListing;
import org.apache.kafka.clients.admin.UserScramCredentialDeletion;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.clients.admin.UserScramCredentialsDescription;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AccessControlEntryFilter;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourcePatternFilter;
import org.apache.kafka.common.resource.ResourceType;

public class JavaClientAdmin extends ClientScenarios {
    public static void main(String[] args) throws Exception {
        runScenarios(args, Map.of("topics", JavaClientAdmin::topics, "configs", JavaClientAdmin::configs,
                "cluster", JavaClientAdmin::cluster, "groups", JavaClientAdmin::groups,
                "records", JavaClientAdmin::records, "transactions", JavaClientAdmin::transactions,
                "security", JavaClientAdmin::security));
    }

    // -- helpers -------------------------------------------------------------------------

    static Properties load(String systemProperty) throws Exception {
        Properties p = props();
        try (FileReader reader = new FileReader(System.getProperty(systemProperty))) {
            p.load(reader);
        }
        return p;
    }

    static void produce(String topic, int partitions, int perPartition) throws Exception {
        try (KafkaProducer<String, String> p = producer(props(), "linger.ms", 5)) {
            for (int i = 0; i < perPartition; i++) {
                for (int part = 0; part < partitions; part++) {
                    p.send(new ProducerRecord<>(topic, part, "k" + i, "v" + i));
                }
            }
        }
    }

    /** The name of the exception `call` fails with (the cause of an ExecutionException), or "ok". */
    static String outcome(ThrowingRunnable call) {
        try {
            call.run();
            return "ok";
        } catch (ExecutionException e) {
            return e.getCause().getClass().getSimpleName();
        } catch (Exception e) {
            return e.getClass().getSimpleName();
        }
    }

    static Map<String, Object> entry(ConfigEntry e) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("value", e.value());
        out.put("source", e.source().toString());
        out.put("readOnly", e.isReadOnly());
        out.put("sensitive", e.isSensitive());
        out.put("type", e.type().toString());
        List<String> synonyms = new ArrayList<>();
        e.synonyms().forEach(s -> synonyms.add(s.source() + ":" + s.name() + "=" + s.value()));
        out.put("synonyms", synonyms);
        return out;
    }

    // -- scenarios -----------------------------------------------------------------------

    /** createTopics (with configs), listTopics, describeTopics, createPartitions, deleteTopics and their errors. */
    static void topics() throws Exception {
        String a = prefix + "-topic-a";
        String b = prefix + "-topic-b";
        try (Admin admin = Admin.create(props())) {
            admin.createTopics(List.of(
                    new NewTopic(a, 3, (short) 1).configs(Map.of("retention.ms", "3600000", "cleanup.policy", "compact")),
                    new NewTopic(b, 1, (short) 1))).all().get();
            // a group's first commit makes the internal __consumer_offsets topic
            admin.alterConsumerGroupOffsets(prefix + "-topics-group",
                    Map.of(new TopicPartition(b, 0), new OffsetAndMetadata(0))).all().get();
            Set<String> listed = admin.listTopics().names().get();
            Set<String> listedInternal = admin.listTopics(
                    new org.apache.kafka.clients.admin.ListTopicsOptions().listInternal(true)).names().get();
            String again = outcome(() -> admin.createTopics(List.of(new NewTopic(a, 1, (short) 1))).all().get());
            String tooManyReplicas = outcome(() -> admin.createTopics(
                    List.of(new NewTopic(prefix + "-topic-rf3", 1, (short) 3))).all().get());
            admin.createPartitions(Map.of(a, NewPartitions.increaseTo(5))).all().get();
            String shrink = outcome(() -> admin.createPartitions(Map.of(a, NewPartitions.increaseTo(2))).all().get());
            TopicDescription d = admin.describeTopics(List.of(a)).allTopicNames().get().get(a);
            List<Map<String, Object>> partitions = new ArrayList<>();
            d.partitions().forEach(p -> partitions.add(Map.of("partition", p.partition(), "leader", p.leader().id(),
                    "replicas", p.replicas().size(), "isr", p.isr().size())));
            Config config = admin.describeConfigs(List.of(new ConfigResource(ConfigResource.Type.TOPIC, a)))
                    .all().get().values().iterator().next();
            admin.deleteTopics(List.of(b)).all().get();
            Set<String> afterDelete = admin.listTopics().names().get();
            String deleteMissing = outcome(() -> admin.deleteTopics(List.of(prefix + "-no-such-topic")).all().get());
            String describeMissing = outcome(() -> admin.describeTopics(List.of(prefix + "-no-such-topic"))
                    .allTopicNames().get());
            emit("topics", "a", a, "b", b,
                    "listedA", listed.contains(a), "listedB", listed.contains(b),
                    "internalHidden", !listed.contains("__consumer_offsets"),
                    "internalListed", listedInternal.contains("__consumer_offsets"),
                    "createAgain", again, "tooManyReplicas", tooManyReplicas, "shrink", shrink,
                    "partitions", partitions, "topicIdSet", !d.topicId().toString().isEmpty(),
                    "internal", d.isInternal(),
                    "retention", config.get("retention.ms").value(), "cleanup", config.get("cleanup.policy").value(),
                    "bListedAfterDelete", afterDelete.contains(b), "deleteMissing", deleteMissing,
                    "describeMissing", describeMissing);
        }
    }

    /** describeConfigs of a topic and the broker, incrementalAlterConfigs SET/APPEND/SUBTRACT/DELETE. */
    static void configs() throws Exception {
        String topic = prefix + "-configs";
        ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        try (Admin admin = Admin.create(props())) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1).configs(Map.of("segment.bytes", "1048576"))))
                    .all().get();
            Config before = null;
            for (int attempt = 0; before == null; attempt++) {  // Kafka's brokers learn of a new topic a moment later
                try {
                    before = admin.describeConfigs(List.of(resource)).all().get().get(resource);
                } catch (ExecutionException e) {
                    if (!(e.getCause() instanceof UnknownTopicOrPartitionException) || attempt == 100) {
                        throw e;
                    }
                    Thread.sleep(100);
                }
            }
            admin.incrementalAlterConfigs(Map.of(resource, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "120000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.APPEND),
                    new AlterConfigOp(new ConfigEntry("segment.bytes", null), AlterConfigOp.OpType.DELETE))))
                    .all().get();
            Config after = admin.describeConfigs(List.of(resource)).all().get().get(resource);
            admin.incrementalAlterConfigs(Map.of(resource, List.of(
                    new AlterConfigOp(new ConfigEntry("cleanup.policy", "delete"), AlterConfigOp.OpType.SUBTRACT))))
                    .all().get();
            Config subtracted = admin.describeConfigs(List.of(resource)).all().get().get(resource);
            String unknown = outcome(() -> admin.incrementalAlterConfigs(Map.of(resource, List.of(
                    new AlterConfigOp(new ConfigEntry("no.such.config", "1"), AlterConfigOp.OpType.SET)))).all().get());
            String badValue = outcome(() -> admin.incrementalAlterConfigs(Map.of(resource, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "soon"), AlterConfigOp.OpType.SET)))).all().get());
            String nodeId = admin.describeCluster().nodes().get().iterator().next().idString();
            ConfigResource brokerResource = new ConfigResource(ConfigResource.Type.BROKER, nodeId);
            Config broker = admin.describeConfigs(List.of(brokerResource)).all().get().get(brokerResource);
            Map<String, Object> topicNames = new TreeMap<>();
            after.entries().forEach(e -> topicNames.put(e.name(), e.value()));
            Map<String, Object> brokerNames = new TreeMap<>();
            broker.entries().forEach(e -> brokerNames.put(e.name(), e.value()));
            emit("configs", "topic", topic,
                    "segmentBefore", entry(before.get("segment.bytes")), "retentionBefore", entry(before.get("retention.ms")),
                    "retentionAfter", entry(after.get("retention.ms")), "cleanupAfter", entry(after.get("cleanup.policy")),
                    "segmentAfter", entry(after.get("segment.bytes")),
                    "cleanupSubtracted", subtracted.get("cleanup.policy").value(),
                    "unknown", unknown, "badValue", badValue, "topicConfigs", topicNames, "brokerConfigs", brokerNames);
        }
    }

    static void cluster() throws Exception {
        try (Admin admin = Admin.create(props())) {
            DescribeClusterResult c = admin.describeCluster();
            List<Map<String, Object>> nodes = new ArrayList<>();
            for (Node n : c.nodes().get()) {
                nodes.add(Map.of("id", n.id(), "host", n.host(), "port", n.port()));
            }
            Node controller = c.controller().get();
            emit("cluster", "clusterId", c.clusterId().get(), "controller", controller == null ? -1 : controller.id(),
                    "nodes", nodes);
        }
    }

    /** A group's offsets: listed, altered while the group is empty, listed again; listGroups and deleteOffsets. */
    static void groups() throws Exception {
        String topic = prefix + "-groups";
        String group = prefix + "-admin-group";
        try (Admin admin = Admin.create(props())) {
            admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all().get();
            produce(topic, 2, 5);
            try (KafkaConsumer<String, String> c = consumer(props(), "group.id", group, "auto.offset.reset", "earliest",
                    "enable.auto.commit", "false")) {
                c.subscribe(List.of(topic));
                int got = 0;
                long deadline = System.currentTimeMillis() + 20_000;
                while (got < 10 && System.currentTimeMillis() < deadline) {
                    got += c.poll(Duration.ofMillis(100)).count();
                }
                c.commitSync();
                String alterWhileActive = outcome(() -> admin.alterConsumerGroupOffsets(group,
                        Map.of(new TopicPartition(topic, 0), new OffsetAndMetadata(1))).all().get());
                emit("groups", "read", got, "alterWhileActive", alterWhileActive);
            }
            Map<String, Long> committed = new TreeMap<>();
            admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get()
                    .forEach((tp, om) -> committed.put(tp.toString(), om.offset()));
            admin.alterConsumerGroupOffsets(group, Map.of(
                    new TopicPartition(topic, 0), new OffsetAndMetadata(1, "rewound"),
                    new TopicPartition(topic, 1), new OffsetAndMetadata(3))).all().get();
            Map<String, Object> altered = new TreeMap<>();
            admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get()
                    .forEach((tp, om) -> altered.put(tp.toString(), List.of(om.offset(), om.metadata())));
            List<String> listed = new ArrayList<>();
            for (GroupListing g : admin.listGroups().all().get()) {
                if (g.groupId().equals(group)) {
                    listed.add(g.groupId() + ":" + g.type().map(Object::toString).orElse("?") + ":"
                            + g.groupState().map(Object::toString).orElse("?") + ":" + g.protocol());
                }
            }
            String state = admin.describeConsumerGroups(List.of(group)).describedGroups().get(group).get()
                    .groupState().toString();
            admin.deleteConsumerGroupOffsets(group, Set.of(new TopicPartition(topic, 1))).all().get();
            Map<String, Long> afterDelete = new TreeMap<>();
            admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get()
                    .forEach((tp, om) -> afterDelete.put(tp.toString(), om.offset()));
            admin.deleteConsumerGroups(List.of(group)).all().get();
            String describeDeleted = outcome(() -> admin.describeConsumerGroups(List.of(group)).describedGroups()
                    .get(group).get());
            emit("groups", "topic", topic, "committed", committed, "altered", altered, "listed", listed,
                    "state", state, "afterDeleteOffsets", afterDelete, "describeDeleted", describeDeleted);
        }
    }

    /** deleteRecords moves the log start offset; listOffsets (earliest, latest, timestamps) and a consumer agree. */
    static void records() throws Exception {
        String topic = prefix + "-records";
        TopicPartition tp = new TopicPartition(topic, 0);
        try (Admin admin = Admin.create(props())) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
            long before = System.currentTimeMillis();
            produce(topic, 1, 10);
            long lowWatermark = admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(4))).lowWatermarks()
                    .get(tp).get().lowWatermark();
            String beyondEnd = outcome(() -> admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(99)))
                    .all().get());
            Map<String, Long> offsets = new LinkedHashMap<>();
            for (var spec : Map.of("earliest", OffsetSpec.earliest(), "latest", OffsetSpec.latest(),
                    "forTimestamp", OffsetSpec.forTimestamp(before)).entrySet()) {
                ListOffsetsResult.ListOffsetsResultInfo info = admin.listOffsets(Map.of(tp, spec.getValue()))
                        .partitionResult(tp).get();
                offsets.put(spec.getKey(), info.offset());
            }
            long first = -1;
            try (KafkaConsumer<String, String> c = consumer(props(), "group.id", prefix + "-records-reader",
                    "auto.offset.reset", "earliest")) {
                c.assign(List.of(tp));
                long deadline = System.currentTimeMillis() + 20_000;
                while (first < 0 && System.currentTimeMillis() < deadline) {
                    for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(100))) {
                        first = first < 0 ? r.offset() : first;
                    }
                }
            }
            emit("records", "topic", topic, "lowWatermark", lowWatermark, "beyondEnd", beyondEnd,
                    "offsets", offsets, "firstConsumed", first);
        }
    }

    /** listTransactions / describeTransactions / describeProducers of an open, then committed, transaction. */
    static void transactions() throws Exception {
        String topic = prefix + "-txn";
        String txnId = prefix + "-admin-txn";
        TopicPartition tp = new TopicPartition(topic, 0);
        try (Admin admin = Admin.create(props())) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
            try (KafkaProducer<String, String> p = producer(props(), "transactional.id", txnId)) {
                p.initTransactions();
                p.beginTransaction();
                p.send(new ProducerRecord<>(topic, "k", "in-flight")).get();
                Map<String, Object> open = describeTxn(admin, txnId);
                List<Map<String, Object>> producers = new ArrayList<>();
                admin.describeProducers(List.of(tp)).partitionResult(tp).get().activeProducers().forEach(s ->
                        producers.add(Map.of("producerId", s.producerId(),
                                "currentTransactionStartOffset", s.currentTransactionStartOffset().orElse(-1L))));
                p.commitTransaction();
                // the commit returns once the coordinator logged PrepareCommit; the markers follow
                Map<String, Object> committed = describeTxn(admin, txnId);
                String firstAfterCommit = (String) committed.get("state");
                long deadline = System.currentTimeMillis() + 10_000;
                while (committed.get("state").equals("PrepareCommit") && System.currentTimeMillis() < deadline) {
                    Thread.sleep(50);
                    committed = describeTxn(admin, txnId);
                }
                List<String> ongoing = new ArrayList<>();
                for (TransactionListing t : admin.listTransactions(
                        new org.apache.kafka.clients.admin.ListTransactionsOptions().filterStates(
                                List.of(org.apache.kafka.clients.admin.TransactionState.ONGOING))).all().get()) {
                    ongoing.add(t.transactionalId());
                }
                emit("transactions", "topic", topic, "open", open, "producers", producers, "committed", committed,
                        "firstAfterCommit", firstAfterCommit, "ongoingAfterCommit", ongoing.contains(txnId),
                        "describeMissing", outcome(() -> admin.describeTransactions(List.of(prefix + "-no-such-txn"))
                                .all().get()));
            }
        }
    }

    static Map<String, Object> describeTxn(Admin admin, String txnId) throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        for (TransactionListing t : admin.listTransactions().all().get()) {
            if (t.transactionalId().equals(txnId)) {
                out.put("listedState", t.state().toString());
                out.put("listedProducerId", t.producerId());
            }
        }
        TransactionDescription d = admin.describeTransactions(List.of(txnId)).description(txnId).get();
        out.put("state", d.state().toString());
        out.put("producerId", d.producerId());
        out.put("epoch", d.producerEpoch());
        out.put("timeoutMs", d.transactionTimeoutMs());
        out.put("startTimeSet", d.transactionStartTimeMs().isPresent());
        List<String> partitions = new ArrayList<>();
        d.topicPartitions().forEach(p -> partitions.add(p.toString()));
        out.put("partitions", partitions);
        out.put("coordinator", d.coordinatorId());
        return out;
    }

    static List<String> bindings(Collection<AclBinding> acls) {
        List<String> out = new ArrayList<>();
        for (AclBinding b : acls) {
            out.add(b.entry().principal() + " " + b.entry().permissionType() + " " + b.entry().operation() + " "
                    + b.pattern().resourceType() + ":" + b.pattern().patternType() + ":" + b.pattern().name());
        }
        out.sort(null);
        return out;
    }

    /**
     * On a SASL broker with an authorizer: the super user creates alice's SCRAM credentials and
     * ACLs; alice writes where an ACL lets her and nowhere else, until the ACLs are deleted.
     */
    static void security() throws Exception {
        Properties adminConfig = load("admin.config");
        Properties alice = load("alice.config");
        String password = alice.getProperty("sasl.jaas.config").replaceAll(".*password=\"([^\"]*)\".*", "$1");
        String allowed = prefix + "-sec-ok";
        String denied = prefix + "-sec-denied";
        try (Admin admin = Admin.create(adminConfig)) {
            admin.alterUserScramCredentials(List.of(
                    new UserScramCredentialUpsertion("alice", new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password),
                    new UserScramCredentialUpsertion("alice", new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), password)))
                    .all().get();
            List<String> credentials = new ArrayList<>();
            UserScramCredentialsDescription described = admin.describeUserScramCredentials(List.of("alice"))
                    .description("alice").get();
            described.credentialInfos().forEach(i -> credentials.add(i.mechanism() + ":" + i.iterations()));
            credentials.sort(null);
            List<String> users = admin.describeUserScramCredentials().users().get();
            String unknownUser = outcome(() -> admin.describeUserScramCredentials(List.of("nobody"))
                    .description("nobody").get());

            admin.createTopics(List.of(new NewTopic(allowed, 1, (short) 1), new NewTopic(denied, 1, (short) 1)))
                    .all().get();
            ResourcePattern prefixed = new ResourcePattern(ResourceType.TOPIC, prefix + "-sec-ok", PatternType.PREFIXED);
            admin.createAcls(List.of(
                    new AclBinding(prefixed, new AccessControlEntry("User:alice", "*", AclOperation.WRITE, AclPermissionType.ALLOW)),
                    new AclBinding(prefixed, new AccessControlEntry("User:alice", "*", AclOperation.DESCRIBE, AclPermissionType.ALLOW))))
                    .all().get();
            AclBindingFilter aliceFilter = new AclBindingFilter(ResourcePatternFilter.ANY,
                    new AccessControlEntryFilter("User:alice", null, AclOperation.ANY, AclPermissionType.ANY));
            List<String> acls = bindings(admin.describeAcls(aliceFilter).values().get());

            String aliceAllowed = aliceSends(alice, allowed);
            String aliceDenied = aliceSends(alice, denied);
            Properties alice256 = with(alice, "sasl.mechanism", "SCRAM-SHA-256");
            String alice256Allowed = aliceSends(alice256, allowed);
            String aliceDescribesAcls;
            try (Admin asAlice = Admin.create(alice)) {
                aliceDescribesAcls = outcome(() -> asAlice.describeAcls(AclBindingFilter.ANY).values().get());
            }
            Properties wrong = with(alice, "sasl.jaas.config",
                    alice.getProperty("sasl.jaas.config").replace(password, "wrong-" + password));
            String wrongPassword = aliceSends(wrong, allowed);

            List<String> deleted = bindings(admin.deleteAcls(List.of(aliceFilter)).all().get());
            String afterDelete = aliceSends(alice, allowed);
            admin.alterUserScramCredentials(List.of(new UserScramCredentialDeletion("alice", ScramMechanism.SCRAM_SHA_256)))
                    .all().get();
            List<String> remaining = new ArrayList<>();
            admin.describeUserScramCredentials(List.of("alice")).description("alice").get().credentialInfos()
                    .forEach(i -> remaining.add(i.mechanism() + ":" + i.iterations()));
            String alice256AfterDelete = aliceSends(alice256, allowed);
            emit("security", "credentials", credentials, "users", users, "unknownUser", unknownUser, "acls", acls,
                    "aliceAllowed", aliceAllowed, "aliceDenied", aliceDenied, "alice256Allowed", alice256Allowed,
                    "aliceDescribesAcls", aliceDescribesAcls, "wrongPassword", wrongPassword, "deleted", deleted,
                    "afterDelete", afterDelete, "remainingCredentials", remaining,
                    "alice256AfterDelete", alice256AfterDelete);
        }
    }

    /** "offset N" when a record from this login reached `topic`, else the name of the exception. */
    static String aliceSends(Properties login, String topic) {
        try (KafkaProducer<String, String> p = producer(login, "max.block.ms", 5000, "delivery.timeout.ms", 5000,
                "request.timeout.ms", 4000, "linger.ms", 0)) {
            return "offset " + p.send(new ProducerRecord<>(topic, "from-alice")).get().offset();
        } catch (ExecutionException e) {
            return e.getCause().getClass().getSimpleName();
        } catch (Exception e) {
            return e.getClass().getSimpleName();
        }
    }
}
