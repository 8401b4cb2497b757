//! The `Kafka` and its `KafkaNodePool`s: the broker pods, the bootstrap Service and where it leads, the cluster
//! CA's Secret, and whether the cluster asks for what the broker serves.

use std::collections::BTreeMap;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{
    Container, Pod, PodSpec, Secret, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tracing::info;

use super::{
    owned_by, owned_meta, ready, Controller, KAFKA_IMAGE, PLAIN_PORT, SUPPORTED_KAFKA_VERSIONS,
    TLS_PORT,
};

impl Controller {
    pub(super) async fn reconcile_kafka(
        &self,
        kafka: &DynamicObject,
        pools: &[DynamicObject],
    ) -> anyhow::Result<()> {
        let name = kafka.metadata.name.clone().unwrap_or_default();
        let generation = kafka.metadata.generation.unwrap_or(0);
        let version = kafka.data["spec"]["kafka"]["version"]
            .as_str()
            .unwrap_or("4.3.1");
        let already = |reason: &str| {
            kafka.data["status"]["observedGeneration"] == json!(generation)
                && kafka.data["status"]["conditions"][0]["reason"] == json!(reason)
        };
        let own_pools = pools_of(&name, pools);
        if let Some((reason, message)) = refusal(kafka, version, own_pools.is_empty()) {
            if !already(reason) {
                self.patch_kafka_status(
                    &name,
                    json!({
                        "observedGeneration": generation,
                        "conditions": ready(false, reason, &message),
                    }),
                )
                .await?;
            }
            return Ok(());
        }
        let owner = owned_by("Kafka", kafka);
        let brokers = own_pools
            .iter()
            .map(|p| p.data["spec"]["replicas"].as_u64().unwrap_or(0))
            .sum();
        self.ensure_service(&name, brokers, &owner).await?;
        self.ensure_cluster_ca(&name, &owner).await?;
        let mut all_ready = true;
        let mut pool_names = Vec::new();
        for pool in own_pools {
            all_ready &= self.reconcile_pool(&name, pool, &owner).await?;
            pool_names.push(json!({ "name": pool.metadata.name.clone().unwrap_or_default() }));
        }
        if all_ready && !already("Ready") {
            info!(kafka = %name, "Kafka ready");
            let namespace = &self.settings.namespace;
            self.patch_kafka_status(
                &name,
                json!({
                    "observedGeneration": generation,
                    "conditions": ready(true, "Ready", "the stand-in's broker pods are running"),
                    "kafkaVersion": version,
                    "clusterId": "kube-dev",
                    "kafkaNodePools": pool_names,
                    "listeners": [{
                        "name": "plain",
                        "bootstrapServers": format!("{name}-kafka-bootstrap.{namespace}.svc:{PLAIN_PORT}"),
                    }, {
                        "name": "tls",
                        "bootstrapServers": format!("{name}-kafka-bootstrap.{namespace}.svc:{TLS_PORT}"),
                    }],
                }),
            )
            .await?;
        }
        Ok(())
    }

    async fn patch_kafka_status(&self, name: &str, status: Value) -> anyhow::Result<()> {
        self.api("Kafka")
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
        Ok(())
    }

    /// The pool's broker pods, and its status once for each generation; whether every pod is ready.
    async fn reconcile_pool(
        &self,
        cluster: &str,
        pool: &DynamicObject,
        owner: &[OwnerReference],
    ) -> anyhow::Result<bool> {
        let pool_name = pool.metadata.name.clone().unwrap_or_default();
        let replicas = pool.data["spec"]["replicas"].as_u64().unwrap_or(0);
        let node_ids: Vec<u64> = (0..replicas).collect();
        let mut all_ready = true;
        for id in &node_ids {
            all_ready &= self
                .ensure_broker_pod(cluster, &pool_name, *id, owner)
                .await?;
        }
        let generation = pool.metadata.generation.unwrap_or(0);
        if pool.data["status"]["observedGeneration"] != json!(generation) {
            self.api("KafkaNodePool")
                .patch_status(
                    &pool_name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {
                        "observedGeneration": generation,
                        "nodeIds": node_ids,
                        "replicas": replicas,
                        "roles": pool.data["spec"]["roles"],
                        "labelSelector": format!("strimzi.io/cluster={cluster},strimzi.io/name={cluster}-kafka,strimzi.io/kind=Kafka,strimzi.io/pool-name={pool_name}"),
                        "clusterId": "kube-dev",
                    }})),
                )
                .await?;
        }
        Ok(all_ready)
    }

    /// The bootstrap Service, with a port for each broker's listeners (every broker advertises the bootstrap
    /// name, node `i` on the plain and TLS ports plus `3 i`: `scripts/kafka-dev.sh`), and its EndpointSlice: the
    /// brokers are not in the pods kwok plays but on the node's address (`--broker-address`), so the Service has
    /// no selector and the stand-in says where it leads, as a Service for something outside the cluster does.
    async fn ensure_service(
        &self,
        cluster: &str,
        brokers: u64,
        owner: &[OwnerReference],
    ) -> anyhow::Result<()> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let slices: Api<EndpointSlice> =
            Api::namespaced(self.client.clone(), &self.settings.namespace);
        let name = format!("{cluster}-kafka-bootstrap");
        let ports = broker_ports(brokers);
        if services.get_opt(&name).await?.is_none() {
            let service = Service {
                metadata: owned_meta(&name, &[("strimzi.io/cluster", cluster)], owner),
                spec: Some(ServiceSpec {
                    ports: Some(
                        ports
                            .iter()
                            .map(|(port_name, port)| ServicePort {
                                name: Some(port_name.clone()),
                                port: i32::from(*port),
                                target_port: Some(IntOrString::Int(i32::from(*port))),
                                ..ServicePort::default()
                            })
                            .collect(),
                    ),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            };
            services.create(&PostParams::default(), &service).await?;
        }
        let slice_name = format!("{name}-brokers");
        if slices.get_opt(&slice_name).await?.is_none() {
            let slice = EndpointSlice {
                metadata: owned_meta(
                    &slice_name,
                    &[
                        ("kubernetes.io/service-name", &name),
                        ("endpointslice.kubernetes.io/managed-by", "kube-dev-strimzi"),
                    ],
                    owner,
                ),
                address_type: "IPv4".to_owned(),
                endpoints: vec![Endpoint {
                    addresses: vec![self.settings.broker_address.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                }],
                ports: Some(
                    ports
                        .into_iter()
                        .map(|(port_name, port)| EndpointPort {
                            name: Some(port_name),
                            port: Some(i32::from(port)),
                            protocol: Some("TCP".to_owned()),
                            ..EndpointPort::default()
                        })
                        .collect(),
                ),
            };
            slices.create(&PostParams::default(), &slice).await?;
            info!(service = %name, address = %self.settings.broker_address, "bootstrap Service leads to the brokers");
        }
        Ok(())
    }

    /// The Secret Strimzi publishes the cluster CA's certificate in, for clients to trust the brokers.
    async fn ensure_cluster_ca(
        &self,
        cluster: &str,
        owner: &[OwnerReference],
    ) -> anyhow::Result<()> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let name = format!("{cluster}-cluster-ca-cert");
        if secrets.get_opt(&name).await?.is_some() {
            return Ok(());
        }
        let ca_file = self.settings.kafka_dev_dir.join("tls/ca.crt");
        let ca = std::fs::read(&ca_file)
            .with_context(|| format!("reading the broker's CA {}", ca_file.display()))?;
        let secret = Secret {
            metadata: owned_meta(
                &name,
                &[
                    ("strimzi.io/cluster", cluster),
                    ("strimzi.io/kind", "Kafka"),
                ],
                owner,
            ),
            data: Some(BTreeMap::from([("ca.crt".to_owned(), ByteString(ca))])),
            ..Secret::default()
        };
        secrets.create(&PostParams::default(), &secret).await?;
        info!(secret = %name, "cluster CA published");
        Ok(())
    }

    /// Creates the broker pod if absent; returns whether it is Ready.
    async fn ensure_broker_pod(
        &self,
        cluster: &str,
        pool: &str,
        id: u64,
        owner: &[OwnerReference],
    ) -> anyhow::Result<bool> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let name = format!("{cluster}-{pool}-{id}");
        if let Some(pod) = pods.get_opt(&name).await? {
            return Ok(pod
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")));
        }
        let pod = Pod {
            metadata: owned_meta(
                &name,
                &[
                    ("strimzi.io/cluster", cluster),
                    ("strimzi.io/kind", "Kafka"),
                    ("strimzi.io/name", &format!("{cluster}-kafka")),
                    ("strimzi.io/pool-name", pool),
                    ("strimzi.io/broker-role", "true"),
                    ("strimzi.io/controller-role", "true"),
                ],
                owner,
            ),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "kafka".to_owned(),
                    image: Some(KAFKA_IMAGE.to_owned()),
                    ..Container::default()
                }],
                node_name: Some(self.settings.broker_node.clone()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        pods.create(&PostParams::default(), &pod).await?;
        Ok(false)
    }
}

/// The bootstrap Service's ports: Strimzi's names for the first broker's listeners, then each other broker's.
fn broker_ports(brokers: u64) -> Vec<(String, u16)> {
    (0..brokers.max(1))
        .flat_map(|i| {
            let step = 3 * u16::try_from(i).unwrap_or(u16::MAX / 4);
            let (plain, tls) = if i == 0 {
                ("tcp-clients".to_owned(), "tcp-clientstls".to_owned())
            } else {
                (format!("clients-{i}"), format!("clientstls-{i}"))
            };
            [(plain, PLAIN_PORT + step), (tls, TLS_PORT + step)]
        })
        .collect()
}

/// The cluster's KafkaNodePools (labelled for it, not being deleted).
fn pools_of<'a>(cluster: &str, pools: &'a [DynamicObject]) -> Vec<&'a DynamicObject> {
    pools
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("strimzi.io/cluster"))
                .is_some_and(|c| c == cluster)
                && p.metadata.deletion_timestamp.is_none()
        })
        .collect()
}

/// Why the stand-in will not run the `Kafka` (its status' reason and message), if it will not.
fn refusal(kafka: &DynamicObject, version: &str, no_pools: bool) -> Option<(&'static str, String)> {
    if !SUPPORTED_KAFKA_VERSIONS.contains(&version) {
        return Some((
            "UnsupportedKafkaVersion",
            format!("Kafka {version} is not supported by Strimzi 1.2.0 (supported: {SUPPORTED_KAFKA_VERSIONS:?})"),
        ));
    }
    if let Err(difference) = served_security(&kafka.data["spec"]["kafka"]) {
        return Some(("NotWhatTheBrokerServes", difference));
    }
    no_pools.then(|| {
        (
            "NoNodePools",
            "no KafkaNodePool is labelled for this cluster".to_owned(),
        )
    })
}

/// Whether a `Kafka`'s `spec.kafka` asks for the security the broker serves; otherwise what differs. The
/// applications connect as the manifests say: a cluster declared differently would refuse them, so the stand-in
/// does not pretend it would not.
pub fn served_security(kafka: &Value) -> Result<(), String> {
    let mut wanted: Vec<(u64, bool, Option<&str>)> = kafka["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["port"].as_u64().unwrap_or(0),
                l["tls"].as_bool().unwrap_or(false),
                l["authentication"]["type"].as_str(),
            )
        })
        .collect();
    wanted.sort_unstable();
    let served = vec![
        (u64::from(PLAIN_PORT), false, None),
        (u64::from(TLS_PORT), true, Some("scram-sha-512")),
    ];
    if wanted != served {
        return Err(format!(
            "the stand-in's broker serves plain on {PLAIN_PORT} (no authentication) and TLS on {TLS_PORT} \
             with scram-sha-512; the Kafka asks for (port, tls, authentication) {wanted:?}"
        ));
    }
    let authorization = &kafka["authorization"];
    let super_users: Vec<&str> = authorization["superUsers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if authorization["type"] != "simple" || !super_users.contains(&"ANONYMOUS") {
        return Err(format!(
            "the stand-in's broker runs Kafka's StandardAuthorizer with super user ANONYMOUS (the plain \
             listener's clients); the Kafka asks for authorization {authorization}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Value {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/infra/kafka.yaml"),
        )
        .unwrap();
        let kafka: Value = serde_norway::from_str(&text).unwrap();
        kafka["spec"]["kafka"].clone()
    }

    #[test]
    fn the_bootstrap_service_has_each_brokers_listeners_under_names_a_port_may_have() {
        let ports = broker_ports(3);
        let numbers: Vec<u16> = ports.iter().map(|(_, port)| *port).collect();
        assert_eq!(numbers, [9092, 9093, 9095, 9096, 9098, 9099]);
        assert_eq!(ports[1].0, "tcp-clientstls");
        // A port's name is a DNS label of at most 15 characters.
        assert!(ports.iter().all(|(name, _)| name.len() <= 15), "{ports:?}");
    }

    #[test]
    fn the_shipped_cluster_asks_for_what_the_broker_serves() {
        assert_eq!(served_security(&shipped()), Ok(()));
    }

    #[test]
    fn a_cluster_declared_otherwise_is_refused() {
        let mut open = shipped();
        open["listeners"][1]
            .as_object_mut()
            .unwrap()
            .remove("authentication");
        assert!(served_security(&open)
            .unwrap_err()
            .contains("scram-sha-512"));

        let mut without_acls = shipped();
        without_acls
            .as_object_mut()
            .unwrap()
            .remove("authorization");
        assert!(served_security(&without_acls)
            .unwrap_err()
            .contains("StandardAuthorizer"));

        let mut no_anonymous = shipped();
        no_anonymous["authorization"]["superUsers"] = json!(["admin"]);
        assert!(served_security(&no_anonymous).is_err());
    }
}
