//! The users and ACLs of `deploy/`, applied to a real broker as Strimzi's User Operator would apply them: each
//! `KafkaUser` becomes SCRAM-SHA-512 credentials and the ACL entries its `spec.authorization` lists, written
//! through Kafka's admin API by `scripts/kafka-dev.sh access`. The tests of the shipped ACLs and the Kubernetes
//! end-to-end test's Strimzi stand-in both go through here, so what they exercise is the manifest, not a copy.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

/// One `KafkaUser`, as far as a broker is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub acls: Vec<Acl>,
}

/// One ACL entry, in Kafka's own names (`TOPIC`, `PREFIXED`, `READ` ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub permission: String,
    pub resource_type: String,
    pub pattern_type: String,
    pub resource: String,
    pub operation: String,
    pub host: String,
}

/// `IdempotentWrite` → `IDEMPOTENT_WRITE`, `transactionalId` → `TRANSACTIONAL_ID`.
fn enum_name(strimzi: &str) -> String {
    let mut name = String::new();
    for (i, c) in strimzi.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

impl User {
    /// Reads a `KafkaUser` object. Only what the project uses is accepted (SCRAM-SHA-512, `simple`
    /// authorization); anything else is an error, not silently dropped.
    pub fn from_kafka_user(object: &Value) -> Result<Self, String> {
        let name = text(object, "/metadata/name").ok_or("a KafkaUser without metadata.name")?;
        let authentication = text(object, "/spec/authentication/type");
        if authentication != Some("scram-sha-512") {
            return Err(format!(
                "KafkaUser {name}: authentication {authentication:?}; only scram-sha-512 is applied here"
            ));
        }
        let mut acls = Vec::new();
        if let Some(authorization) = object.pointer("/spec/authorization") {
            if text(authorization, "/type") != Some("simple") {
                return Err(format!(
                    "KafkaUser {name}: only simple authorization is applied here"
                ));
            }
            for rule in authorization["acls"].as_array().into_iter().flatten() {
                let resource_type = text(rule, "/resource/type")
                    .ok_or_else(|| format!("KafkaUser {name}: an ACL without resource.type"))?;
                let resource = match resource_type {
                    "cluster" => "kafka-cluster",
                    _ => text(rule, "/resource/name").ok_or_else(|| {
                        format!("KafkaUser {name}: a {resource_type} ACL without resource.name")
                    })?,
                };
                let pattern_type = match text(rule, "/resource/patternType").unwrap_or("literal") {
                    "literal" => "LITERAL",
                    "prefix" => "PREFIXED",
                    other => return Err(format!("KafkaUser {name}: patternType {other}")),
                };
                for operation in rule["operations"].as_array().into_iter().flatten() {
                    let operation = operation.as_str().ok_or_else(|| {
                        format!("KafkaUser {name}: an operation that is not a string")
                    })?;
                    acls.push(Acl {
                        permission: enum_name(text(rule, "/type").unwrap_or("allow")),
                        resource_type: enum_name(resource_type),
                        pattern_type: pattern_type.to_owned(),
                        resource: resource.to_owned(),
                        operation: enum_name(operation),
                        host: text(rule, "/host").unwrap_or("*").to_owned(),
                    });
                }
            }
        }
        Ok(Self {
            name: name.to_owned(),
            acls,
        })
    }

    /// The lines of `scripts/kafka-dev.sh access` for this user with `password`.
    pub fn spec(&self, password: &str) -> String {
        let mut spec = format!("user\t{}\t{password}\n", self.name);
        for acl in &self.acls {
            spec.push_str(&format!(
                "acl\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                self.name,
                acl.permission,
                acl.resource_type,
                acl.pattern_type,
                acl.resource,
                acl.operation,
                acl.host
            ));
        }
        spec
    }
}

/// The `KafkaUser` objects of a YAML file of several documents (deploy/infra/users.yaml).
pub fn users_in(manifest: &Path) -> Result<Vec<User>, String> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| format!("reading {}: {e}", manifest.display()))?;
    let mut users = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let object: Value = serde::Deserialize::deserialize(document)
            .map_err(|e| format!("{}: {e}", manifest.display()))?;
        if object["kind"] == "KafkaUser" {
            users.push(User::from_kafka_user(&object)?);
        }
    }
    Ok(users)
}

/// Runs `scripts/kafka-dev.sh access` for the broker of `kafka_dev_dir` on `port` with `spec` on its standard
/// input (passwords never on a command line). Returns what it printed.
pub fn apply(script: &Path, kafka_dev_dir: &Path, port: u16, spec: &str) -> Result<String, String> {
    let mut child = Command::new(script)
        .arg("access")
        .env("KAFKA_DEV_DIR", kafka_dev_dir)
        .env("KAFKA_DEV_PORT", port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(spec.as_bytes())
        .map_err(|e| format!("writing the access spec: {e}"))?;
    let output = child
        .wait_with_output()
        .map_err(|e| format!("waiting for kafka-dev.sh access: {e}"))?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(printed)
    } else {
        Err(format!("kafka-dev.sh access failed: {printed}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strimzi_names_become_kafka_enum_names() {
        assert_eq!(enum_name("transactionalId"), "TRANSACTIONAL_ID");
        assert_eq!(enum_name("IdempotentWrite"), "IDEMPOTENT_WRITE");
        assert_eq!(enum_name("Read"), "READ");
        assert_eq!(enum_name("allow"), "ALLOW");
    }

    #[test]
    fn a_kafka_user_becomes_one_entry_per_operation() {
        let user = serde_json::json!({
            "kind": "KafkaUser",
            "metadata": {"name": "u"},
            "spec": {
                "authentication": {"type": "scram-sha-512"},
                "authorization": {"type": "simple", "acls": [
                    {"resource": {"type": "transactionalId", "name": "m-", "patternType": "prefix"},
                     "operations": ["Write", "Describe"]},
                    {"type": "deny", "resource": {"type": "cluster"}, "operations": ["Alter"], "host": "10.0.0.1"}
                ]}
            }
        });
        let user = User::from_kafka_user(&user).unwrap();
        assert_eq!(
            user.spec("pw"),
            "user\tu\tpw\n\
             acl\tu\tALLOW\tTRANSACTIONAL_ID\tPREFIXED\tm-\tWRITE\t*\n\
             acl\tu\tALLOW\tTRANSACTIONAL_ID\tPREFIXED\tm-\tDESCRIBE\t*\n\
             acl\tu\tDENY\tCLUSTER\tLITERAL\tkafka-cluster\tALTER\t10.0.0.1\n"
        );
    }

    #[test]
    fn what_is_not_applied_is_refused() {
        let tls_user = serde_json::json!({
            "metadata": {"name": "u"}, "spec": {"authentication": {"type": "tls"}}
        });
        assert!(User::from_kafka_user(&tls_user)
            .unwrap_err()
            .contains("only scram-sha-512"));
    }
}
