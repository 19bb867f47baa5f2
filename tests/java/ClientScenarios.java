// What JavaClientProducer, JavaClientConsumer and JavaClientAdmin share: running the scenarios
// named on their command line, printing JSON lines, and the clients' configuration. Each of the
// three extends this class; tests/test_java_client.py compiles the four files together once:
//
//   javac -cp 'tests/java/lib/*' -d OUT tests/java/ClientScenarios.java tests/java/JavaClient*.java
//   java -cp "OUT:tests/java/lib/*" JavaClientProducer BOOTSTRAP PREFIX SCENARIO...

import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public abstract class ClientScenarios {
    static final ObjectMapper JSON = new ObjectMapper();
    static String bootstrap;
    static String prefix;

    interface ThrowingRunnable {
        void run() throws Exception;
    }

    /**
     * Runs the scenarios args[2..] in order against the broker args[0], with topics and groups
     * named args[1]-...; a scenario that throws prints {"scenario": ..., "error": ...} and the next
     * one still runs. Each one's time goes to stderr.
     */
    static void runScenarios(String[] args, Map<String, ThrowingRunnable> scenarios) throws Exception {
        bootstrap = args[0];
        prefix = args[1];
        for (String scenario : Arrays.copyOfRange(args, 2, args.length)) {
            long started = System.nanoTime();
            try {
                ThrowingRunnable run = scenarios.get(scenario);
                if (run == null) {
                    throw new IllegalArgumentException("unknown scenario " + scenario);
                }
                run.run();
            } catch (Exception e) {
                emit(scenario, "error", e.toString());
            }
            System.err.printf("%s: %d ms%n", scenario, (System.nanoTime() - started) / 1_000_000);
        }
    }

    /** Prints the JSON line {"scenario": scenario, key: value, ...}. */
    static void emit(String scenario, Object... keyValues) throws Exception {
        Map<String, Object> line = new LinkedHashMap<>();
        line.put("scenario", scenario);
        for (int i = 0; i < keyValues.length; i += 2) {
            line.put((String) keyValues[i], keyValues[i + 1]);
        }
        System.out.println(JSON.writeValueAsString(line));
        System.out.flush();
    }

    /** A copy of `base` with the key-value pairs put in. */
    static Properties with(Properties base, Object... keyValues) {
        Properties p = new Properties();
        p.putAll(base);
        for (int i = 0; i < keyValues.length; i += 2) {
            p.put(keyValues[i], keyValues[i + 1]);
        }
        return p;
    }

    /** The broker's bootstrap.servers and the key-value pairs. */
    static Properties props(Object... keyValues) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        return with(p, keyValues);
    }

    /** A producer of string keys and values with `base` and the key-value pairs. */
    static KafkaProducer<String, String> producer(Properties base, Object... keyValues) {
        Properties p = with(base, keyValues);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        return new KafkaProducer<>(p);
    }

    /** A consumer of string keys and values with `base` and the key-value pairs. */
    static KafkaConsumer<String, String> consumer(Properties base, Object... keyValues) {
        Properties p = with(base, keyValues);
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        return new KafkaConsumer<>(p);
    }

    /** Creates the topic PREFIX-suffix (replication factor 1); its name. */
    static String createTopic(String suffix, int partitions) throws Exception {
        String topic = prefix + "-" + suffix;
        try (Admin admin = Admin.create(props())) {
            admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all().get();
        }
        return topic;
    }

    static List<TopicPartition> partitions(String topic, int n) {
        List<TopicPartition> out = new ArrayList<>();
        for (int p = 0; p < n; p++) {
            out.add(new TopicPartition(topic, p));
        }
        return out;
    }

    static List<String> values(List<ConsumerRecord<String, String>> records) {
        List<String> out = new ArrayList<>();
        for (ConsumerRecord<String, String> r : records) {
            out.add(r.value());
        }
        return out;
    }
}
