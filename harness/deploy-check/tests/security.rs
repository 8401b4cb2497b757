//! Least privilege in deploy/, read as data: who signs in as whom, where each secret comes from, which listener
//! serves whom, and what the application pods may reach. What the ACLs themselves allow is proven on a real
//! broker (harness/faults/tests/access.rs) and on the real control plane (harness/kube-dev/tests/quickstart.rs).

use deploy_check::{container, env_value, find, load_manifests, repo_root, Manifest};
use serde_json::{json, Value};

const CA_SECRET: &str = "medicine-pubsub-cluster-ca-cert";

fn manifests() -> Vec<Manifest> {
    load_manifests(&repo_root().join("deploy"))
}

fn var<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|vars| vars.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("{name} is not set"))
}

/// The KafkaUser names of deploy/.
fn users(manifests: &[Manifest]) -> Vec<&str> {
    manifests
        .iter()
        .filter(|m| m.kind() == "KafkaUser")
        .map(Manifest::name)
        .collect()
}

/// A pod signs in as `user` over TLS, with the password from the user's Secret and the cluster CA mounted.
fn signs_in_as(manifests: &[Manifest], pod: &Value, name: &str, user: &str) {
    assert!(users(manifests).contains(&user), "{user} is a KafkaUser");
    let container = container(pod, name);
    assert_eq!(
        env_value(container, "MEDECINEPUBSUB_KAFKA_SERVERS"),
        "medicine-pubsub-kafka-bootstrap:9093",
        "{name}: the TLS listener"
    );
    assert_eq!(
        env_value(container, "MEDECINEPUBSUB_KAFKA_SECURITY_PROTOCOL"),
        "SASL_SSL"
    );
    assert_eq!(
        env_value(container, "MEDECINEPUBSUB_KAFKA_SASL_MECHANISM"),
        "SCRAM-SHA-512"
    );
    assert_eq!(
        env_value(container, "MEDECINEPUBSUB_KAFKA_SASL_USERNAME"),
        user
    );
    let password = var(container, "MEDECINEPUBSUB_KAFKA_SASL_PASSWORD");
    assert!(
        password.get("value").is_none(),
        "{name}: no password in a manifest"
    );
    assert_eq!(
        password["valueFrom"]["secretKeyRef"],
        json!({"name": user, "key": "password"}),
        "{name}: the password Strimzi keeps for {user}"
    );
    // The CA file is in a volume of the Secret Strimzi publishes the cluster CA in.
    let ca = env_value(container, "MEDECINEPUBSUB_KAFKA_SSL_CA_LOCATION");
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| ca.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
        .unwrap_or_else(|| panic!("{name}: nothing is mounted where {ca} is"));
    assert_eq!(mount["readOnly"], true, "{name}");
    let volume = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert_eq!(volume["secret"]["secretName"], CA_SECRET, "{name}");
    let file = &ca[mount["mountPath"].as_str().unwrap().len() + 1..];
    assert_eq!(
        volume["secret"]["items"],
        json!([{"key": "ca.crt", "path": file}]),
        "{name}: only the CA's certificate, at {ca}"
    );
}

#[test]
fn the_applications_sign_in_as_their_own_users_with_strimzi_s_secrets() {
    let manifests = manifests();
    let patient = &find(&manifests, "Deployment", "patient-0")["spec"]["template"]["spec"];
    signs_in_as(&manifests, patient, "patient", "medicine-patient");
    let maker = &find(&manifests, "ScaledJob", "medicine-maker-0")["spec"]["jobTargetRef"]
        ["template"]["spec"];
    signs_in_as(&manifests, maker, "medicine", "medicine-maker");
}

#[test]
fn the_makers_transactional_ids_are_those_their_user_may_write() {
    // A maker's transactional id starts with its id, the pod's name, which starts with the ScaledJob's name.
    let manifests = manifests();
    let maker = &find(&manifests, "ScaledJob", "medicine-maker-0")["spec"]["jobTargetRef"]
        ["template"]["spec"];
    assert_eq!(
        var(container(maker, "medicine"), "MEDECINEPUBSUB_MAKER_ID")["valueFrom"]["fieldRef"]
            ["fieldPath"],
        "metadata.name"
    );
    let user = find(&manifests, "KafkaUser", "medicine-maker");
    let prefixes: Vec<&Value> = user["spec"]["authorization"]["acls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|acl| acl["resource"]["type"] == "transactionalId")
        .collect();
    assert_eq!(prefixes.len(), 1);
    assert_eq!(prefixes[0]["resource"]["patternType"], "prefix");
    assert_eq!(prefixes[0]["resource"]["name"], "medicine-maker-0-");
}

#[test]
fn keda_signs_in_as_its_describe_only_user() {
    let manifests = manifests();
    let trigger = &find(&manifests, "ScaledJob", "medicine-maker-0")["spec"]["triggers"][0];
    assert_eq!(
        trigger["metadata"]["bootstrapServers"],
        "medicine-pubsub-kafka-bootstrap.default.svc:9093"
    );
    assert_eq!(trigger["metadata"]["sasl"], "scram_sha512");
    assert_eq!(trigger["metadata"]["tls"], "enable");
    for secret in ["username", "password", "ca", "cert", "key"] {
        assert!(
            trigger["metadata"].get(secret).is_none(),
            "{secret} belongs in the TriggerAuthentication"
        );
    }
    let name = trigger["authenticationRef"]["name"].as_str().unwrap();
    let auth = &find(&manifests, "TriggerAuthentication", name)["spec"];
    let secret_ref = |parameter: &str| {
        auth["secretTargetRef"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["parameter"] == parameter)
            .unwrap_or_else(|| panic!("no secretTargetRef for {parameter}"))
    };
    assert_eq!(
        secret_ref("password"),
        &json!({"parameter": "password", "name": "medicine-keda", "key": "password"})
    );
    assert_eq!(
        secret_ref("ca"),
        &json!({"parameter": "ca", "name": CA_SECRET, "key": "ca.crt"})
    );
    let username = &auth["configMapTargetRef"][0];
    assert_eq!(username["parameter"], "username");
    let map = find(&manifests, "ConfigMap", username["name"].as_str().unwrap());
    assert_eq!(
        map["data"][username["key"].as_str().unwrap()],
        "medicine-keda",
        "the user whose password KEDA reads"
    );
    // Describe only: KEDA reads no record.
    let keda = find(&manifests, "KafkaUser", "medicine-keda");
    for acl in keda["spec"]["authorization"]["acls"].as_array().unwrap() {
        assert_eq!(acl["operations"], json!(["Describe"]), "{acl}");
    }
}

#[test]
fn the_plain_listener_serves_only_the_broker_pods_and_everything_else_signs_in() {
    let manifests = manifests();
    let kafka = &find(&manifests, "Kafka", "medicine-pubsub")["spec"];
    let listeners = kafka["kafka"]["listeners"].as_array().unwrap();
    let plain = listeners.iter().find(|l| l["port"] == 9092).unwrap();
    assert!(plain["authentication"].is_null());
    assert_eq!(
        plain["networkPolicyPeers"],
        json!([{"podSelector": {"matchLabels": {"strimzi.io/name": "medicine-pubsub-kafka"}}}]),
        "only the broker pods (where the original's commands run) reach the plain listener"
    );
    let tls = listeners.iter().find(|l| l["port"] == 9093).unwrap();
    assert_eq!(tls["tls"], true);
    assert_eq!(tls["authentication"]["type"], "scram-sha-512");
    assert_eq!(kafka["kafka"]["authorization"]["type"], "simple");
    assert_eq!(
        kafka["kafka"]["authorization"]["superUsers"],
        json!(["ANONYMOUS"]),
        "the plain listener's clients, and no one else"
    );
    assert!(
        kafka["entityOperator"]["userOperator"].is_object(),
        "the user operator creates the KafkaUsers"
    );
    for user in users(&manifests) {
        let object = find(&manifests, "KafkaUser", user);
        assert_eq!(
            object["metadata"]["labels"]["strimzi.io/cluster"],
            "medicine-pubsub"
        );
        assert_eq!(object["spec"]["authentication"]["type"], "scram-sha-512");
        for acl in object["spec"]["authorization"]["acls"].as_array().unwrap() {
            assert_ne!(
                acl["resource"]["type"], "cluster",
                "{user}: no cluster-wide right"
            );
            assert_ne!(acl["resource"]["name"], "*", "{user}: no wildcard");
            for operation in acl["operations"].as_array().unwrap() {
                assert!(
                    ["Read", "Write", "Describe"].contains(&operation.as_str().unwrap()),
                    "{user}: {operation}"
                );
            }
        }
    }
}

#[test]
fn the_application_pods_accept_only_scrapes_and_reach_only_kafka_and_dns() {
    let manifests = manifests();
    let policy = &find(&manifests, "NetworkPolicy", "medicine-pubsub-apps")["spec"];
    assert_eq!(policy["policyTypes"], json!(["Ingress", "Egress"]));
    let selected = &policy["podSelector"]["matchExpressions"][0];
    assert_eq!(selected["key"], "app.kubernetes.io/name");
    let pods = [
        &find(&manifests, "Deployment", "patient-0")["spec"]["template"],
        &find(&manifests, "ScaledJob", "medicine-maker-0")["spec"]["jobTargetRef"]["template"],
    ];
    for pod in pods {
        let label = &pod["metadata"]["labels"]["app.kubernetes.io/name"];
        assert!(
            selected["values"].as_array().unwrap().contains(label),
            "the policy selects the {label} pods"
        );
        // In: the one port each pod serves its metrics and probes on.
        let port = &pod["spec"]["containers"][0]["ports"][0]["containerPort"];
        assert_eq!(
            policy["ingress"],
            json!([{"ports": [{"protocol": "TCP", "port": port}]}]),
            "{label}"
        );
    }
    // Out: the brokers' TLS listener, and DNS.
    let egress = policy["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 2);
    assert_eq!(
        egress[0]["to"],
        json!([{"podSelector": {"matchLabels": {
            "strimzi.io/cluster": "medicine-pubsub", "strimzi.io/broker-role": "true"}}}])
    );
    assert_eq!(
        egress[0]["ports"],
        json!([{"protocol": "TCP", "port": 9093}])
    );
    assert_eq!(
        egress[1]["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
        "kube-dns"
    );
    let dns: Vec<&Value> = egress[1]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["port"])
        .collect();
    assert_eq!(dns, [&json!(53), &json!(53)]);
}
