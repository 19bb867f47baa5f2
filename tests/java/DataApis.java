// Kafka's Java client (kafka-clients 4.3.1) on the data path, driven by tests/test_protocol_data_apis.py.
//
//   java -cp 'tests/java/lib/*' tests/java/DataApis.java BOOTSTRAP TOPIC COUNT WIDE_TOPIC PAGE_LIMIT
//
// Produces COUNT keyed records to TOPIC (Produce v13 names the topic by its id), reads them back
// with a consumer (Fetch v13+ by topic id), then describes TOPIC and WIDE_TOPIC with the
// AdminClient, PAGE_LIMIT partitions per DescribeTopicPartitions response. Prints one JSON object.

import com.fasterxml.jackson.databind.ObjectMapper;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.DescribeTopicsOptions;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class DataApis {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        int count = Integer.parseInt(args[2]);
        String wide = args[3];
        int pageLimit = Integer.parseInt(args[4]);
        Map<String, Object> out = new LinkedHashMap<>();

        Properties pp = new Properties();
        pp.put("bootstrap.servers", bootstrap);
        pp.put("acks", "all");
        pp.put("linger.ms", "5");
        pp.put("key.serializer", StringSerializer.class.getName());
        pp.put("value.serializer", StringSerializer.class.getName());
        List<Long> offsets = new ArrayList<>();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(pp)) {
            List<java.util.concurrent.Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                sent.add(producer.send(new ProducerRecord<>(topic, 0, "k" + i, "v" + i)));
            }
            for (var f : sent) {
                offsets.add(f.get().offset());
            }
        }
        out.put("offsets", offsets);

        Properties cp = new Properties();
        cp.put("bootstrap.servers", bootstrap);
        cp.put("group.id", topic + "-reader");
        cp.put("enable.auto.commit", "false");
        cp.put("key.deserializer", StringDeserializer.class.getName());
        cp.put("value.deserializer", StringDeserializer.class.getName());
        List<String> values = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            long deadline = System.currentTimeMillis() + 20_000;
            while (values.size() < count && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    values.add(r.key() + "=" + r.value());
                }
            }
        }
        out.put("consumed", values);

        Properties ap = new Properties();
        ap.put("bootstrap.servers", bootstrap);
        try (Admin admin = Admin.create(ap)) {
            Map<String, TopicDescription> described = admin.describeTopics(List.of(topic, wide),
                    new DescribeTopicsOptions().partitionSizeLimitPerResponse(pageLimit)).allTopicNames().get();
            Map<String, Object> topics = new LinkedHashMap<>();
            for (TopicDescription d : described.values()) {
                Map<String, Object> t = new LinkedHashMap<>();
                t.put("topic_id", d.topicId().toString());
                List<Integer> indexes = new ArrayList<>();
                List<Integer> leaders = new ArrayList<>();
                List<Integer> isrSizes = new ArrayList<>();
                for (TopicPartitionInfo p : d.partitions()) {
                    indexes.add(p.partition());
                    leaders.add(p.leader() == null ? -1 : p.leader().id());
                    isrSizes.add(p.isr().size());
                }
                t.put("partitions", indexes);
                t.put("leaders", leaders);
                t.put("isr_sizes", isrSizes);
                t.put("elr", d.partitions().get(0).elr().size());
                topics.put(d.name(), t);
            }
            out.put("described", topics);
        }
        System.out.println(new ObjectMapper().writeValueAsString(out));
    }
}
