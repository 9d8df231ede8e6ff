//! Native-engine behaviour beyond the conformance suite: host state left behind, log rotation,
//! terminals that survive the engine's process being SIGKILLed, and restart policies applied
//! when the engine starts after its shims died. Needs root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use porthole_engine::api::*;
use porthole_engine::conformance::read_until;
use porthole_engine::native::{NativeConfig, NativeEngine};
use tokio::io::AsyncWriteExt;

async fn open(root: &Path) -> NativeEngine {
    NativeEngine::open(NativeConfig {
        root: root.to_path_buf(),
        shim_exe: env!("CARGO_BIN_EXE_porthole").into(),
        starter_image: true,
    })
    .await
    .expect("the native engine opens")
}

fn temp_root() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("phn").tempdir_in("/tmp").unwrap()
}

fn sh(script: &str) -> ContainerConfig {
    ContainerConfig {
        image: "busybox".into(),
        cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
        ..Default::default()
    }
}

/// Everything on the host that mentions this container: directories, mounts, cgroups, sockets.
fn traces_of(root: &Path, id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for path in [root.join("containers").join(id), root.join("runtime").join(id)] {
        if path.exists() {
            found.push(path.display().to_string());
        }
    }
    if let Ok(entries) = std::fs::read_dir(root.join("run")) {
        for e in entries.flatten() {
            if id.starts_with(e.file_name().to_string_lossy().split('.').next().unwrap_or("-")) {
                found.push(e.path().display().to_string());
            }
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    found.extend(mountinfo.lines().filter(|l| l.contains(id)).map(str::to_string));
    // The unified hierarchy (v2) holds the container's cgroup at its top; v1 has one per
    // controller hierarchy below it.
    let hierarchies = std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten().map(|e| e.path());
    for hierarchy in std::iter::once(PathBuf::from("/sys/fs/cgroup")).chain(hierarchies) {
        let dir = hierarchy.join("porthole").join(id);
        if dir.exists() {
            found.push(dir.display().to_string());
        }
    }
    found
}

fn container_dirs(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("containers")).unwrap().flatten().map(|e| e.path()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_container_leaves_nothing_on_the_host() {
    let root = temp_root();
    let engine = open(root.path()).await;
    let mut config = sh("echo hi > /tmp/f; sleep 600");
    config.tty = true;
    config.resources.memory_bytes = Some(64 << 20);
    let id = engine.create_container(config).await.unwrap();
    engine.start_container(&id).await.unwrap();
    let exec =
        engine.create_exec(&id, ExecConfig { cmd: vec!["sleep".into(), "600".into()], ..Default::default() }).await;
    let _io = engine.start_exec(&exec.unwrap()).await.unwrap();
    let running = traces_of(root.path(), &id);
    // Seen here, so the check below that none is left can fail on either cgroup version.
    assert!(running.iter().any(|t| t.starts_with("/sys/fs/cgroup/")), "a running container has a cgroup: {running:?}");
    assert!(running.iter().any(|t| t.contains(" overlay ")), "a running container has a mount: {running:?}");
    engine.remove_container(&id, RemoveOptions { force: true, volumes: false }).await.unwrap();
    // The shim finishes its own teardown (runtime state, sockets) as it exits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !traces_of(root.path(), &id).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(traces_of(root.path(), &id), Vec::<String>::new());
    assert_eq!(container_dirs(root.path()), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_leaves_no_mount_cgroup_or_runtime_state() {
    let root = temp_root();
    let engine = open(root.path()).await;
    let source = tempfile::tempdir().unwrap();
    let mut config = sh("true");
    config.mounts = vec![Mount::Bind { source: source.path().to_path_buf(), target: "/data".into(), read_only: false }];
    let id = engine.create_container(config).await.unwrap();
    // The bind source disappears between create and start: the runtime cannot mount it.
    let source_path = source.path().to_path_buf();
    drop(source);
    assert!(!source_path.exists());
    let err = engine.start_container(&id).await.unwrap_err();
    assert_ne!(err.kind(), ErrorKind::NotFound, "{err}");
    let details = engine.inspect_container(&id).await.unwrap();
    assert_eq!(details.state.status, ContainerStatus::Created);
    assert!(details.state.error.is_some(), "the state says why the start failed");
    let mut traces = traces_of(root.path(), &id);
    traces.retain(|t| !t.ends_with(&format!("containers/{id}")));
    assert_eq!(traces, Vec::<String>::new(), "only the container's own directory remains");
    engine.remove_container(&id, RemoveOptions::default()).await.unwrap();
    assert_eq!(container_dirs(root.path()), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_rotate_and_the_tail_opens_at_the_end() {
    let root = temp_root();
    let engine = open(root.path()).await;
    // About 24 MB of output: more than two 10 MiB log files.
    let id = engine
        .create_container(sh("yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 24000000; echo; echo the-end"))
        .await
        .unwrap();
    engine.start_container(&id).await.unwrap();
    assert_eq!(engine.wait_container(&id).await.unwrap(), 0);
    let logs = root.path().join("containers").join(&id).join("logs");
    let mut files: Vec<String> =
        std::fs::read_dir(&logs).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert!(files.len() >= 3, "rotated into several files: {files:?}");
    let total: u64 = std::fs::read_dir(&logs).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
    assert!(total <= 5 * 10 * 1024 * 1024 + 1024 * 1024, "logs stay within their bound: {total}");
    let started = std::time::Instant::now();
    let tail: Vec<_> = engine
        .logs(&id, LogOptions { tail: Some(1), stdout: true, stderr: true, ..Default::default() })
        .await
        .unwrap()
        .collect()
        .await;
    let elapsed = started.elapsed();
    assert_eq!(tail.len(), 1);
    assert_eq!(&tail[0].as_ref().unwrap().data[..], b"the-end\n");
    println!("tail 1 of {total} bytes of logs took {elapsed:?}");
    engine.remove_container(&id, RemoveOptions::default()).await.unwrap();
}

/// The parent runs this same test again as a child process (the "server") with
/// PORTHOLE_TEST_HOLDER_ROOT set; the child creates a terminal and an exec, types into them,
/// writes their ids to a file and waits to be SIGKILLed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminals_survive_the_engine_process_being_killed() {
    if let Ok(root) = std::env::var("PORTHOLE_TEST_HOLDER_ROOT") {
        hold_terminals(Path::new(&root)).await;
        return;
    }
    let root = temp_root();
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "terminals_survive_the_engine_process_being_killed", "--nocapture", "--test-threads=1"])
        .env("PORTHOLE_TEST_HOLDER_ROOT", root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let ready = root.path().join("holder-ready");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(std::time::Instant::now() < deadline, "the holder did not set up its terminals");
        assert!(holder.try_wait().unwrap().is_none(), "the holder exited early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids = std::fs::read_to_string(&ready).unwrap();
    let (container_id, exec_id) = ids.trim().split_once(' ').unwrap();
    let (container_id, exec_id) = (container_id.to_string(), exec_id.to_string());

    // SIGKILL: no chance to clean up, as when a server crashes.
    holder.kill().unwrap();
    holder.wait().unwrap();

    let engine = open(root.path()).await;
    let details = engine.inspect_container(&container_id).await.unwrap();
    assert_eq!(details.state.status, ContainerStatus::Running, "the container outlived the engine's process");

    let mut main = engine.attach(&container_id, AttachOptions { history: true }).await.unwrap();
    read_until(&mut main.output, "before-kill-42").await;
    let input = main.input.as_mut().unwrap();
    input.write_all(b"echo after-$((40+2))-restart\n").await.unwrap();
    input.flush().await.unwrap();
    read_until(&mut main.output, "after-42-restart").await;

    let mut shell = engine.attach_exec(&exec_id, AttachOptions { history: true }).await.unwrap();
    read_until(&mut shell.output, "exec-before-7").await;
    let input = shell.input.as_mut().unwrap();
    input.write_all(b"echo exec-after-$((3+4))\n").await.unwrap();
    input.flush().await.unwrap();
    read_until(&mut shell.output, "exec-after-7").await;

    let logs: Vec<_> = engine
        .logs(&container_id, LogOptions { stdout: true, stderr: true, ..Default::default() })
        .await
        .unwrap()
        .collect()
        .await;
    let text: Vec<u8> = logs.into_iter().flat_map(|r| r.unwrap().data.to_vec()).collect();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("before-kill-42") && text.contains("after-42-restart"), "{text}");
    engine.remove_container(&container_id, RemoveOptions { force: true, volumes: false }).await.unwrap();
}

async fn hold_terminals(root: &Path) {
    let engine = open(root).await;
    let config = ContainerConfig {
        image: "busybox".into(),
        cmd: Some(vec!["sh".into()]),
        tty: true,
        open_stdin: true,
        ..Default::default()
    };
    let id = engine.create_container(config).await.unwrap();
    engine.start_container(&id).await.unwrap();
    let mut main = engine.attach(&id, AttachOptions::default()).await.unwrap();
    let input = main.input.as_mut().unwrap();
    input.write_all(b"echo before-kill-$((40+2))\n").await.unwrap();
    input.flush().await.unwrap();
    read_until(&mut main.output, "before-kill-42").await;

    let exec_id =
        engine.create_exec(&id, ExecConfig { cmd: vec!["sh".into()], tty: true, ..Default::default() }).await.unwrap();
    let mut shell = engine.start_exec(&exec_id).await.unwrap();
    let input = shell.input.as_mut().unwrap();
    input.write_all(b"echo exec-before-$((3+4))\n").await.unwrap();
    input.flush().await.unwrap();
    read_until(&mut shell.output, "exec-before-7").await;

    let ready = root.join("holder-ready");
    std::fs::write(root.join("holder-ready.tmp"), format!("{id} {exec_id}")).unwrap();
    std::fs::rename(root.join("holder-ready.tmp"), ready).unwrap();
    // Keep both attachments open until the parent kills this process.
    tokio::time::sleep(Duration::from_secs(120)).await;
    panic!("the holder was not killed in time");
}

fn kill_pid(pid: u32) {
    let status = Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies_apply_when_the_engine_starts_after_its_shims_died() {
    let root = temp_root();
    let engine = open(root.path()).await;
    let mut ids = Vec::new();
    for policy in [RestartPolicy::Always, RestartPolicy::UnlessStopped, RestartPolicy::No] {
        let mut config = sh("sleep 600");
        config.restart_policy = policy;
        let id = engine.create_container(config).await.unwrap();
        engine.start_container(&id).await.unwrap();
        ids.push(id);
    }
    // A second unless-stopped container that the user stopped stays stopped.
    let mut config = sh("sleep 600");
    config.restart_policy = RestartPolicy::UnlessStopped;
    let stopped = engine.create_container(config).await.unwrap();
    engine.start_container(&stopped).await.unwrap();
    engine.stop_container(&stopped, Duration::ZERO).await.unwrap();
    drop(engine);

    // As after a host crash: the shims and containers die without a word.
    for id in &ids {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.path().join("containers").join(id).join("state.json")).unwrap())
                .unwrap();
        kill_pid(state["shim_pid"].as_u64().unwrap() as u32);
        kill_pid(state["pid"].as_u64().unwrap() as u32);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let engine = open(root.path()).await;
    let status = |id: String| {
        let engine = engine.clone();
        async move { engine.inspect_container(&id).await.unwrap().state.status }
    };
    assert_eq!(status(ids[0].clone()).await, ContainerStatus::Running, "always restarts");
    assert_eq!(status(ids[1].clone()).await, ContainerStatus::Running, "unless-stopped restarts");
    assert_eq!(status(ids[2].clone()).await, ContainerStatus::Exited, "no does not");
    assert_eq!(
        status(stopped.clone()).await,
        ContainerStatus::Exited,
        "a stopped unless-stopped container stays stopped"
    );
    for id in ids.iter().chain([&stopped]) {
        engine.remove_container(id, RemoveOptions { force: true, volumes: false }).await.unwrap();
        assert!(traces_of(root.path(), id).iter().all(|t| !t.contains("mountinfo")));
    }
}

/// A failed exec must not leave anything that keeps the container from stopping (libcontainer
/// leaves its exec helpers to the shim, which must reap them or the container's init can
/// never finish exiting).
#[tokio::test]
async fn a_failed_exec_leaves_the_container_working_and_stoppable() {
    let root = temp_root();
    let engine = open(root.path()).await;
    let id = engine.create_container(sh("sleep 600")).await.unwrap();
    engine.start_container(&id).await.unwrap();
    let missing = ExecConfig { cmd: vec!["/no/such/program".into()], ..Default::default() };
    let exec = engine.create_exec(&id, missing).await.unwrap();
    let err = engine.start_exec(&exec).await.expect_err("a missing program cannot start");
    assert_eq!(err.kind(), porthole_engine::ErrorKind::InvalidArgument, "{err:?}");

    let echo = ExecConfig { cmd: vec!["echo".into(), "still-fine".into()], ..Default::default() };
    let exec = engine.create_exec(&id, echo).await.unwrap();
    let mut io = engine.start_exec(&exec).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = io.output.next().await {
        out.extend_from_slice(&chunk.unwrap().data);
    }
    assert_eq!(out, b"still-fine\n");

    tokio::time::timeout(Duration::from_secs(20), engine.stop_container(&id, Duration::ZERO))
        .await
        .expect("the container stops in time")
        .unwrap();
    assert_eq!(engine.wait_container(&id).await.unwrap(), 137);
    engine.remove_container(&id, RemoveOptions::default()).await.unwrap();
    assert_eq!(traces_of(root.path(), &id), Vec::<String>::new());
}

/// A missing working directory is created in the container (as Docker does), and a symlink
/// planted in the container's filesystem cannot aim that creation at the host (Docker would
/// create the link's target inside the container; here the start is refused instead).
#[tokio::test]
async fn a_missing_working_dir_is_created_inside_the_container_only() {
    let root = temp_root();
    let engine = open(root.path()).await;
    let mut config = sh("pwd");
    config.working_dir = Some("/made/by/porthole".into());
    let (id, code, out, err) = porthole_engine::conformance::run_to_end(&engine, config).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "/made/by/porthole\n", ""));
    engine.remove_container(&id, RemoveOptions::default()).await.unwrap();

    let host_target = tempfile::Builder::new().prefix("phesc").tempdir_in("/tmp").unwrap();
    let host_path = host_target.path().display().to_string();
    // First run (working dir "/"): plant /escape -> <host path>; the restart then needs
    // /escape/inside as its working directory.
    let mut config = sh(&format!("if [ \"$(pwd)\" = / ]; then ln -s {host_path} /escape; fi; pwd"));
    config.working_dir = Some("/".into());
    let id = engine.create_container(config).await.unwrap();
    engine.start_container(&id).await.unwrap();
    assert_eq!(engine.wait_container(&id).await.unwrap(), 0);
    let record_path = root.path().join("containers").join(&id).join("container.json");
    let mut record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap();
    record["process"]["cwd"] = serde_json::json!("/escape/inside");
    std::fs::write(&record_path, record.to_string()).unwrap();
    // The link dangles inside the container: the start is refused, clearly, and the host is
    // untouched (never followed to the host's directory of the same name).
    let err = engine.start_container(&id).await.expect_err("a dangling working directory link");
    assert_eq!(err.kind(), porthole_engine::ErrorKind::InvalidArgument, "{err:?}");
    assert!(err.message().contains("/escape/inside"), "{}", err.message());
    assert!(!host_target.path().join("inside").exists(), "the working directory was created on the host");
    engine.remove_container(&id, RemoveOptions::default()).await.unwrap();
}

/// A container sees its own cgroup, read-only: its limits are there to read but cannot be
/// raised from inside, and it cannot make cgroups of its own. On a unified (v2) host it also
/// has a cgroup namespace of its own, so its cgroup is the root of what it sees and nothing of
/// the host's tree shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_sees_its_own_cgroup_read_only() {
    let root = temp_root();
    let engine = open(root.path()).await;
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (memory_dir, limit_file) =
        if unified { ("/sys/fs/cgroup", "memory.max") } else { ("/sys/fs/cgroup/memory", "memory.limit_in_bytes") };
    let mut config = sh(&format!(
        "cd {memory_dir} || exit 1; echo limit=$(cat {limit_file}); \
         if echo 1073741824 > {limit_file}; then echo raise=allowed; else echo raise=refused; fi; \
         if mkdir sub; then echo mkdir=allowed; else echo mkdir=refused; fi; \
         echo after=$(cat {limit_file}); echo cgroup=$(cat /proc/self/cgroup | tr '\\n' ' ')"
    ));
    config.resources.memory_bytes = Some(64 << 20);
    let (id, code, out, err) = porthole_engine::conformance::run_to_end(&engine, config).await;
    assert_eq!(code, 0, "{out}{err}");
    let limit = (64u64 << 20).to_string();
    assert!(out.contains(&format!("limit={limit}\n")), "the container reads its own limit:\n{out}{err}");
    assert!(out.contains("raise=refused\n"), "{out}{err}");
    assert!(out.contains("mkdir=refused\n"), "{out}{err}");
    assert!(out.contains(&format!("after={limit}\n")), "{out}{err}");
    if unified {
        assert!(out.contains("cgroup=0::/\n"), "a private cgroup namespace on v2:\n{out}{err}");
    }
    engine.remove_container(&id, RemoveOptions::default()).await.unwrap();
}

/// The limits of a container are in force in its cgroup, read from the host: memory (with no
/// swap beyond it), a CPU quota and the pids limit. On cgroup v2 this needs the cpu, memory and
/// pids controllers enabled down the path to the container's cgroup (a systemd host enables
/// only some of them at the root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_in_force_in_the_containers_cgroup() {
    let root = temp_root();
    let engine = open(root.path()).await;
    let mut config = sh("sleep 600");
    config.resources.memory_bytes = Some(64 << 20);
    config.resources.cpu_millis = Some(500);
    config.resources.pids_limit = Some(100);
    let id = engine.create_container(config).await.unwrap();
    engine.start_container(&id).await.unwrap();
    let read = |path: String| {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}")).trim().to_string()
    };
    // The counters of stats come from the same cgroup (cpu.stat and memory.current on v2).
    let stats = engine.stats(&id).await.unwrap();
    assert!(stats.cpu_total_ns > 0 && stats.memory_bytes > 0, "{stats:?}");
    assert_eq!((stats.memory_limit_bytes, stats.pids_limit), (Some(64 << 20), Some(100)), "{stats:?}");
    let cgroup = format!("porthole/{id}");
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let dir = format!("/sys/fs/cgroup/{cgroup}");
        assert_eq!(read(format!("{dir}/memory.max")), (64u64 << 20).to_string());
        if Path::new(&format!("{dir}/memory.swap.max")).exists() {
            assert_eq!(read(format!("{dir}/memory.swap.max")), "0");
        }
        assert_eq!(read(format!("{dir}/cpu.max")), "50000 100000");
        assert_eq!(read(format!("{dir}/pids.max")), "100");
    } else {
        assert_eq!(read(format!("/sys/fs/cgroup/memory/{cgroup}/memory.limit_in_bytes")), (64u64 << 20).to_string());
        assert_eq!(read(format!("/sys/fs/cgroup/cpu/{cgroup}/cpu.cfs_quota_us")), "50000");
        assert_eq!(read(format!("/sys/fs/cgroup/cpu/{cgroup}/cpu.cfs_period_us")), "100000");
        assert_eq!(read(format!("/sys/fs/cgroup/pids/{cgroup}/pids.max")), "100");
    }
    engine.remove_container(&id, RemoveOptions { force: true, volumes: false }).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !traces_of(root.path(), &id).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(traces_of(root.path(), &id), Vec::<String>::new());
}

/// Containers started at once on a host where none has run yet all start. (libcgroups' v2
/// manager made their common parent cgroup with a check followed by mkdir, and the start that
/// lost the race failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_started_at_once_on_a_fresh_host_all_start() {
    let root = temp_root();
    let engine = open(root.path()).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(engine.create_container(sh("sleep 600")).await.unwrap());
    }
    for _ in 0..3 {
        // As on a fresh host, no parent cgroup (the removal fails, harmlessly, while another
        // container of this host is in it, such as another test's).
        let hierarchies = std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten().map(|e| e.path());
        for hierarchy in std::iter::once(PathBuf::from("/sys/fs/cgroup")).chain(hierarchies) {
            let _ = std::fs::remove_dir(hierarchy.join("porthole"));
        }
        let starts = futures::future::join_all(ids.iter().map(|id| engine.start_container(id))).await;
        for (id, started) in ids.iter().zip(starts) {
            started.unwrap_or_else(|e| panic!("{id} did not start: {e:?}"));
        }
        let stops = futures::future::join_all(ids.iter().map(|id| engine.stop_container(id, Duration::ZERO))).await;
        for stopped in stops {
            stopped.unwrap();
        }
    }
    for id in &ids {
        engine.remove_container(id, RemoveOptions::default()).await.unwrap();
    }
}

/// The engine primes cgroup migrations (so that a start does not wait for an RCU grace period
/// in the middle) by moving its own process into the cgroup it is in: the move is allowed here,
/// on cgroup v1 and v2, and changes nothing.
#[test]
fn priming_a_cgroup_migration_moves_nothing() {
    use porthole_engine::native::cgroups::{prime_migration, CgroupVersion};
    let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    prime_migration(CgroupVersion::detect()).expect("the engine can move itself into its own cgroup");
    assert_eq!(std::fs::read_to_string("/proc/self/cgroup").unwrap(), before);
}
