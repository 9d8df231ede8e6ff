//! Translation between Porthole's engine model and the Docker Engine API's: container
//! configuration to a create request, Docker's inspect/list/image/event objects to engine data,
//! and Docker's HTTP statuses and client failures to classified [`EngineError`]s.

use std::collections::{BTreeMap, HashMap};

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EventMessage, HostConfig, ImageInspect,
    Mount as DockerMount, MountTmpfsOptions, MountType, RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum,
};
use chrono::{DateTime, TimeZone, Utc};

use crate::api::{
    ContainerConfig, ContainerDetails, ContainerState, ContainerStatus, EngineError, ErrorKind, Event, EventAction,
    ImageDetails, ImageRunConfig, ImageSummary, Mount, NetworkMode, Resources, RestartPolicy,
};

/// The label holding the [`ContainerConfig`] a container was created from (JSON), so inspect can
/// return the configuration as the user gave it rather than Docker's merge with the image.
/// Hidden from the labels the engine reports.
pub(super) const CONFIG_LABEL: &str = "io.porthole.config";

/// Longest daemon message passed on to users; longer ones are cut (the whole is logged).
const MAX_MESSAGE: usize = 300;

/// An HTTP error status from the daemon as an engine error. Client errors (4xx) carry Docker's own
/// message, which describes the request ("No such container: x"); server errors carry only
/// `context`, with the daemon's words kept for the logs.
pub(super) fn status_error(status: u16, message: String, context: &str) -> EngineError {
    let message = message.trim().to_string();
    let shown = || {
        let first_line = message.lines().next().unwrap_or_default();
        let mut shown: String = first_line.chars().take(MAX_MESSAGE).collect();
        if shown.len() < first_line.len() {
            shown.push('…');
        }
        if shown.is_empty() {
            format!("{context} (Docker answered {status})")
        } else {
            shown
        }
    };
    let kind = match status {
        400 => ErrorKind::InvalidArgument,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        401 | 403 | 503 => ErrorKind::Unavailable,
        501 => ErrorKind::NotImplemented,
        _ => ErrorKind::Internal,
    };
    match kind {
        ErrorKind::Internal | ErrorKind::Unavailable => {
            tracing::warn!("docker: {context}: status {status}: {message}");
            let detail = std::io::Error::other(format!("status {status}: {message}"));
            EngineError::new(kind, format!("{context}: the Docker daemon failed")).with_source(detail)
        }
        _ => EngineError::new(kind, shown()).with_source(std::io::Error::other(format!("status {status}"))),
    }
}

/// A bollard failure as an engine error; `context` says what was being done.
pub(super) fn docker_error(context: &str, err: DockerError) -> EngineError {
    match err {
        DockerError::DockerResponseServerError { status_code, message } => status_error(status_code, message, context),
        DockerError::IOError { .. }
        | DockerError::HyperResponseError { .. }
        | DockerError::HyperLegacyError { .. }
        | DockerError::SocketNotFoundError(_)
        | DockerError::RequestTimeoutError => match super::tls::failure(&err) {
            Some(why) => EngineError::unavailable(format!("{context}: TLS failed: {why}")).with_source(err),
            None => {
                EngineError::unavailable(format!("{context}: the Docker daemon cannot be reached")).with_source(err)
            }
        },
        other => EngineError::internal(context.to_string(), other),
    }
}

/// Builds Docker's create request. The process is kept as confined as the native engine's:
/// no new privileges, swap limited to the memory limit, and `StdinOnce` for a non-TTY container
/// with stdin so that closing an attachment's input ends the process's input (as a pipe does).
pub(super) fn create_body(config: &ContainerConfig) -> Result<ContainerCreateBody, EngineError> {
    let mut labels: HashMap<String, String> = config.labels.clone().into_iter().collect();
    if labels.contains_key(CONFIG_LABEL) {
        return Err(EngineError::invalid(format!("the label {CONFIG_LABEL} is reserved")));
    }
    let recorded = serde_json::to_string(config).map_err(|e| EngineError::internal("cannot record the config", e))?;
    labels.insert(CONFIG_LABEL.to_string(), recorded);
    let mounts = config
        .mounts
        .iter()
        .map(|mount| match mount {
            Mount::Bind { source, target, read_only } => DockerMount {
                typ: Some(MountType::BIND),
                source: Some(source.to_string_lossy().into_owned()),
                target: Some(target.clone()),
                read_only: Some(*read_only),
                ..Default::default()
            },
            Mount::Volume { name, target, read_only } => DockerMount {
                typ: Some(MountType::VOLUME),
                source: Some(name.clone()),
                target: Some(target.clone()),
                read_only: Some(*read_only),
                ..Default::default()
            },
            Mount::Tmpfs { target, size_bytes } => DockerMount {
                typ: Some(MountType::TMPFS),
                target: Some(target.clone()),
                tmpfs_options: (*size_bytes > 0)
                    .then(|| MountTmpfsOptions { size_bytes: Some(*size_bytes as i64), ..Default::default() }),
                ..Default::default()
            },
        })
        .collect();
    let restart_policy = match config.restart_policy {
        RestartPolicy::No => DockerRestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None },
        RestartPolicy::Always => {
            DockerRestartPolicy { name: Some(RestartPolicyNameEnum::ALWAYS), maximum_retry_count: None }
        }
        RestartPolicy::UnlessStopped => {
            DockerRestartPolicy { name: Some(RestartPolicyNameEnum::UNLESS_STOPPED), maximum_retry_count: None }
        }
        RestartPolicy::OnFailure { max_retries } => DockerRestartPolicy {
            name: Some(RestartPolicyNameEnum::ON_FAILURE),
            maximum_retry_count: Some(i64::from(max_retries)),
        },
    };
    let memory = config
        .resources
        .memory_bytes
        .map(|m| i64::try_from(m).map_err(|_| EngineError::invalid(format!("memory limit {m} is too large"))))
        .transpose()?;
    let nano_cpus = config
        .resources
        .cpu_millis
        .map(|m| {
            m.checked_mul(1_000_000)
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| EngineError::invalid(format!("cpu limit {m} is too large")))
        })
        .transpose()?;
    let host_config = HostConfig {
        memory,
        memory_swap: memory,
        nano_cpus,
        pids_limit: config.resources.pids_limit,
        network_mode: Some(
            match config.network_mode {
                NetworkMode::None => "none",
                NetworkMode::Host => "host",
            }
            .into(),
        ),
        restart_policy: Some(restart_policy),
        auto_remove: Some(config.auto_remove),
        readonly_rootfs: Some(config.read_only_rootfs),
        mounts: Some(mounts),
        security_opt: Some(vec!["no-new-privileges".into()]),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(config.image.clone()),
        cmd: config.cmd.clone(),
        // An empty entrypoint clears the image's and, as with the native engine and
        // `docker run --entrypoint ""`, its CMD too: Docker reads that from `[""]`, while `[]`
        // would bring the image's CMD back.
        entrypoint: config.entrypoint.as_ref().map(|e| if e.is_empty() { vec![String::new()] } else { e.clone() }),
        env: (!config.env.is_empty()).then(|| config.env.clone()),
        working_dir: config.working_dir.clone(),
        user: config.user.clone(),
        hostname: config.hostname.clone(),
        tty: Some(config.tty),
        open_stdin: Some(config.open_stdin),
        stdin_once: Some(config.open_stdin && !config.tty),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        labels: Some(labels),
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// Docker's times: RFC 3339; Go's zero time (`0001-01-01T00:00:00Z`) means never.
pub(super) fn parse_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    let text = text?;
    if text.is_empty() || text.starts_with("0001-01-01") {
        return None;
    }
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

pub(super) fn unix_time(seconds: i64) -> Option<DateTime<Utc>> {
    (seconds > 0).then(|| Utc.timestamp_opt(seconds, 0).single()).flatten()
}

fn user_labels(labels: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    labels
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != CONFIG_LABEL)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub(super) fn container_details(inspect: ContainerInspectResponse) -> ContainerDetails {
    let config = inspect.config.clone().unwrap_or_default();
    let state = inspect.state.clone().unwrap_or_default();
    let recorded = config
        .labels
        .as_ref()
        .and_then(|l| l.get(CONFIG_LABEL))
        .and_then(|json| serde_json::from_str::<ContainerConfig>(json).ok());
    let name = inspect.name.clone().unwrap_or_default().trim_start_matches('/').to_string();
    let given = recorded.unwrap_or_else(|| reconstructed_config(&inspect, &name));
    let status = match state.status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerStatus::Created,
        Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::PAUSED) => ContainerStatus::Running,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerStatus::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerStatus::Removing,
        Some(ContainerStateStatusEnum::DEAD) => ContainerStatus::Dead,
        // Docker 28's `stopping` is still running for every purpose of this interface.
        Some(ContainerStateStatusEnum::STOPPING) => ContainerStatus::Running,
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::EMPTY) | None => ContainerStatus::Exited,
    };
    let finished_at = parse_time(state.finished_at.as_deref());
    let exit_code = match status {
        ContainerStatus::Exited | ContainerStatus::Dead => state.exit_code,
        // A restarting container shows its last exit.
        _ if finished_at.is_some() => state.exit_code,
        _ => None,
    };
    ContainerDetails {
        id: inspect.id.clone().unwrap_or_default(),
        name,
        image: config.image.clone().unwrap_or_default(),
        image_id: inspect.image.clone().unwrap_or_default(),
        created: parse_time(inspect.created.as_deref()).unwrap_or_default(),
        path: inspect.path.clone().unwrap_or_default(),
        args: inspect.args.clone().unwrap_or_default(),
        env: config.env.clone().unwrap_or_default(),
        state: ContainerState {
            status,
            pid: state.pid.filter(|p| *p > 0).map(|p| p as u32),
            exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            error: state.error.filter(|e| !e.is_empty()),
            started_at: parse_time(state.started_at.as_deref()),
            finished_at,
            restart_count: inspect.restart_count.unwrap_or(0).max(0) as u32,
        },
        config: given,
    }
}

/// The configuration of a container Porthole did not create, read back from Docker's view
/// (where the image's defaults are already merged in).
fn reconstructed_config(inspect: &ContainerInspectResponse, name: &str) -> ContainerConfig {
    let config = inspect.config.clone().unwrap_or_default();
    let host = inspect.host_config.clone().unwrap_or_default();
    let restart_policy = match host.restart_policy.as_ref().and_then(|p| p.name) {
        Some(RestartPolicyNameEnum::ALWAYS) => RestartPolicy::Always,
        Some(RestartPolicyNameEnum::UNLESS_STOPPED) => RestartPolicy::UnlessStopped,
        Some(RestartPolicyNameEnum::ON_FAILURE) => RestartPolicy::OnFailure {
            max_retries: host.restart_policy.as_ref().and_then(|p| p.maximum_retry_count).unwrap_or(0).max(0) as u32,
        },
        _ => RestartPolicy::No,
    };
    let mounts = host
        .mounts
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            let target = m.target?;
            let read_only = m.read_only.unwrap_or(false);
            match m.typ? {
                MountType::BIND => Some(Mount::Bind { source: m.source?.into(), target, read_only }),
                MountType::VOLUME => Some(Mount::Volume { name: m.source?, target, read_only }),
                MountType::TMPFS => Some(Mount::Tmpfs {
                    target,
                    size_bytes: m.tmpfs_options.and_then(|t| t.size_bytes).unwrap_or(0).max(0) as u64,
                }),
                _ => None,
            }
        })
        .collect();
    ContainerConfig {
        image: config.image.unwrap_or_default(),
        name: Some(name.to_string()),
        cmd: config.cmd,
        entrypoint: config.entrypoint,
        env: config.env.unwrap_or_default(),
        working_dir: config.working_dir.filter(|w| !w.is_empty()),
        user: config.user.filter(|u| !u.is_empty()),
        hostname: config.hostname,
        tty: config.tty.unwrap_or(false),
        open_stdin: config.open_stdin.unwrap_or(false),
        labels: user_labels(config.labels.as_ref()),
        restart_policy,
        auto_remove: host.auto_remove.unwrap_or(false),
        read_only_rootfs: host.readonly_rootfs.unwrap_or(false),
        mounts,
        resources: Resources {
            memory_bytes: host.memory.filter(|m| *m > 0).map(|m| m as u64),
            cpu_millis: host.nano_cpus.filter(|n| *n > 0).map(|n| (n / 1_000_000) as u64),
            pids_limit: host.pids_limit.filter(|p| *p > 0),
        },
        network_mode: match host.network_mode.as_deref() {
            Some("host") => NetworkMode::Host,
            _ => NetworkMode::None,
        },
    }
}

fn tags_of(repo_tags: &[String]) -> Vec<String> {
    repo_tags.iter().filter(|t| t.as_str() != "<none>:<none>").cloned().collect()
}

pub(super) fn image_summary(image: &bollard::models::ImageSummary) -> ImageSummary {
    ImageSummary {
        id: image.id.clone(),
        tags: tags_of(&image.repo_tags),
        created: unix_time(image.created),
        size: image.size.max(0) as u64,
    }
}

pub(super) fn image_details(image: ImageInspect) -> ImageDetails {
    let config = image.config.unwrap_or_default();
    ImageDetails {
        summary: ImageSummary {
            id: image.id.unwrap_or_default(),
            tags: tags_of(&image.repo_tags.unwrap_or_default()),
            created: parse_time(image.created.as_deref()),
            size: image.size.unwrap_or(0).max(0) as u64,
        },
        architecture: image.architecture.unwrap_or_default(),
        os: image.os.unwrap_or_default(),
        config: ImageRunConfig {
            entrypoint: config.entrypoint,
            cmd: config.cmd,
            env: config.env.unwrap_or_default(),
            working_dir: config.working_dir.filter(|w| !w.is_empty()),
            user: config.user.filter(|u| !u.is_empty()),
            labels: config.labels.unwrap_or_default().into_iter().collect(),
            exposed_ports: config.exposed_ports.unwrap_or_default(),
        },
        layers: image.root_fs.and_then(|r| r.layers).unwrap_or_default(),
    }
}

/// A Docker container event as an engine event; other objects and actions (attach, kill, exec_*,
/// health) are not part of the interface and give `None`.
pub(super) fn event(message: &EventMessage) -> Option<Event> {
    if message.typ != Some(bollard::models::EventMessageTypeEnum::CONTAINER) {
        return None;
    }
    let actor = message.actor.as_ref()?;
    let attributes = actor.attributes.clone().unwrap_or_default();
    let action = match message.action.as_deref()? {
        "create" => EventAction::Create,
        "start" => EventAction::Start,
        "die" => EventAction::Die { exit_code: attributes.get("exitCode").and_then(|c| c.parse().ok()).unwrap_or(-1) },
        "oom" => EventAction::Oom,
        "restart" => EventAction::Restart,
        "destroy" => EventAction::Destroy,
        _ => return None,
    };
    let time = message
        .time_nano
        .map(|n| Utc.timestamp_nanos(n))
        .or_else(|| message.time.and_then(unix_time))
        .unwrap_or_else(Utc::now);
    Some(Event {
        time,
        container_id: actor.id.clone().unwrap_or_default(),
        container_name: attributes.get("name").cloned().unwrap_or_default(),
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds_and_server_errors_hide_the_daemon_text() {
        let e = status_error(404, "No such container: x".into(), "inspect");
        assert_eq!((e.kind(), e.message()), (ErrorKind::NotFound, "No such container: x"));
        assert_eq!(status_error(409, "in use".into(), "c").kind(), ErrorKind::Conflict);
        assert_eq!(status_error(400, "bad".into(), "c").kind(), ErrorKind::InvalidArgument);
        let e = status_error(500, "containerd: /var/lib/secret/path exploded".into(), "cannot start the container");
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(!e.message().contains("/var/lib/secret"), "{}", e.message());
        assert!(e.detail().contains("/var/lib/secret"));
        let long = status_error(400, "x".repeat(1000), "c");
        assert!(long.message().chars().count() <= MAX_MESSAGE + 1);
    }

    #[test]
    fn a_missing_socket_is_unavailable() {
        let e = docker_error("connect", DockerError::SocketNotFoundError("/nope.sock".into()));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn create_body_carries_every_setting() {
        let config = ContainerConfig {
            image: "busybox".into(),
            name: Some("n".into()),
            cmd: Some(vec!["sh".into()]),
            entrypoint: Some(vec![]),
            env: vec!["A=1".into()],
            working_dir: Some("/tmp".into()),
            user: Some("nobody".into()),
            hostname: Some("h".into()),
            tty: false,
            open_stdin: true,
            labels: BTreeMap::from([("k".into(), "v".into())]),
            restart_policy: RestartPolicy::OnFailure { max_retries: 2 },
            auto_remove: true,
            read_only_rootfs: true,
            mounts: vec![
                Mount::Tmpfs { target: "/t".into(), size_bytes: 1 << 20 },
                Mount::Volume { name: "v".into(), target: "/v".into(), read_only: true },
                Mount::Bind { source: "/srv".into(), target: "/b".into(), read_only: false },
            ],
            resources: Resources { memory_bytes: Some(64 << 20), cpu_millis: Some(1500), pids_limit: Some(50) },
            network_mode: NetworkMode::Host,
        };
        let body = create_body(&config).unwrap();
        let host = body.host_config.as_ref().unwrap();
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.memory_swap, Some(64 << 20));
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.pids_limit, Some(50));
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(host.restart_policy.as_ref().unwrap().maximum_retry_count, Some(2));
        assert_eq!(host.security_opt.as_deref(), Some(&["no-new-privileges".to_string()][..]));
        assert_eq!(host.mounts.as_ref().unwrap().len(), 3);
        assert_eq!(body.stdin_once, Some(true));
        assert_eq!(body.entrypoint, Some(vec![String::new()]));
        // The recorded config comes back exactly.
        let recorded = &body.labels.as_ref().unwrap()[CONFIG_LABEL];
        assert_eq!(serde_json::from_str::<ContainerConfig>(recorded).unwrap(), config);
        let mut reserved = config.clone();
        reserved.labels.insert(CONFIG_LABEL.into(), "x".into());
        assert_eq!(create_body(&reserved).unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn never_set_times_are_none() {
        assert_eq!(parse_time(Some("0001-01-01T00:00:00Z")), None);
        assert!(parse_time(Some("2026-11-23T06:52:17.821873036Z")).is_some());
    }
}
