//! Container lifecycle latency of the native engine, with Docker beside it when a daemon is
//! reachable: both through Porthole's Docker backend and through the `docker` CLI.
//!
//! Measures, through the `porthole_engine::api` traits on a `NativeEngine` opened on a fresh data
//! directory under /tmp (the shim is the release `porthole` binary):
//!
//! - **lifecycle**: create + start + wait + remove of `true` from the starter image `busybox`,
//!   with per-phase medians and when the engine's `die` event arrived;
//! - **exec**: create_exec + start_exec of `true` (no TTY) in one running container, until its
//!   output stream ends and `inspect_exec` reports the exit code;
//! - **docker backend** (only if `PORTHOLE_BENCH_DOCKER_HOST` or `DOCKER_HOST` names a daemon): the
//!   same lifecycle and exec measurements through `porthole_engine::docker::DockerEngine`, with a
//!   busybox image imported through the backend;
//! - **docker** (only if `docker info` succeeds): `docker run --rm IMG true` (the daemon's
//!   default network), `docker run --rm --network none IMG true` (the native engine's default)
//!   and `docker exec CTR true`, with an image imported offline from the host's `/bin/busybox`
//!   (the CLI talks to `PORTHOLE_BENCH_DOCKER_HOST` when that is set).
//!
//! It prints one line per metric with the targets beside the results; it never fails on a
//! missed target (the exit status is non-zero only when a run errored). Needs root, like the
//! engine. Run it with:
//!
//! ```text
//! cargo bench -p porthole --bench engine_lifecycle
//! PORTHOLE_BENCH_RUNS=200 PORTHOLE_BENCH_DOCKER_RUNS=50 cargo bench -p porthole --bench engine_lifecycle
//! PORTHOLE_BENCH_DOCKER_HOST=unix:///run/porthole-test/docker.sock cargo bench -p porthole --bench engine_lifecycle
//! ```
//!
//! `PORTHOLE_BENCH_RUNS` (default 50) is the number of measured native runs per metric, after 5
//! warm-up runs; `PORTHOLE_BENCH_DOCKER_RUNS` (default 20) the number of Docker runs (backend and
//! CLI each), after 2.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::StreamExt;
use porthole_engine::api::{
    ContainerConfig, Containers, Engine, EventAction, ExecConfig, Images, Monitoring, RemoveOptions,
};
use porthole_engine::docker::DockerEngine;
use porthole_engine::native::{NativeConfig, NativeEngine};
use tokio::sync::mpsc;

const WARMUP: usize = 5;
const DOCKER_WARMUP: usize = 2;
const MAX_RUNS: usize = 100_000;
/// Upper bound for any single engine or docker operation.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to poll `inspect_exec` for an exit code after the exec's output ended.
const EXEC_EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Stop a metric after this many failed runs.
const MAX_ERRORS: usize = 3;
const DOCKER_IMAGE: &str = "porthole-bench-busybox:latest";
/// The image the Docker backend imports for itself (removed again at the end).
const BACKEND_IMAGE: &str = "porthole-bench-busybox:backend";
const NATIVE_IMAGE: &str = "busybox";

const TARGET_LIFECYCLE_MS: f64 = 25.0;
const TARGET_EXEC_MS: f64 = 15.0;

type BenchResult<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let runs = env_count("PORTHOLE_BENCH_RUNS", 50);
    let docker_runs = env_count("PORTHOLE_BENCH_DOCKER_RUNS", 20);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("engine_lifecycle: cannot build the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let errors = runtime.block_on(bench(runs, docker_runs));
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        println!("errors: {errors} (see above)");
        ExitCode::FAILURE
    }
}

/// Runs everything; returns the number of errors reported.
async fn bench(runs: usize, docker_runs: usize) -> usize {
    println!("kernel: {}", read_trimmed("/proc/sys/kernel/osrelease"));
    println!("cgroup: {}", cgroup_description());
    // Other work on the host skews the numbers: say how busy it was.
    println!(
        "loadavg: {} (cpus: {})",
        read_trimmed("/proc/loadavg"),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let shim_exe = env!("CARGO_BIN_EXE_porthole");
    println!("shim: {shim_exe}");
    println!("runs: native {runs} (+{WARMUP} warm-up), docker {docker_runs} (+{DOCKER_WARMUP} warm-up)");

    let mut errors = 0;
    let native = match tempfile::Builder::new().prefix("phb").tempdir_in("/tmp") {
        Ok(dir) => {
            let result = native_bench(dir.path(), shim_exe, runs).await;
            errors += result.errors;
            unmount_leftovers(dir.path());
            let shown = dir.path().display().to_string();
            if let Err(e) = dir.close() {
                println!("error: cannot remove the data directory {shown}: {e}");
                errors += 1;
            }
            Some(result)
        }
        Err(e) => {
            println!("error: cannot create a data directory under /tmp: {e}");
            errors += 1;
            None
        }
    };

    let backend = docker_backend_bench(docker_runs).await;
    errors += backend.errors;

    let docker = docker_bench(docker_runs).await;
    errors += docker.errors;

    let native_lifecycle = native.as_ref().and_then(|n| n.lifecycle);
    let native_exec = native.as_ref().and_then(|n| n.exec);
    if let (Some(native), Some(backend)) = (native_lifecycle, backend.lifecycle) {
        print_ratio("lifecycle", "docker backend", native, backend);
    }
    if let (Some(native), Some(backend)) = (native_exec, backend.exec) {
        print_ratio("exec", "docker backend", native, backend);
    }
    if let (Some(native), Some(docker_run)) = (native_lifecycle, docker.run) {
        print_ratio("lifecycle", "docker CLI", native, docker_run);
    }
    if let (Some(native), Some(docker_run)) = (native_lifecycle, docker.run_without_network) {
        print_ratio("lifecycle", "docker CLI --network none", native, docker_run);
    }
    if let (Some(native), Some(docker_exec)) = (native_exec, docker.exec) {
        print_ratio("exec", "docker CLI", native, docker_exec);
    }
    errors
}

// ---------------------------------------------------------------------------------------------
// Native engine

/// The medians and error count of one engine (native, or Docker through the backend).
#[derive(Default)]
struct EngineResults {
    lifecycle: Option<Summary>,
    exec: Option<Summary>,
    errors: usize,
}

async fn native_bench(root: &Path, shim_exe: &str, runs: usize) -> EngineResults {
    let mut results = EngineResults::default();
    println!("data dir: {}", root.display());
    let opened = Instant::now();
    let config = NativeConfig { root: root.to_path_buf(), shim_exe: shim_exe.into(), starter_image: true };
    let engine = match bounded("open the engine", NativeEngine::open(config)).await {
        Ok(engine) => engine,
        Err(e) => {
            println!("error: {e}");
            results.errors += 1;
            return results;
        }
    };
    println!("engine open (incl. starter image): {:.1}ms", ms(opened.elapsed()));
    match bounded("engine info", engine.info()).await {
        Ok(info) => println!("engine: {} {} cgroup {}", info.backend, info.version, info.cgroup_version),
        Err(e) => {
            println!("error: {e}");
            results.errors += 1;
        }
    }

    // The engine's events, stamped on arrival: shows when the engine learnt of the exit.
    let (event_tx, mut event_rx) = mpsc::unbounded_channel();
    let mut events = engine.events();
    let forwarder = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if event_tx.send((Instant::now(), event)).is_err() {
                break;
            }
        }
    });

    let measured = Measured { label: "native", image: NATIVE_IMAGE, runs, warmup: WARMUP, targets: true };
    let (lifecycle, errors) = lifecycle_bench(&engine, &measured, &mut event_rx).await;
    results.lifecycle = lifecycle;
    results.errors += errors;

    let (exec, errors) = exec_bench(&engine, &measured).await;
    results.exec = exec;
    results.errors += errors;

    forwarder.abort();
    results.errors += remove_all(&engine).await;
    results
}

/// What one engine's measurements are called and run with.
struct Measured<'a> {
    /// `native` or `docker backend`, at the start of every printed line.
    label: &'a str,
    image: &'a str,
    runs: usize,
    warmup: usize,
    /// Print the (native engine's) targets beside the results.
    targets: bool,
}

impl Measured<'_> {
    fn target(&self, ms: f64) -> String {
        if self.targets {
            format!(" (target p50 < {ms} ms)")
        } else {
            String::new()
        }
    }
}

#[derive(Default)]
struct LifecycleSamples {
    total: Vec<f64>,
    create: Vec<f64>,
    start: Vec<f64>,
    wait: Vec<f64>,
    remove: Vec<f64>,
    /// From `start_container` returning to the `die` event arriving.
    die_after_start: Vec<f64>,
}

async fn lifecycle_bench(
    engine: &dyn Engine,
    measured: &Measured<'_>,
    events: &mut mpsc::UnboundedReceiver<(Instant, porthole_engine::api::Event)>,
) -> (Option<Summary>, usize) {
    let mut samples = LifecycleSamples::default();
    let mut errors = 0;
    let label = measured.label;
    let target = measured.target(TARGET_LIFECYCLE_MS);
    for i in 0..measured.warmup + measured.runs {
        match lifecycle_once(engine, measured.image, events).await {
            Ok(run) => {
                if i >= measured.warmup {
                    samples.total.push(run.total);
                    samples.create.push(run.create);
                    samples.start.push(run.start);
                    samples.wait.push(run.wait);
                    samples.remove.push(run.remove);
                    if let Some(die) = run.die_after_start {
                        samples.die_after_start.push(die);
                    }
                }
            }
            Err(e) => {
                println!("error: lifecycle {label} run {i}: {e}");
                errors += 1;
                if errors >= MAX_ERRORS {
                    println!("error: lifecycle {label}: {errors} failed runs, stopping this metric");
                    break;
                }
            }
        }
    }
    let summary = Summary::of(&samples.total);
    match summary {
        Some(s) => {
            println!("lifecycle {label}: {}{target}", s.line());
            println!(
                "lifecycle {label} phases (median): create={} start={} wait={} remove={}",
                fmt_median(&samples.create),
                fmt_median(&samples.start),
                fmt_median(&samples.wait),
                fmt_median(&samples.remove),
            );
            println!(
                "lifecycle {label} phases (p90): create={} start={} wait={} remove={}",
                fmt_p90(&samples.create),
                fmt_p90(&samples.start),
                fmt_p90(&samples.wait),
                fmt_p90(&samples.remove),
            );
            println!(
                "lifecycle {label}: die event {} after start returned (median, n={}); wait returned {} after start",
                fmt_median(&samples.die_after_start),
                samples.die_after_start.len(),
                fmt_median(&samples.wait),
            );
        }
        None => println!("lifecycle {label}: no successful runs{target}"),
    }
    (summary, errors)
}

struct LifecycleRun {
    total: f64,
    create: f64,
    start: f64,
    wait: f64,
    remove: f64,
    die_after_start: Option<f64>,
}

async fn lifecycle_once(
    engine: &dyn Engine,
    image: &str,
    events: &mut mpsc::UnboundedReceiver<(Instant, porthole_engine::api::Event)>,
) -> BenchResult<LifecycleRun> {
    // Forget events of earlier runs.
    while events.try_recv().is_ok() {}
    let config = ContainerConfig { image: image.into(), cmd: Some(vec!["true".into()]), ..Default::default() };
    let t0 = Instant::now();
    let id = bounded("create", engine.create_container(config)).await?;
    let t1 = Instant::now();
    let result = async {
        bounded("start", engine.start_container(&id)).await?;
        let t2 = Instant::now();
        let code = bounded("wait", engine.wait_container(&id)).await?;
        let t3 = Instant::now();
        if code != 0 {
            return Err(format!("`true` exited with {code}"));
        }
        Ok((t2, t3))
    }
    .await;
    let (t2, t3) = match result {
        Ok(times) => times,
        Err(e) => {
            force_remove(engine, &id).await;
            return Err(e);
        }
    };
    if let Err(e) = bounded("remove", engine.remove_container(&id, RemoveOptions::default())).await {
        force_remove(engine, &id).await;
        return Err(e);
    }
    let t4 = Instant::now();
    let mut die_after_start = None;
    while let Ok((at, event)) = events.try_recv() {
        if event.container_id == id && matches!(event.action, EventAction::Die { .. }) && die_after_start.is_none() {
            die_after_start = Some(ms(at.saturating_duration_since(t2)));
        }
    }
    Ok(LifecycleRun {
        total: ms(t4 - t0),
        create: ms(t1 - t0),
        start: ms(t2 - t1),
        wait: ms(t3 - t2),
        remove: ms(t4 - t3),
        die_after_start,
    })
}

#[derive(Default)]
struct ExecSamples {
    total: Vec<f64>,
    create: Vec<f64>,
    start: Vec<f64>,
    output_end: Vec<f64>,
    inspect: Vec<f64>,
    inspect_polls: Vec<f64>,
}

async fn exec_bench(engine: &dyn Engine, measured: &Measured<'_>) -> (Option<Summary>, usize) {
    let mut errors = 0;
    let label = measured.label;
    let target = measured.target(TARGET_EXEC_MS);
    let config = ContainerConfig {
        image: measured.image.into(),
        cmd: Some(vec!["sleep".into(), "3600".into()]),
        ..Default::default()
    };
    let id = match bounded("create the exec container", engine.create_container(config)).await {
        Ok(id) => id,
        Err(e) => {
            println!("error: exec: {e}");
            return (None, 1);
        }
    };
    if let Err(e) = bounded("start the exec container", engine.start_container(&id)).await {
        println!("error: exec: {e}");
        force_remove(engine, &id).await;
        return (None, 1);
    }
    let mut samples = ExecSamples::default();
    for i in 0..measured.warmup + measured.runs {
        match exec_once(engine, &id).await {
            Ok(run) => {
                if i >= measured.warmup {
                    samples.total.push(run.total);
                    samples.create.push(run.create);
                    samples.start.push(run.start);
                    samples.output_end.push(run.output_end);
                    samples.inspect.push(run.inspect);
                    samples.inspect_polls.push(run.inspect_polls as f64);
                }
            }
            Err(e) => {
                println!("error: exec {label} run {i}: {e}");
                errors += 1;
                if errors >= MAX_ERRORS {
                    println!("error: exec {label}: {errors} failed runs, stopping this metric");
                    break;
                }
            }
        }
    }
    let removed = Instant::now();
    match bounded("remove the exec container", engine.remove_container(&id, force())).await {
        Ok(()) => println!("exec {label} container force-remove: {:.1}ms", ms(removed.elapsed())),
        Err(e) => {
            println!("error: exec: {e}");
            errors += 1;
        }
    }
    let summary = Summary::of(&samples.total);
    match summary {
        Some(s) => {
            println!("exec {label}: {}{target}", s.line());
            println!(
                "exec {label} phases (median): create_exec={} start_exec={} output_end={} inspect={} \
                 (inspect calls until exit code: median {})",
                fmt_median(&samples.create),
                fmt_median(&samples.start),
                fmt_median(&samples.output_end),
                fmt_median(&samples.inspect),
                median(&samples.inspect_polls).map_or("-".into(), |m| format!("{m:.0}")),
            );
        }
        None => println!("exec {label}: no successful runs{target}"),
    }
    (summary, errors)
}

struct ExecRun {
    total: f64,
    create: f64,
    start: f64,
    output_end: f64,
    inspect: f64,
    inspect_polls: usize,
}

async fn exec_once(engine: &dyn Engine, container: &str) -> BenchResult<ExecRun> {
    let config = ExecConfig { cmd: vec!["true".into()], ..Default::default() };
    let t0 = Instant::now();
    let exec_id = bounded("create_exec", engine.create_exec(container, config)).await?;
    let t1 = Instant::now();
    let io = bounded("start_exec", engine.start_exec(&exec_id)).await?;
    let t2 = Instant::now();
    drop(io.input);
    let mut output = io.output;
    let drained = tokio::time::timeout(OP_TIMEOUT, async {
        while let Some(chunk) = output.next().await {
            chunk.map_err(|e| format!("exec output: {}", e.detail()))?;
        }
        Ok::<(), String>(())
    })
    .await;
    match drained {
        Ok(result) => result?,
        Err(_) => return Err(format!("exec output did not end within {OP_TIMEOUT:?}")),
    }
    let t3 = Instant::now();
    let deadline = t3 + EXEC_EXIT_TIMEOUT;
    let mut polls = 0;
    let code = loop {
        polls += 1;
        let details = bounded("inspect_exec", engine.inspect_exec(&exec_id)).await?;
        if let Some(code) = details.exit_code {
            break code;
        }
        if Instant::now() >= deadline {
            return Err(format!("no exit code for exec {exec_id} within {EXEC_EXIT_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let t4 = Instant::now();
    if code != 0 {
        return Err(format!("exec `true` exited with {code}"));
    }
    Ok(ExecRun {
        total: ms(t4 - t0),
        create: ms(t1 - t0),
        start: ms(t2 - t1),
        output_end: ms(t3 - t2),
        inspect: ms(t4 - t3),
        inspect_polls: polls,
    })
}

fn force() -> RemoveOptions {
    RemoveOptions { force: true, volumes: true }
}

async fn force_remove(engine: &dyn Engine, id: &str) {
    if let Err(e) = bounded("force remove", engine.remove_container(id, force())).await {
        println!("error: cleanup of {id}: {e}");
    }
}

/// Removes every container left in the data root; returns the number of failures.
async fn remove_all(engine: &NativeEngine) -> usize {
    let containers = match bounded("list containers", engine.list_containers(true)).await {
        Ok(containers) => containers,
        Err(e) => {
            println!("error: cleanup: {e}");
            return 1;
        }
    };
    let mut errors = 0;
    for c in containers {
        println!("cleanup: removing leftover container {}", c.name);
        if let Err(e) = bounded("force remove", engine.remove_container(&c.id, force())).await {
            println!("error: cleanup of {}: {e}", c.name);
            errors += 1;
        }
    }
    errors
}

/// Lazily unmounts anything still mounted under the data root, so it can be deleted.
fn unmount_leftovers(root: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let root = root.to_string_lossy();
    let mut targets: Vec<&str> =
        mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|t| t.starts_with(root.as_ref())).collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for target in targets {
        println!("cleanup: unmounting leftover {target}");
        let _ = std::process::Command::new("umount").arg("-l").arg(target).status();
    }
}

/// An engine call with a time limit, its error in words.
async fn bounded<T>(what: &str, fut: impl Future<Output = porthole_engine::api::Result<T>>) -> BenchResult<T> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what}: {}", e.detail())),
        Err(_) => Err(format!("{what}: no answer within {OP_TIMEOUT:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Docker, through Porthole's Docker backend

/// The daemon to measure: `PORTHOLE_BENCH_DOCKER_HOST`, else `DOCKER_HOST`.
fn docker_host() -> Option<String> {
    ["PORTHOLE_BENCH_DOCKER_HOST", "DOCKER_HOST"].iter().find_map(|v| std::env::var(v).ok().filter(|h| !h.is_empty()))
}

async fn docker_backend_bench(runs: usize) -> EngineResults {
    let mut results = EngineResults::default();
    let Some(host) = docker_host() else {
        println!("docker backend: neither PORTHOLE_BENCH_DOCKER_HOST nor DOCKER_HOST is set, skipped");
        return results;
    };
    let engine = match bounded("connect to the Docker daemon", DockerEngine::connect(&host)).await {
        Ok(engine) => engine,
        Err(e) => {
            println!("error: docker backend: {e}");
            results.errors += 1;
            return results;
        }
    };
    match bounded("engine info", engine.info()).await {
        Ok(info) => {
            println!("docker backend: {host}: {} {} cgroup {}", info.backend, info.version, info.cgroup_version)
        }
        Err(e) => {
            println!("error: docker backend: {e}");
            results.errors += 1;
            return results;
        }
    }
    let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).exists()) else {
        println!("error: docker backend: no busybox on this host (install busybox-static)");
        results.errors += 1;
        return results;
    };
    if let Err(e) = bounded("import the image", engine.load_busybox_image(Path::new(busybox), BACKEND_IMAGE)).await {
        println!("error: docker backend: {e}");
        results.errors += 1;
        return results;
    }

    let (event_tx, mut event_rx) = mpsc::unbounded_channel();
    let mut events = engine.events();
    let forwarder = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if event_tx.send((Instant::now(), event)).is_err() {
                break;
            }
        }
    });
    let measured =
        Measured { label: "docker backend", image: BACKEND_IMAGE, runs, warmup: DOCKER_WARMUP, targets: false };
    let (lifecycle, errors) = lifecycle_bench(&engine, &measured, &mut event_rx).await;
    results.lifecycle = lifecycle;
    results.errors += errors;
    let (exec, errors) = exec_bench(&engine, &measured).await;
    results.exec = exec;
    results.errors += errors;
    forwarder.abort();

    if let Err(e) = bounded("remove the image", engine.remove_image(BACKEND_IMAGE, true)).await {
        println!("error: docker backend: {e}");
        results.errors += 1;
    }
    results
}

// ---------------------------------------------------------------------------------------------
// Docker, through the docker CLI

#[derive(Default)]
struct DockerResults {
    run: Option<Summary>,
    run_without_network: Option<Summary>,
    exec: Option<Summary>,
    errors: usize,
}

async fn docker_bench(runs: usize) -> DockerResults {
    let mut results = DockerResults::default();
    match docker(&["info", "--format", "{{.ServerVersion}}"]).await {
        Ok(version) => println!("docker: daemon {}", version.trim()),
        Err(_) => {
            println!("docker: no daemon reachable, comparison skipped");
            return results;
        }
    }
    if let Err(e) = import_image().await {
        println!("error: docker: cannot import {DOCKER_IMAGE}: {e}");
        results.errors += 1;
        return results;
    }

    // The daemon's default network (a bridge, unless the daemon was started without one), as
    // a user's `docker run` gets it; and no network, as the native engine's default is.
    let (run, errors) = time_docker("lifecycle", &["run", "--rm", DOCKER_IMAGE, "true"], runs).await;
    results.run = run;
    results.errors += errors;
    let no_network = ["run", "--rm", "--network", "none", DOCKER_IMAGE, "true"];
    let (run, errors) = time_docker("lifecycle", &no_network, runs).await;
    results.run_without_network = run;
    results.errors += errors;

    let name = format!("porthole-bench-{}", std::process::id());
    match docker(&["run", "-d", "--name", &name, DOCKER_IMAGE, "sleep", "3600"]).await {
        Ok(_) => {
            let (exec, errors) = time_docker("exec", &["exec", &name, "true"], runs).await;
            results.exec = exec;
            results.errors += errors;
        }
        Err(e) => {
            println!("error: docker: cannot start the exec container: {e}");
            results.errors += 1;
        }
    }
    if let Err(e) = docker(&["rm", "-f", &name]).await {
        println!("error: docker: cannot remove {name}: {e}");
        results.errors += 1;
    }
    if let Err(e) = docker(&["rmi", DOCKER_IMAGE]).await {
        println!("error: docker: cannot remove {DOCKER_IMAGE}: {e}");
        results.errors += 1;
    }
    results
}

/// Times `docker ARGS` `runs` times after a warm-up and prints the result as `metric`; returns
/// the summary and the error count.
async fn time_docker(metric: &str, args: &[&str], runs: usize) -> (Option<Summary>, usize) {
    let mut samples = Vec::new();
    let mut errors = 0;
    for i in 0..DOCKER_WARMUP + runs {
        let t = Instant::now();
        match docker(args).await {
            Ok(_) if i >= DOCKER_WARMUP => samples.push(ms(t.elapsed())),
            Ok(_) => {}
            Err(e) => {
                println!("error: docker {} {i}: {e}", args[0]);
                errors += 1;
                if errors >= MAX_ERRORS {
                    break;
                }
            }
        }
    }
    let summary = Summary::of(&samples);
    let command = args.iter().map(|a| if *a == DOCKER_IMAGE { "IMG" } else { a }).collect::<Vec<_>>().join(" ");
    match summary {
        Some(s) => println!("{metric} docker (docker {command}): {}", s.line()),
        None => println!("{metric} docker (docker {command}): no successful runs"),
    }
    (summary, errors)
}

/// Builds a minimal rootfs from the host's static busybox and `docker import`s it.
async fn import_image() -> BenchResult<()> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("no busybox on this host (install busybox-static)")?;
    let dir = tempfile::Builder::new().prefix("phbd").tempdir_in("/tmp").map_err(|e| e.to_string())?;
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    std::fs::copy(busybox, bin.join("busybox")).map_err(|e| e.to_string())?;
    for applet in ["sh", "true", "sleep", "ls", "cat"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).map_err(|e| e.to_string())?;
    }
    let script = r#"tar -C "$1" -c . | docker import - "$2""#;
    let mut command = tokio::process::Command::new("sh");
    command.args(["-c", script, "sh"]).arg(dir.path()).arg(DOCKER_IMAGE);
    if let Ok(host) = std::env::var("PORTHOLE_BENCH_DOCKER_HOST") {
        command.env("DOCKER_HOST", host);
    }
    let result = run_bounded(&mut command).await.map(|_| ());
    let _ = dir.close();
    result
}

async fn docker(args: &[&str]) -> BenchResult<String> {
    let mut command = tokio::process::Command::new("docker");
    command.args(args);
    if let Ok(host) = std::env::var("PORTHOLE_BENCH_DOCKER_HOST") {
        command.env("DOCKER_HOST", host);
    }
    run_bounded(&mut command).await
}

/// Runs a command to completion within [`OP_TIMEOUT`] (killing it otherwise); returns stdout.
async fn run_bounded(command: &mut tokio::process::Command) -> BenchResult<String> {
    command.stdin(std::process::Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(OP_TIMEOUT, command.output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(Ok(out)) => Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {OP_TIMEOUT:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers

#[derive(Debug, Clone, Copy)]
struct Summary {
    n: usize,
    p50: f64,
    p90: f64,
    min: f64,
    max: f64,
}

impl Summary {
    fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            n: sorted.len(),
            p50: percentile(&sorted, 0.5),
            p90: percentile(&sorted, 0.9),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }

    fn line(&self) -> String {
        format!("n={} p50={:.1}ms p90={:.1}ms min={:.1}ms max={:.1}ms", self.n, self.p50, self.p90, self.min, self.max)
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    (!sorted.is_empty()).then(|| percentile(&sorted, 0.5))
}

fn fmt_median(samples: &[f64]) -> String {
    median(samples).map_or_else(|| "-".into(), |m| format!("{m:.1}ms"))
}

fn fmt_p90(samples: &[f64]) -> String {
    Summary::of(samples).map_or_else(|| "-".into(), |s| format!("{:.1}ms", s.p90))
}

fn print_ratio(metric: &str, other: &str, native: Summary, docker: Summary) {
    println!(
        "{metric} native/{other}: p50 {:.1}ms / {:.1}ms = {:.2} (native {:.1}x faster), p90 {:.1}ms / {:.1}ms = {:.2}",
        native.p50,
        docker.p50,
        native.p50 / docker.p50,
        docker.p50 / native.p50,
        native.p90,
        docker.p90,
        native.p90 / docker.p90,
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_RUNS).contains(&n) => n,
            _ => {
                println!("{name}={value:?} is not a count from 1 to {MAX_RUNS}; using {default}");
                default
            }
        },
        Err(_) => default,
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_else(|e| format!("unknown ({e})"))
}

fn cgroup_description() -> String {
    let engine = porthole_engine::native::cgroups::CgroupVersion::detect().describe();
    let root = Path::new("/sys/fs/cgroup");
    let layout = if root.join("cgroup.controllers").exists() {
        "unified"
    } else if root.join("unified/cgroup.controllers").exists() {
        "hybrid: v1 controllers, cgroup2 at /sys/fs/cgroup/unified"
    } else {
        "legacy"
    };
    format!("{engine} ({layout})")
}
