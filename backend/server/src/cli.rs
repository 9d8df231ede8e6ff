//! Command line and configuration. Every setting has a default, may be set in a TOML file, in a
//! `PORTHOLE_*` environment variable, and with a flag; each later source wins (defaults, file,
//! environment, flags). `porthole serve --help` documents every option.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::engines::EngineSpec;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/porthole";
pub const DEFAULT_CONFIG: &str = "/etc/porthole/porthole.toml";
pub const DEFAULT_LOG: &str = "info";

#[derive(Debug, Parser)]
#[command(name = "porthole", version, about = "Containers with live, shared terminals in the browser.")]
pub struct Cli {
    /// Log filter, in `tracing` syntax (e.g. `info`, `porthole=debug,tower_http=info`)
    /// [default: info].
    #[arg(long, global = true, env = "PORTHOLE_LOG")]
    pub log: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the web server (dashboard, API and terminals).
    Serve(ServeArgs),
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
        #[arg(long, env = "PORTHOLE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

/// `porthole serve` as given on the command line and in the environment (clap gives a flag
/// precedence over its variable); unset options come from the configuration file, then the
/// defaults.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML; keys as the long options with `_` for `-`, e.g.
    /// `listen = "0.0.0.0:8080"`, `allow_origin = ["https://demo.example.org"]`).
    /// [default: /etc/porthole/porthole.toml, when it exists]
    #[arg(long, env = "PORTHOLE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on. The default only accepts connections from this machine.
    /// [default: 127.0.0.1:8080]
    #[arg(long, env = "PORTHOLE_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Where Porthole keeps its state: images, containers, logs, the database.
    /// [default: /var/lib/porthole]
    #[arg(long, env = "PORTHOLE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Serve browser assets from this directory instead of the copies built into the binary
    /// (for frontend development: rebuild and reload without recompiling).
    #[arg(long, env = "PORTHOLE_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// A foreign origin (`https://host[:port]`) whose pages may call the API (CORS) and open
    /// WebSockets. Repeat, or separate with commas, for several. [default: none: only
    /// Porthole's own pages may]
    #[arg(long, env = "PORTHOLE_ALLOW_ORIGIN", value_delimiter = ',')]
    pub allow_origin: Option<Vec<String>>,

    /// An engine to drive, as `name=native` (the embedded engine) or `name=<Docker address>`:
    /// `unix:///var/run/docker.sock`; `tcp://host:2375` (plain); `tcp://host:2376?tls-dir=DIR`
    /// (TLS, the daemon checked against DIR/ca.pem, client certificate DIR/cert.pem and
    /// DIR/key.pem; or give files with `?ca=FILE&cert=FILE&key=FILE`);
    /// `ssh://[user@]host[:port][/remote/docker.sock]` (through the system's ssh and
    /// ~/.ssh/config; options `?identity=FILE&known-hosts=FILE&config=FILE`). Paths are absolute,
    /// `%2C` for a comma. Repeat for several; the first is the default for new containers.
    /// [default: native=native]
    #[arg(long = "engine", env = "PORTHOLE_ENGINES", value_delimiter = ',')]
    pub engines: Option<Vec<EngineSpec>>,

    /// The executable to run as each container's shim (`<exe> shim ...`); defaults to this
    /// `porthole` binary itself.
    #[arg(long, env = "PORTHOLE_SHIM", hide = true)]
    pub shim: Option<PathBuf>,
}

/// The configuration file's contents: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    static_dir: Option<PathBuf>,
    allow_origin: Option<Vec<String>>,
    log: Option<String>,
    /// As `--engine`: `["local=native", "docker=unix:///var/run/docker.sock"]`.
    engines: Option<Vec<String>>,
}

/// The settings `serve` runs with, every source applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub static_dir: Option<PathBuf>,
    pub allow_origin: Vec<String>,
    pub shim: Option<PathBuf>,
    pub log: String,
    pub engines: Vec<EngineSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the configuration file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn read_file(path: &Path, required: bool) -> Result<FileConfig, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|e| ConfigError::Invalid { path: path.to_path_buf(), message: e.message().to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(FileConfig::default()),
        Err(source) => Err(ConfigError::Read { path: path.to_path_buf(), source }),
    }
}

impl ServeArgs {
    fn config_path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }

    /// Applies the configuration file under these arguments and the defaults beneath both.
    /// `log` is the global `--log`/`PORTHOLE_LOG`, if given.
    pub fn resolve(self, log: Option<String>) -> Result<ServeOptions, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path, true)?,
            None => read_file(Path::new(DEFAULT_CONFIG), false)?,
        };
        let file_engines = match file.engines {
            Some(list) => Some(
                list.iter()
                    .map(|e| e.parse::<EngineSpec>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|message| ConfigError::Invalid { path: self.config_path(), message })?,
            ),
            None => None,
        };
        let engines =
            self.engines.clone().or(file_engines).unwrap_or_else(|| vec!["native=native".parse().expect("valid")]);
        Ok(ServeOptions {
            engines,
            listen: self.listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a valid default")),
            data_dir: self.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            static_dir: self.static_dir.or(file.static_dir),
            allow_origin: self.allow_origin.or(file.allow_origin).unwrap_or_default(),
            shim: self.shim,
            log: log.or(file.log).unwrap_or_else(|| DEFAULT_LOG.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_file_then_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("porthole.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\ndata_dir = \"/srv/porthole\"\nlog = \"debug\"\n").unwrap();

        let defaults = ServeArgs { config: Some(dir.path().join("absent.toml")), ..Default::default() };
        assert!(matches!(defaults.resolve(None), Err(ConfigError::Read { .. })), "a named file must exist");

        let from_file = ServeArgs { config: Some(path.clone()), ..Default::default() }.resolve(None).unwrap();
        assert_eq!(from_file.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(from_file.data_dir, PathBuf::from("/srv/porthole"));
        assert_eq!(from_file.log, "debug");
        assert_eq!(from_file.allow_origin, Vec::<String>::new());
        assert_eq!(from_file.engines, vec!["native=native".parse::<EngineSpec>().unwrap()], "the default engine");
        std::fs::write(&path, "engines = [\"ci=unix:///run/d.sock\", \"here=native\"]\n").unwrap();
        let engines = ServeArgs { config: Some(path.clone()), ..Default::default() }.resolve(None).unwrap().engines;
        assert_eq!(engines.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["ci", "here"]);
        std::fs::write(&path, "engines = [\"nonsense\"]\n").unwrap();
        let err = ServeArgs { config: Some(path.clone()), ..Default::default() }.resolve(None).unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\ndata_dir = \"/srv/porthole\"\nlog = \"debug\"\n").unwrap();

        let args = ServeArgs {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:9100".parse().unwrap()),
            ..Default::default()
        };
        let merged = args.resolve(Some("warn".into())).unwrap();
        assert_eq!(merged.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(merged.data_dir, PathBuf::from("/srv/porthole"), "unset flags fall back to the file");
        assert_eq!(merged.log, "warn");
    }

    #[test]
    fn unknown_or_mistyped_keys_are_errors_that_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("porthole.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:9000\"\n").unwrap();
        let err = ServeArgs { config: Some(path.clone()), ..Default::default() }.resolve(None).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        std::fs::write(&path, "listen = \"not an address\"\n").unwrap();
        let err = ServeArgs { config: Some(path), ..Default::default() }.resolve(None).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
    }

    #[test]
    fn the_environment_fills_in_and_flags_win_over_it() {
        // Only this test in this process parses the command line, so the variable is its own.
        std::env::set_var("PORTHOLE_LISTEN", "127.0.0.1:9200");
        let parse = |args: &[&str]| {
            let Command::Serve(args) = Cli::try_parse_from(args).unwrap().command else { panic!("serve") };
            args.resolve(None).unwrap()
        };
        assert_eq!(parse(&["porthole", "serve"]).listen.to_string(), "127.0.0.1:9200");
        let flagged = parse(&["porthole", "serve", "--listen", "127.0.0.1:9300"]);
        assert_eq!(flagged.listen.to_string(), "127.0.0.1:9300");
        std::env::remove_var("PORTHOLE_LISTEN");
        let listed = parse(&["porthole", "serve", "--allow-origin", "https://a.example,https://b.example"]);
        assert_eq!(listed.allow_origin, vec!["https://a.example", "https://b.example"]);
    }
}
