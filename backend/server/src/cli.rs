//! Command-line interface: every option documented in `--help`, each also settable through a
//! `PORTHOLE_*` environment variable (flags win over the environment).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "porthole", version, about = "Containers with live, shared terminals in the browser.")]
pub struct Cli {
    /// Log filter, in `tracing` syntax (e.g. `info`, `porthole=debug,tower_http=info`).
    #[arg(long, global = true, env = "PORTHOLE_LOG", default_value = "info")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the web server (dashboard, API and terminals).
    Serve(ServeOptions),
    /// Manage access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a new admin access token and print it (it is shown only this once).
    Create {
        /// A name to recognise the token by.
        #[arg(long, default_value = "admin")]
        name: String,
        /// Porthole's data directory (as for `serve`).
        #[arg(long, env = "PORTHOLE_DATA_DIR", default_value = "/var/lib/porthole")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ServeOptions {
    /// Address to listen on. The default only accepts connections from this machine.
    #[arg(long, env = "PORTHOLE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where Porthole keeps its state: images, containers, logs, the database.
    #[arg(long, env = "PORTHOLE_DATA_DIR", default_value = "/var/lib/porthole")]
    pub data_dir: PathBuf,

    /// Serve browser assets from this directory instead of the copies built into the binary
    /// (for frontend development: rebuild and reload without recompiling).
    #[arg(long, env = "PORTHOLE_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// A foreign origin (`https://host[:port]`) whose pages may call the API (CORS) and open
    /// WebSockets. Repeat for several; none by default (only Porthole's own pages may).
    #[arg(long, env = "PORTHOLE_ALLOW_ORIGIN", value_delimiter = ',')]
    pub allow_origin: Vec<String>,

    /// The executable to run as each container's shim (`<exe> shim ...`); defaults to this
    /// `porthole` binary itself.
    #[arg(long, env = "PORTHOLE_SHIM", hide = true)]
    pub shim: Option<PathBuf>,
}
