//! The engine conformance suite (`porthole_engine::conformance`) against the native engine,
//! with the real `porthole` binary as the shim. Needs root.

use porthole_engine::native::{NativeConfig, NativeEngine};

struct Harness {
    engine: NativeEngine,
    _root: tempfile::TempDir,
}

async fn native() -> Harness {
    // Short paths: the shim's unix sockets live under the data root.
    let root = tempfile::Builder::new().prefix("phc").tempdir_in("/tmp").unwrap();
    let engine = NativeEngine::open(NativeConfig {
        root: root.path().to_path_buf(),
        shim_exe: env!("CARGO_BIN_EXE_porthole").into(),
        starter_image: true,
    })
    .await
    .expect("the native engine opens");
    Harness { engine, _root: root }
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let harness = native().await;
                porthole_engine::conformance::$check(&harness.engine, "busybox").await;
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
