//! The engine conformance suite (`porthole_engine::conformance`) against a real Docker daemon
//! through the Docker backend. The daemon is found through `PORTHOLE_TEST_DOCKER_HOST`
//! (`scripts/test.sh` starts one and sets it). Without it, every check fails under CI (`CI` or
//! `PORTHOLE_REQUIRE_DOCKER=1` set) and is skipped, saying so, otherwise. The `busybox:latest`
//! image is imported from the host's busybox-static, so no registry is needed.
//!
//! The native tests give every check an engine of its own; here all checks share one daemon, so
//! they run one at a time (checks such as `bad_input` count every container the engine has).

use porthole_engine::docker::bollard;
use porthole_engine::docker::DockerEngine;

const IMAGE: &str = "busybox:latest";

/// Held for the whole of each check.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The engine on the test daemon, or `None` (after saying so) when there is none to test and
/// that is allowed here.
async fn docker() -> Option<DockerEngine> {
    let required = std::env::var_os("CI").is_some_and(|v| !v.is_empty())
        || std::env::var("PORTHOLE_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let Some(host) = std::env::var("PORTHOLE_TEST_DOCKER_HOST").ok().filter(|h| !h.is_empty()) else {
        assert!(
            !required,
            "PORTHOLE_TEST_DOCKER_HOST is not set, but CI/PORTHOLE_REQUIRE_DOCKER requires the Docker conformance \
             tests: run them through scripts/test.sh, which starts a daemon"
        );
        eprintln!(
            "skipped: no docker daemon (set PORTHOLE_TEST_DOCKER_HOST, e.g. unix:///run/porthole-test/docker.sock)"
        );
        return None;
    };
    let engine = DockerEngine::connect(&host)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the Docker daemon at {host}: {}", e.detail()));
    let image = engine
        .ensure_busybox_image(IMAGE)
        .await
        .unwrap_or_else(|e| panic!("cannot import {IMAGE} into the daemon: {}", e.detail()));
    assert!(image.is_some(), "no busybox on this host to build {IMAGE} from (install busybox-static)");
    Some(engine)
}

/// The named volumes the suite made (`conformance-vol-*`): the native engine's go with its data
/// directory, the daemon's would stay.
async fn remove_suite_volumes(engine: &DockerEngine) {
    let volumes = engine
        .client()
        .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
        .await
        .expect("list volumes");
    for volume in volumes.volumes.unwrap_or_default() {
        if volume.name.starts_with("conformance-vol-") {
            engine
                .client()
                .remove_volume(&volume.name, None::<bollard::query_parameters::RemoveVolumeOptions>)
                .await
                .unwrap_or_else(|e| panic!("remove volume {}: {e}", volume.name));
        }
    }
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let _turn = ONE_AT_A_TIME.lock().await;
                let Some(engine) = docker().await else { return };
                porthole_engine::conformance::$check(&engine, IMAGE).await;
                remove_suite_volumes(&engine).await;
            }
        )*
    };
}

conformance!(
    lifecycle,
    isolation,
    filesystems,
    process_config,
    memory_limit,
    pids_limit,
    exec_processes,
    attach_shared,
    logs,
    restart_policies,
    stop_kill_and_auto_remove,
    bad_input,
    stats,
);
