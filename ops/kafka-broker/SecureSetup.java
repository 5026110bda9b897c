// Creates the SCRAM users and ACLs of a secured local broker (`EXECWORKER_KAFKA_SECURITY=sasl_ssl
// ops/kafka up`), with Kafka's own Admin client from the broker's jars (run as a single-file
// source program: `java -cp "libs/*" SecureSetup.java CLIENT_PROPS PLAN`).
//
// CLIENT_PROPS: Admin client properties (a super user over SASL_SSL).
// PLAN: one instruction a line, fields separated by spaces ('#' starts a comment):
//   user NAME PASSWORD_FILE                          SCRAM-SHA-256 and -512 credentials
//   acl PRINCIPAL RESOURCE PATTERN NAME OPERATION    an ALLOW binding from any host
//     RESOURCE: TOPIC | GROUP | TRANSACTIONAL_ID | CLUSTER; PATTERN: LITERAL | PREFIXED
// Both are idempotent: credentials are upserted, an existing binding is left as it is.
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class SecureSetup {
  public static void main(String[] args) throws Exception {
    Properties props = new Properties();
    try (var in = Files.newInputStream(Path.of(args[0]))) {
      props.load(in);
    }
    // One alteration per user and request: the broker refuses two for the same user at once.
    List<UserScramCredentialAlteration> sha256 = new ArrayList<>();
    List<UserScramCredentialAlteration> sha512 = new ArrayList<>();
    List<AclBinding> acls = new ArrayList<>();
    for (String raw : Files.readAllLines(Path.of(args[1]), StandardCharsets.UTF_8)) {
      String line = raw.replaceAll("#.*", "").trim();
      if (line.isEmpty()) continue;
      String[] f = line.split("\\s+");
      if (f[0].equals("user")) {
        String password = Files.readString(Path.of(f[2])).trim();
        sha256.add(new UserScramCredentialUpsertion(
            f[1], new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), password));
        sha512.add(new UserScramCredentialUpsertion(
            f[1], new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password));
      } else if (f[0].equals("acl")) {
        ResourcePattern pattern =
            new ResourcePattern(ResourceType.fromString(f[2]), f[4], PatternType.fromString(f[3]));
        acls.add(new AclBinding(pattern,
            new AccessControlEntry(f[1], "*", AclOperation.fromString(f[5]), AclPermissionType.ALLOW)));
      } else {
        throw new IllegalArgumentException("unknown plan line: " + line);
      }
    }
    try (Admin admin = Admin.create(props)) {
      for (List<UserScramCredentialAlteration> users : List.of(sha256, sha512)) {
        if (!users.isEmpty()) admin.alterUserScramCredentials(users).all().get(60, TimeUnit.SECONDS);
      }
      if (!acls.isEmpty()) admin.createAcls(acls).all().get(60, TimeUnit.SECONDS);
    }
    System.out.println("SecureSetup: " + sha256.size() + " SCRAM users, " + acls.size() + " ACLs");
  }
}
