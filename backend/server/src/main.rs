//! The `porthole` binary: `porthole serve` runs the server; `porthole shim` is the per-container
//! shim the native engine re-executes (it must be dispatched before any thread exists).

use std::process::ExitCode;

use clap::Parser;
use porthole::cli::{Cli, Command, TokenCommand};

fn main() -> ExitCode {
    // The shim forks containers with libcontainer, which is only safe while the process is
    // single-threaded: dispatch it before clap, tracing or tokio can start anything.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "shim") {
        return porthole_engine::native::shim::main(&args[2..]);
    }

    let cli = Cli::parse();
    let command = match cli.command {
        Command::Serve(args) => match args.resolve(cli.log.clone()) {
            Ok(options) => Ok(options),
            Err(err) => {
                eprintln!("porthole: {err}");
                return ExitCode::FAILURE;
            }
        },
        Command::Token(token) => Err(token),
    };
    let log = match &command {
        Ok(options) => options.log.clone(),
        Err(_) => cli.log.unwrap_or_else(|| porthole::cli::DEFAULT_LOG.to_string()),
    };
    porthole::telemetry::init(&log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("porthole: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match command {
        Ok(options) => runtime.block_on(porthole::serve(options)),
        Err(TokenCommand::Create { name, data_dir }) => {
            runtime.block_on(porthole::create_token(&data_dir, &name)).map(|token| println!("{token}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("porthole: {err}");
            ExitCode::FAILURE
        }
    }
}
