//! From a pod's spec to what the agent starts: program, arguments, environment, ports, probes, user. Pure: the
//! Secrets and ConfigMaps the spec refers to are fetched beforehand and handed in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use k8s_openapi::api::core::v1::{Container, Pod, Probe as ProbeSpec, VolumeMount};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::Image;
use super::env::{env_value, expand, utf8, Objects};

/// The user of the distroless `nonroot` images the project ships, for pods that ask to run as non-root without
/// naming a user (the image's `USER` would decide in a real runtime).
pub const IMAGE_NONROOT_UID: u32 = 65532;

/// Names of the Secrets and ConfigMaps a pod refers to (environment and volumes).
pub fn referenced(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut secrets = BTreeSet::new();
    let mut config_maps = BTreeSet::new();
    let Some(spec) = &pod.spec else {
        return (secrets, config_maps);
    };
    for container in &spec.containers {
        for var in container.env.iter().flatten() {
            if let Some(from) = &var.value_from {
                if let Some(key) = &from.secret_key_ref {
                    secrets.insert(key.name.clone());
                }
                if let Some(key) = &from.config_map_key_ref {
                    config_maps.insert(key.name.clone());
                }
            }
        }
        for source in container.env_from.iter().flatten() {
            if let Some(secret) = &source.secret_ref {
                secrets.insert(secret.name.clone());
            }
            if let Some(map) = &source.config_map_ref {
                config_maps.insert(map.name.clone());
            }
        }
    }
    for volume in spec.volumes.iter().flatten() {
        if let Some(secret) = &volume.secret {
            secrets.extend(secret.secret_name.clone());
        }
        if let Some(map) = &volume.config_map {
            config_maps.insert(map.name.clone());
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(secret) = &source.secret {
                secrets.insert(secret.name.clone());
            }
            if let Some(map) = &source.config_map {
                config_maps.insert(map.name.clone());
            }
        }
    }
    (secrets, config_maps)
}

/// A declared container port, and the loopback port the process really listens on. All pods of the agent share
/// one network namespace, so two makers cannot both listen on 9000: a port that the pod's environment or
/// arguments name as a listen address is moved to a free one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub name: Option<String>,
    pub container_port: u16,
    pub host_port: u16,
}

/// An HTTP probe, resolved to the loopback port it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub path: String,
    pub port: u16,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
}

/// Everything needed to start one container.
#[derive(Debug, Clone)]
pub struct Launch {
    pub container: String,
    pub image: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub ports: Vec<PortMapping>,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
    /// uid and gid to run as; `None` keeps the agent's.
    pub user: Option<(u32, u32)>,
}

/// Where the volumes of a pod are on this machine, by volume name.
pub type VolumeDirs = BTreeMap<String, PathBuf>;

/// Plans container `container` of `pod`. `free_port` hands out free loopback ports.
pub fn plan(
    pod: &Pod,
    container: &Container,
    image: &Image,
    objects: &Objects,
    volumes: &VolumeDirs,
    free_port: &mut dyn FnMut() -> anyhow::Result<u16>,
) -> anyhow::Result<Launch> {
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| anyhow!("the pod has no spec"))?;
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();

    let mut env: Vec<(String, String)> = Vec::new();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(secret) = &source.secret_ref {
            match objects.secrets.get(&secret.name) {
                Some(data) => {
                    for (key, value) in data {
                        env.push((format!("{prefix}{key}"), utf8(value, &secret.name, key)?));
                    }
                }
                None if secret.optional == Some(true) => {}
                None => bail!("secret {} (envFrom) does not exist", secret.name),
            }
        }
        if let Some(map) = &source.config_map_ref {
            match objects.config_maps.get(&map.name) {
                Some(data) => env.extend(
                    data.iter()
                        .map(|(k, v)| (format!("{prefix}{k}"), v.clone())),
                ),
                None if map.optional == Some(true) => {}
                None => bail!("configmap {} (envFrom) does not exist", map.name),
            }
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_value(pod, var, objects)? {
            let value = expand(&value, &env);
            env.retain(|(name, _)| name != &var.name);
            env.push((var.name.clone(), value));
        }
    }
    for (name, value) in &image.extra_env {
        env.retain(|(existing, _)| existing != name);
        env.push((name.clone(), value.replace("{namespace}", &namespace)));
    }
    // The process sees the machine's file system, not the container's: a path in a mounted volume is where that
    // volume's directory is.
    for (_, value) in &mut env {
        if let Some(path) = in_volume(value, container, volumes)? {
            *value = path;
        }
    }

    let mut args: Vec<String> = container
        .command
        .iter()
        .flatten()
        .skip(1)
        .chain(container.args.iter().flatten())
        .map(|arg| expand(arg, &env))
        .collect();
    for arg in &mut args {
        if let Some(path) = in_volume(arg, container, volumes)? {
            *arg = path;
        }
    }
    for extra in &image.extra_args {
        args.push(substitute_mounts(extra, container, volumes)?);
    }

    // Move each declared port that the environment or arguments name as a listen address.
    let mut ports = Vec::new();
    for declared in container.ports.iter().flatten() {
        let container_port = u16::try_from(declared.container_port)
            .with_context(|| format!("port {} is out of range", declared.container_port))?;
        let named = env
            .iter()
            .any(|(_, v)| is_listen_address(v, container_port))
            || args.iter().any(|a| is_listen_address(a, container_port));
        let host_port = if named { free_port()? } else { container_port };
        for (_, value) in &mut env {
            if is_listen_address(value, container_port) {
                *value = format!("127.0.0.1:{host_port}");
            }
        }
        for arg in &mut args {
            if is_listen_address(arg, container_port) {
                *arg = format!("127.0.0.1:{host_port}");
            }
        }
        ports.push(PortMapping {
            name: declared.name.clone(),
            container_port,
            host_port,
        });
    }

    let readiness = container
        .readiness_probe
        .as_ref()
        .map(|p| probe(p, &ports))
        .transpose()
        .context("readinessProbe")?;
    let liveness = container
        .liveness_probe
        .as_ref()
        .map(|p| probe(p, &ports))
        .transpose()
        .context("livenessProbe")?;

    Ok(Launch {
        container: container.name.clone(),
        image: container.image.clone().unwrap_or_default(),
        program: image.binary.clone(),
        args,
        env,
        ports,
        readiness,
        liveness,
        user: user(spec, container)?,
    })
}

/// Whether `value` is a listen address on `port`: `:9000`, `0.0.0.0:9000`, `127.0.0.1:9000`, `[::]:9000`.
fn is_listen_address(value: &str, port: u16) -> bool {
    let Some((host, p)) = value.rsplit_once(':') else {
        return false;
    };
    p == port.to_string() && matches!(host, "" | "0.0.0.0" | "127.0.0.1" | "localhost" | "[::]")
}

/// The directory of the volume `mount` names (its `subPath` within it).
fn mount_dir(mount: &VolumeMount, volumes: &VolumeDirs) -> anyhow::Result<PathBuf> {
    let dir = volumes
        .get(&mount.name)
        .ok_or_else(|| anyhow!("volume {} is not prepared", mount.name))?;
    Ok(match &mount.sub_path {
        Some(sub) if !sub.is_empty() => dir.join(sub),
        _ => dir.clone(),
    })
}

/// `value` on this machine when it is a path inside one of the container's mounts (`/etc/ca/ca.crt` with a
/// volume mounted at `/etc/ca`); `None` for anything else.
fn in_volume(
    value: &str,
    container: &Container,
    volumes: &VolumeDirs,
) -> anyhow::Result<Option<String>> {
    for mount in container.volume_mounts.iter().flatten() {
        let root = mount.mount_path.trim_end_matches('/');
        let rest = match value.strip_prefix(root) {
            Some(rest) if !root.is_empty() && (rest.is_empty() || rest.starts_with('/')) => rest,
            _ => continue,
        };
        let dir = mount_dir(mount, volumes)?;
        return Ok(Some(format!("{}{rest}", dir.display())));
    }
    Ok(None)
}

/// Replaces `{mount:PATH}` by the directory of the volume the container mounts at `PATH`.
fn substitute_mounts(
    arg: &str,
    container: &Container,
    volumes: &VolumeDirs,
) -> anyhow::Result<String> {
    let Some(start) = arg.find("{mount:") else {
        return Ok(arg.to_owned());
    };
    let end = arg[start..]
        .find('}')
        .map(|e| start + e)
        .ok_or_else(|| anyhow!("unterminated {{mount:…}} in {arg}"))?;
    let path = &arg[start + "{mount:".len()..end];
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == path)
        .ok_or_else(|| anyhow!("container {} mounts nothing at {path}", container.name))?;
    let dir = mount_dir(mount, volumes)?;
    Ok(format!(
        "{}{}{}",
        &arg[..start],
        dir.display(),
        &arg[end + 1..]
    ))
}

fn probe(spec: &ProbeSpec, ports: &[PortMapping]) -> anyhow::Result<Probe> {
    let http = spec
        .http_get
        .as_ref()
        .ok_or_else(|| anyhow!("only httpGet probes are supported here"))?;
    let port = match &http.port {
        IntOrString::Int(port) => {
            let port = u16::try_from(*port).context("probe port out of range")?;
            ports
                .iter()
                .find(|m| m.container_port == port)
                .map_or(port, |m| m.host_port)
        }
        IntOrString::String(name) => ports
            .iter()
            .find(|m| m.name.as_deref() == Some(name.as_str()))
            .map(|m| m.host_port)
            .ok_or_else(|| anyhow!("probe port {name} is not a declared port"))?,
    };
    let seconds = |value: Option<i32>, default: u64| {
        Duration::from_secs(value.map_or(default, |v| u64::try_from(v).unwrap_or(default)))
    };
    Ok(Probe {
        path: http.path.clone().unwrap_or_else(|| "/".into()),
        port,
        initial_delay: seconds(spec.initial_delay_seconds, 0),
        period: seconds(spec.period_seconds, 10),
        timeout: seconds(spec.timeout_seconds, 1),
        failure_threshold: spec
            .failure_threshold
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(3),
    })
}

/// The uid and gid a container runs as: its own security context, else the pod's; a pod that must run as
/// non-root without naming a user runs as the image's non-root user.
fn user(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    container: &Container,
) -> anyhow::Result<Option<(u32, u32)>> {
    let pod = spec.security_context.as_ref();
    let own = container.security_context.as_ref();
    let run_as_user = own
        .and_then(|s| s.run_as_user)
        .or_else(|| pod.and_then(|s| s.run_as_user));
    let run_as_group = own
        .and_then(|s| s.run_as_group)
        .or_else(|| pod.and_then(|s| s.run_as_group));
    let non_root = own
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);
    let uid = match run_as_user {
        Some(0) if non_root => bail!("runAsNonRoot is set but runAsUser is 0"),
        Some(uid) => Some(u32::try_from(uid).context("runAsUser out of range")?),
        None if non_root => Some(IMAGE_NONROOT_UID),
        None => None,
    };
    Ok(uid.map(|uid| {
        let gid = run_as_group
            .and_then(|g| u32::try_from(g).ok())
            .unwrap_or(uid);
        (uid, gid)
    }))
}

/// The directory of one pod on this machine.
pub fn pod_dir(state_dir: &Path, pod: &Pod) -> PathBuf {
    let meta = &pod.metadata;
    state_dir.join("pods").join(format!(
        "{}_{}_{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or("pod"),
        meta.uid.as_deref().unwrap_or("nouid")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_norway::from_str(yaml).unwrap()
    }

    const MAKER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: medicine-maker-0-abc, namespace: default, uid: u1, labels: {app: m}}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532}
  containers:
    - name: medicine
      image: medicine-pubsub/medicine:dev
      env:
        - {name: MAKER_ID, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: METRICS_ADDR, value: "0.0.0.0:9000"}
        - {name: GREETING, value: "hi $(MAKER_ID) $$(MAKER_ID)"}
        - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}
        - {name: MAYBE, valueFrom: {secretKeyRef: {name: gone, key: k, optional: true}}}
      ports: [{name: metrics, containerPort: 9000}]
      livenessProbe: {httpGet: {path: /healthz, port: metrics}, periodSeconds: 10}
"#;

    fn image() -> Image {
        Image {
            binary: "/bin/medicine".into(),
            extra_args: vec![],
            extra_env: BTreeMap::new(),
        }
    }

    fn objects() -> Objects {
        let mut objects = Objects::default();
        objects.secrets.insert(
            "creds".into(),
            BTreeMap::from([("password".into(), b"s3cret".to_vec())]),
        );
        objects
    }

    fn launch(pod: &Pod) -> anyhow::Result<Launch> {
        let container = &pod.spec.as_ref().unwrap().containers[0];
        plan(
            pod,
            container,
            &image(),
            &objects(),
            &VolumeDirs::new(),
            &mut || Ok(40001),
        )
    }

    fn env<'a>(launch: &'a Launch, name: &str) -> Option<&'a str> {
        launch
            .env
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn resolves_field_refs_secrets_and_expansions() {
        let launch = launch(&pod(MAKER)).unwrap();
        assert_eq!(env(&launch, "MAKER_ID"), Some("medicine-maker-0-abc"));
        assert_eq!(env(&launch, "PASSWORD"), Some("s3cret"));
        assert_eq!(
            env(&launch, "GREETING"),
            Some("hi medicine-maker-0-abc $(MAKER_ID)")
        );
        assert_eq!(env(&launch, "MAYBE"), None, "optional and absent: unset");
        assert_eq!(launch.user, Some((65532, 65532)));
    }

    #[test]
    fn a_listen_address_moves_to_a_free_port_and_probes_follow() {
        let launch = launch(&pod(MAKER)).unwrap();
        assert_eq!(env(&launch, "METRICS_ADDR"), Some("127.0.0.1:40001"));
        assert_eq!(launch.ports[0].host_port, 40001);
        let liveness = launch.liveness.unwrap();
        assert_eq!((liveness.path.as_str(), liveness.port), ("/healthz", 40001));
        assert_eq!(liveness.period, Duration::from_secs(10));
    }

    #[test]
    fn a_missing_secret_fails_the_launch() {
        let yaml = MAKER.replace("name: creds", "name: other");
        let err = launch(&pod(&yaml)).unwrap_err();
        assert!(
            format!("{err:#}").contains("secret other has no key password"),
            "{err:#}"
        );
    }

    #[test]
    fn non_root_without_a_user_runs_as_the_images_user_and_root_is_refused() {
        let yaml = MAKER.replace(", runAsUser: 65532, runAsGroup: 65532", "");
        assert_eq!(launch(&pod(&yaml)).unwrap().user, Some((65532, 65532)));
        let yaml = MAKER.replace("runAsUser: 65532", "runAsUser: 0");
        assert!(launch(&pod(&yaml)).is_err());
    }

    #[test]
    fn mounts_are_substituted_in_extra_arguments() {
        let pod = pod(r#"
metadata: {name: keda-operator-x, namespace: keda, uid: u2}
spec:
  containers:
    - name: keda-operator
      image: ghcr.io/kedacore/keda:2.20.2
      command: [/keda]
      args: [--leader-elect]
      volumeMounts: [{name: certificates, mountPath: /certs}]
"#);
        let image = Image {
            binary: "/bin/keda".into(),
            extra_args: vec!["--cert-dir={mount:/certs}".into()],
            extra_env: BTreeMap::from([("NS".into(), "{namespace}".into())]),
        };
        let volumes =
            VolumeDirs::from([("certificates".into(), PathBuf::from("/pods/x/certificates"))]);
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let launch = plan(
            &pod,
            container,
            &image,
            &Objects::default(),
            &volumes,
            &mut || Ok(1),
        )
        .unwrap();
        assert_eq!(
            launch.args,
            ["--leader-elect", "--cert-dir=/pods/x/certificates"]
        );
        assert_eq!(launch.env, [("NS".to_owned(), "keda".to_owned())]);
        assert_eq!(launch.user, None);
    }

    #[test]
    fn paths_inside_a_mount_point_at_the_volume() {
        let pod = pod(r#"
metadata: {name: patient-0-x, namespace: default, uid: u3}
spec:
  volumes: [{name: kafka-ca, secret: {secretName: ca}}]
  containers:
    - name: patient
      image: medicine-pubsub/patient:dev
      args: [--ca=/etc/ca/ca.crt, /etc/ca/ca.crt]
      env:
        - {name: CA, value: /etc/ca/ca.crt}
        - {name: DIR, value: /etc/ca}
        - {name: BESIDE, value: /etc/cab/ca.crt}
        - {name: OTHER, value: /etc/ssl/certs}
      volumeMounts: [{name: kafka-ca, mountPath: /etc/ca/, readOnly: true}]
"#);
        let volumes = VolumeDirs::from([("kafka-ca".into(), PathBuf::from("/pods/p/kafka-ca"))]);
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let launch = plan(
            &pod,
            container,
            &image(),
            &Objects::default(),
            &volumes,
            &mut || Ok(1),
        )
        .unwrap();
        assert_eq!(env(&launch, "CA"), Some("/pods/p/kafka-ca/ca.crt"));
        assert_eq!(env(&launch, "DIR"), Some("/pods/p/kafka-ca"));
        assert_eq!(env(&launch, "BESIDE"), Some("/etc/cab/ca.crt"));
        assert_eq!(env(&launch, "OTHER"), Some("/etc/ssl/certs"));
        assert_eq!(
            launch.args,
            ["--ca=/etc/ca/ca.crt", "/pods/p/kafka-ca/ca.crt"],
            "a whole argument is a path; a flag with a path in it is left as written"
        );
    }

    #[test]
    fn referenced_objects_are_collected() {
        let (secrets, maps) = referenced(&pod(MAKER));
        assert_eq!(
            secrets,
            BTreeSet::from(["creds".to_owned(), "gone".to_owned()])
        );
        assert!(maps.is_empty());
    }
}
