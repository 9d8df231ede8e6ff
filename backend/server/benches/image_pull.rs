//! Pull and unpack throughput of the native engine's image store, from a real
//! `docker-registry` on 127.0.0.1 (started here, in a temp dir), with `docker pull` of the same
//! image beside it when a Docker daemon is reachable.
//!
//! The image has `PORTHOLE_BENCH_LAYERS` (default 4) gzip layers of `PORTHOLE_BENCH_LAYER_MB`
//! (default 24) MiB of half-compressible data each, pushed with skopeo. Each run pulls it into
//! a fresh data directory; the unpack figure is `unpack_layer` alone over the same blobs.
//! Prints MB/s of compressed (wire) and unpacked bytes; never fails on a number. Needs root,
//! `docker-registry` and `skopeo`:
//!
//! ```text
//! cargo bench -p porthole --bench image_pull
//! ```

#[path = "../tests/images_support/mod.rs"]
mod images_support;

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use images_support::*;
use porthole_engine::api::{Images, PullOptions, RegistryConfig};

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0 && *n <= 64).unwrap_or(default)
}

fn mb_per_s(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / time.as_secs_f64()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() -> ExitCode {
    let layers = env_count("PORTHOLE_BENCH_LAYERS", 4);
    let layer_mb = env_count("PORTHOLE_BENCH_LAYER_MB", 24);
    let runs = env_count("PORTHOLE_BENCH_PULL_RUNS", 3);

    // Half random (incompressible), half text: roughly what real layers compress to.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut tars = Vec::new();
    for l in 0..layers {
        let mut t = LayerTar::new();
        if l == 0 {
            t = t.busybox();
        }
        for f in 0..layer_mb {
            let mut data = Vec::with_capacity(1 << 20);
            while data.len() < 1 << 19 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                data.extend_from_slice(&seed.to_le_bytes());
            }
            while data.len() < 1 << 20 {
                data.extend_from_slice(format!("line {} of layer {l} file {f}\n", data.len()).as_bytes());
            }
            t = t.file(&format!("l{l}/f{f}"), 0o644, &data);
        }
        tars.push(t.finish());
    }
    let unpacked: u64 = tars.iter().map(|t| t.len() as u64).sum();
    let layer_list: Vec<Layer> = tars.into_iter().map(Layer::gzip).collect();
    let wire: u64 = layer_list.iter().map(|l| l.blob.len() as u64).sum();

    let registry = Registry::start(RegistryAuth::None);
    let src = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::new(src.path());
    let blobs: Vec<Vec<u8>> = layer_list.iter().map(|l| l.blob.clone()).collect();
    let desc = layout.image(
        &layer_list,
        porthole_engine::native::images::host_architecture(),
        serde_json::json!({"Cmd": ["/bin/sh"]}),
    );
    layout.tag(&desc, "bench");
    let reference = format!("{}/bench/image:1", registry.host());
    layout.push("bench", &reference, false, None);
    println!(
        "image_pull: {layers} layers, {:.1} MiB on the wire, {:.1} MiB unpacked, {runs} runs (median)",
        wire as f64 / (1 << 20) as f64,
        unpacked as f64 / (1 << 20) as f64
    );

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut pull_times = Vec::new();
    for _ in 0..runs {
        let root = temp_root();
        let result = runtime.block_on(async {
            let engine = open(root.path()).await;
            engine.configure_registry(&registry.host(), RegistryConfig { insecure: true, credentials: None }).await?;
            let start = Instant::now();
            pull(&engine, &reference, PullOptions::default()).await?;
            Ok::<_, porthole_engine::api::EngineError>(start.elapsed())
        });
        match result {
            Ok(t) => pull_times.push(t),
            Err(e) => {
                eprintln!("image_pull: a pull failed: {}", e.detail());
                return ExitCode::FAILURE;
            }
        }
    }
    let pull_time = median(pull_times);
    println!(
        "porthole pull    {:>8.1} ms  {:>7.1} MB/s wire  {:>7.1} MB/s unpacked",
        pull_time.as_secs_f64() * 1000.0,
        mb_per_s(wire, pull_time),
        mb_per_s(unpacked, pull_time)
    );

    let mut unpack_times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        for blob in &blobs {
            let dir = tempfile::tempdir_in("/tmp").unwrap();
            porthole_engine::native::unpack::unpack_layer(blob.as_slice(), dir.path(), Default::default()).unwrap();
        }
        unpack_times.push(start.elapsed());
    }
    let unpack_time = median(unpack_times);
    println!(
        "porthole unpack  {:>8.1} ms  {:>7.1} MB/s wire  {:>7.1} MB/s unpacked",
        unpack_time.as_secs_f64() * 1000.0,
        mb_per_s(wire, unpack_time),
        mb_per_s(unpacked, unpack_time)
    );

    if let Some(docker) = DockerCli::find() {
        let mut times = Vec::new();
        for _ in 0..runs {
            let _ =
                docker.command().args(["rmi", "-f", &reference]).stdout(Stdio::null()).stderr(Stdio::null()).status();
            let start = Instant::now();
            let ok = docker.command().args(["pull", "-q", &reference]).stdout(Stdio::null()).status();
            if !ok.is_ok_and(|s| s.success()) {
                eprintln!("image_pull: docker pull failed (is 127.0.0.1 an insecure registry for the daemon?)");
                break;
            }
            times.push(start.elapsed());
        }
        let _ = docker.command().args(["rmi", "-f", &reference]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !times.is_empty() {
            let t = median(times);
            println!(
                "docker pull      {:>8.1} ms  {:>7.1} MB/s wire  {:>7.1} MB/s unpacked",
                t.as_secs_f64() * 1000.0,
                mb_per_s(wire, t),
                mb_per_s(unpacked, t)
            );
        }
    } else {
        println!("docker pull      (no Docker daemon reachable: not compared)");
    }
    ExitCode::SUCCESS
}
