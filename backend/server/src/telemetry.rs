//! Logging set-up: `tracing` to stderr, filtered by the `--log` option.

use tracing_subscriber::EnvFilter;

pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|err| {
        eprintln!("porthole: invalid --log filter {filter:?} ({err}); using \"info\"");
        EnvFilter::new("info")
    });
    // A second call (tests start several servers in one process) keeps the first subscriber.
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr).try_init();
}
