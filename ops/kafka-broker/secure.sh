# Sourced by ops/kafka: the SASL_SSL variant of the local broker (EXECWORKER_KAFKA_SECURITY=sasl_ssl).
#
# - TLS: a private CA and a broker certificate for 127.0.0.1/localhost (openssl), under $home/tls/.
# - SASL on the client listener: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512. Users (passwords are random,
#   one file each under $home/secrets/, mode 600):
#     broker  the brokers' own principal (inter-broker and controller, PLAIN); the only super user
#     admin   the worker's rights + create/delete topics, produce inputs, read every topic
#     worker  reads its inputs, writes its outputs (and reads exec-events back to rebuild state),
#             uses its group and its transactional ids; nothing else
# - ACLs: Kafka's StandardAuthorizer, deny by default; PREFIXED patterns on the topic names of
#   $EXECWORKER_KAFKA_TOPICS (so test/bench variants `<name>.<suffix>` are covered) and on the group
#   (= transactional-id prefix) $EXECWORKER_KAFKA_GROUP.
# - The controller listener stays on 127.0.0.1, SASL_PLAINTEXT with PLAIN for the broker user only.
# `up` writes $home/client.env (worker) and $home/admin.env (admin): `source` them.

security="${EXECWORKER_KAFKA_SECURITY:-plaintext}"
case "$security" in
  plaintext | sasl_ssl) ;;
  *) die "EXECWORKER_KAFKA_SECURITY=$security: use plaintext or sasl_ssl" ;;
esac
tls_dir="$home/tls"
secrets_dir="$home/secrets"
acl_topics="${EXECWORKER_KAFKA_TOPICS:-$repo/topics.yaml}"
acl_group="${EXECWORKER_KAFKA_GROUP:-execworker}"

secure() {
  # The mode is fixed when the state directory is first written: a later `up` or `down` of that
  # directory keeps it, whatever the environment says.
  if [[ -f "$home/security" ]]; then [[ "$(cat "$home/security")" == sasl_ssl ]]; else [[ "$security" == sasl_ssl ]]; fi
}

password_of() { cat "$secrets_dir/$1.password"; }

secure_prepare() {
  command -v openssl >/dev/null || die "openssl is needed for EXECWORKER_KAFKA_SECURITY=sasl_ssl (apt-get install openssl)"
  mkdir -p "$tls_dir" "$secrets_dir"
  chmod 700 "$tls_dir" "$secrets_dir"
  echo sasl_ssl >"$home/security"
  local user
  for user in broker admin worker keystore; do
    [[ -f "$secrets_dir/$user.password" ]] || (umask 077 && openssl rand -hex 24 >"$secrets_dir/$user.password")
  done
  if [[ ! -f "$tls_dir/broker.p12" ]]; then
    (
      cd "$tls_dir"
      umask 077
      openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=execworker local CA" \
        -keyout ca.key -out ca.crt >/dev/null 2>&1
      openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr >/dev/null 2>&1
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >broker.ext
      openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
        -extfile broker.ext -out broker.crt >/dev/null 2>&1
      openssl pkcs12 -export -in broker.crt -inkey broker.key -certfile ca.crt -name broker \
        -passout "file:$secrets_dir/keystore.password" -out broker.p12
      chmod 644 ca.crt
    ) || die "generating the TLS certificates failed (openssl)"
  fi
}

secure_config() {
  local b a w k
  b="$(password_of broker)"; a="$(password_of admin)"; w="$(password_of worker)"; k="$(password_of keystore)"
  cat <<PROPS
# --- EXECWORKER_KAFKA_SECURITY=sasl_ssl (ops/kafka-broker/secure.sh); these lines override the ones above.
listeners=SASL_SSL://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=SASL_SSL://127.0.0.1:$port
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=PLAIN
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="$b" user_broker="$b";
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="$b" user_broker="$b" user_admin="$a" user_worker="$w";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls_dir/broker.p12
ssl.keystore.password=$k
ssl.truststore.type=PEM
ssl.truststore.location=$tls_dir/ca.crt
ssl.client.auth=none
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:broker
PROPS
}

secure_probe_env() {
  export EXECWORKER_PROBE_CAFILE="$tls_dir/ca.crt"
  export EXECWORKER_PROBE_USER=broker
  export EXECWORKER_PROBE_PASSWORD_FILE="$secrets_dir/broker.password"
}

topic_name() {
  # The `name:` of a role in a topics file (two-space role keys, four-space fields).
  awk -v role="$1" '
    $0 ~ "^  " role ":" { inside = 1; next }
    inside && /^  [A-Za-z_]+:/ { exit }
    inside && $1 == "name:" { print $2; exit }' "$acl_topics"
}

acl_plan() {
  local role name op ops principal
  echo "user admin $secrets_dir/admin.password"
  echo "user worker $secrets_dir/worker.password"
  for role in decisions signals strategy_mode harvest_health market exec_events dlq; do
    name="$(topic_name "$role")"
    [[ -n "$name" ]] || continue
    case "$role" in
      exec_events) ops="READ WRITE DESCRIBE DESCRIBE_CONFIGS" ;;
      dlq) ops="WRITE DESCRIBE DESCRIBE_CONFIGS" ;;
      *) ops="READ DESCRIBE DESCRIBE_CONFIGS" ;;
    esac
    for op in $ops; do echo "acl User:worker TOPIC PREFIXED $name $op"; done
    for op in READ WRITE CREATE DELETE DESCRIBE DESCRIBE_CONFIGS; do echo "acl User:admin TOPIC PREFIXED $name $op"; done
  done
  for principal in User:worker User:admin; do
    echo "acl $principal GROUP PREFIXED $acl_group READ"
    echo "acl $principal GROUP PREFIXED $acl_group DESCRIBE"
    echo "acl $principal TRANSACTIONAL_ID PREFIXED $acl_group WRITE"
    echo "acl $principal TRANSACTIONAL_ID PREFIXED $acl_group DESCRIBE"
  done
  echo "acl User:admin CLUSTER LITERAL kafka-cluster CREATE"
  echo "acl User:admin CLUSTER LITERAL kafka-cluster DESCRIBE"
}

write_client_env() {
  # $1 file, $2 user
  (umask 077 && cat >"$1" <<ENV
# Written by ops/kafka for the principal '$2' of the local SASL_SSL broker. Use: source $1
export KAFKA_BOOTSTRAP_SERVERS=$address
export KAFKA_SECURITY_PROTOCOL=SASL_SSL
export KAFKA_SASL_MECHANISM=SCRAM-SHA-512
export KAFKA_SASL_USERNAME=$2
export KAFKA_SASL_PASSWORD_FILE=$secrets_dir/$2.password
export KAFKA_SSL_CAFILE=$tls_dir/ca.crt
ENV
  )
}

secure_setup() {
  [[ -f "$acl_topics" ]] || die "EXECWORKER_KAFKA_TOPICS=$acl_topics: no such file (the ACLs are made from its topic names)"
  local props="$home/setup-admin.properties" plan="$home/acl-plan.txt"
  (umask 077 && cat >"$props" <<PROPS
bootstrap.servers=$address
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="$(password_of broker)";
ssl.truststore.type=PEM
ssl.truststore.location=$tls_dir/ca.crt
PROPS
  )
  acl_plan >"$plan"
  java -Dlog4j2.configurationFile="$broker_dir/log4j2.properties" -Dkafka.logs.dir="$log_dir" \
    -cp "$libs/*" "$broker_dir/SecureSetup.java" "$props" "$plan" >"$log_dir/secure-setup.log" 2>&1 \
    || die "creating the SCRAM users and ACLs failed; see $log_dir/secure-setup.log"
  write_client_env "$home/client.env" worker
  write_client_env "$home/admin.env" admin
  say "SASL_SSL with ACLs: worker principal in $home/client.env, admin in $home/admin.env"
}
