// Applies users and ACLs to the test broker through Kafka's admin API, in one JVM (scripts/kafka-dev.sh access).
// What to apply is read from standard input, one tab-separated line each, so no password is on a command line:
//
//   user   NAME PASSWORD                                  SCRAM-SHA-512 credentials for NAME, and its ACLs
//                                                         replaced by the acl lines that follow for it
//   acl    NAME PERMISSION RESOURCE-TYPE PATTERN-TYPE RESOURCE OPERATION HOST   one entry for User:NAME
//
// PERMISSION, RESOURCE-TYPE, PATTERN-TYPE and OPERATION are Kafka's enum names (ALLOW, TOPIC, PREFIXED,
// IDEMPOTENT_WRITE ...). Prints one line per user; never prints a password.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AccessControlEntryFilter;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourcePatternFilter;
import org.apache.kafka.common.resource.ResourceType;

public final class KafkaAccess {
    private static final int SCRAM_ITERATIONS = 4096;

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: KafkaAccess BOOTSTRAP_SERVERS < spec");
            System.exit(2);
        }
        Set<String> users = new LinkedHashSet<>();
        List<UserScramCredentialAlteration> credentials = new ArrayList<>();
        List<AclBinding> acls = new ArrayList<>();
        BufferedReader input = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        int number = 0;
        for (String line = input.readLine(); line != null; line = input.readLine()) {
            number++;
            if (line.isBlank()) {
                continue;
            }
            String[] f = line.split("\t", -1);
            switch (f[0]) {
                case "user" -> {
                    need(f, 3, number);
                    users.add(f[1]);
                    credentials.add(new UserScramCredentialUpsertion(
                            f[1], new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS), f[2]));
                }
                case "acl" -> {
                    need(f, 8, number);
                    AclPermissionType permission = AclPermissionType.fromString(f[2].toUpperCase(Locale.ROOT));
                    ResourcePattern resource = new ResourcePattern(
                            ResourceType.fromString(f[3].toUpperCase(Locale.ROOT)),
                            f[5],
                            PatternType.fromString(f[4].toUpperCase(Locale.ROOT)));
                    AclOperation operation = AclOperation.fromString(f[6].toUpperCase(Locale.ROOT));
                    if (permission == AclPermissionType.UNKNOWN || resource.resourceType() == ResourceType.UNKNOWN
                            || resource.patternType() == PatternType.UNKNOWN || operation == AclOperation.UNKNOWN) {
                        fail("line " + number + ": unknown permission, resource type, pattern type or operation: "
                                + line);
                    }
                    acls.add(new AclBinding(resource,
                            new AccessControlEntry("User:" + f[1], f[7], operation, permission)));
                }
                default -> fail("line " + number + ": expected user or acl, got `" + f[0] + "`");
            }
        }
        Properties config = new Properties();
        config.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        try (Admin admin = Admin.create(config)) {
            // A user's ACLs are replaced as a whole: what the manifest no longer grants is taken away.
            List<AclBindingFilter> old = new ArrayList<>();
            for (String user : users) {
                old.add(new AclBindingFilter(ResourcePatternFilter.ANY,
                        new AccessControlEntryFilter("User:" + user, null, AclOperation.ANY, AclPermissionType.ANY)));
            }
            if (!old.isEmpty()) {
                admin.deleteAcls(old).all().get(60, TimeUnit.SECONDS);
            }
            if (!credentials.isEmpty()) {
                admin.alterUserScramCredentials(credentials).all().get(60, TimeUnit.SECONDS);
            }
            if (!acls.isEmpty()) {
                admin.createAcls(acls).all().get(60, TimeUnit.SECONDS);
            }
        }
        for (String user : users) {
            long count = acls.stream().filter(a -> a.entry().principal().equals("User:" + user)).count();
            System.out.println("kafka-access: user " + user + ": SCRAM-SHA-512 credentials and " + count + " ACLs");
        }
    }

    private static void need(String[] fields, int count, int number) {
        if (fields.length != count) {
            fail("line " + number + ": `" + fields[0] + "` takes " + (count - 1) + " tab-separated fields");
        }
    }

    private static void fail(String message) {
        System.err.println("kafka-access: " + message);
        System.exit(2);
    }
}
