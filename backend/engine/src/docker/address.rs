//! Docker daemon addresses as configured: `unix:///path` (or a bare absolute path),
//! `tcp://host:port` (plain, or TLS with the options `tls-dir`, `ca`, `cert`, `key`) and
//! `ssh://[user@]host[:port][/remote/socket]` (options `identity`, `known-hosts`, `config`).
//!
//! Parsing only checks the syntax (no file is read), so a server can refuse a bad address when
//! it starts. An address shows itself ([`fmt::Display`]) without its options: file paths stay
//! in the configuration and the logs of the connection, never in what the API reports.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use crate::api::{EngineError, Result};

/// The remote socket an `ssh://` address reaches when it names none.
pub(super) const DEFAULT_REMOTE_SOCKET: &str = "/var/run/docker.sock";

/// A parsed Docker daemon address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerAddress {
    pub(super) kind: AddressKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AddressKind {
    Unix(PathBuf),
    /// `host:port`; TLS when `tls` is set.
    Tcp {
        host: String,
        port: u16,
        tls: Option<TlsFiles>,
    },
    Ssh(SshTarget),
}

/// The TLS material of a `tcp://` address. The daemon is always verified against `ca`; the
/// client certificate is what a daemon run with `--tlsverify` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TlsFiles {
    pub(super) ca: PathBuf,
    /// Certificate (chain) and private key, PEM.
    pub(super) client: Option<(PathBuf, PathBuf)>,
}

/// Where an `ssh://` address leads, and how ssh gets there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SshTarget {
    pub(super) user: Option<String>,
    /// A name or an address; IPv6 without brackets.
    pub(super) host: String,
    pub(super) port: Option<u16>,
    pub(super) remote_socket: String,
    /// `ssh -i` (with `IdentitiesOnly`, so only this key is offered).
    pub(super) identity: Option<PathBuf>,
    /// `UserKnownHostsFile`: the host keys to trust instead of `~/.ssh/known_hosts`.
    pub(super) known_hosts: Option<PathBuf>,
    /// `ssh -F`: a configuration file instead of `~/.ssh/config`.
    pub(super) config: Option<PathBuf>,
}

impl SshTarget {
    /// `[user@]host[:port]`, as shown in messages.
    pub(super) fn destination(&self) -> String {
        let mut out = String::new();
        if let Some(user) = &self.user {
            out.push_str(user);
            out.push('@');
        }
        out.push_str(&bracketed(&self.host));
        if let Some(port) = self.port {
            out.push_str(&format!(":{port}"));
        }
        out
    }
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

impl fmt::Display for DockerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            AddressKind::Unix(path) => write!(f, "unix://{}", path.display()),
            AddressKind::Tcp { host, port, tls: None } => write!(f, "tcp://{}:{port}", bracketed(host)),
            AddressKind::Tcp { host, port, tls: Some(_) } => write!(f, "tcp://{}:{port} (TLS)", bracketed(host)),
            AddressKind::Ssh(target) => write!(f, "ssh://{}{}", target.destination(), target.remote_socket),
        }
    }
}

fn invalid(address: &str, why: impl fmt::Display) -> EngineError {
    // The address may carry file paths; the message names only its scheme and host part.
    let shown = address.split('?').next().unwrap_or(address);
    EngineError::invalid(format!("Docker address {shown:?}: {why}"))
}

/// `%XX` escapes, so paths with `&`, `?`, `,` or `%` can be written in an option.
fn percent_decode(value: &str) -> Option<OsString> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(OsString::from_vec(out))
}

/// The `?name=value&...` options, each at most once, each an absolute path.
fn options(address: &str, query: Option<&str>, allowed: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&name) {
            // Refused rather than ignored: a misspelt TLS option must not fall back to plain TCP.
            return Err(invalid(
                address,
                format!("unknown option {name:?} (this scheme takes {})", allowed.join(", ")),
            ));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(invalid(address, format!("option {name} is given twice")));
        }
        let path = percent_decode(value)
            .map(PathBuf::from)
            .ok_or_else(|| invalid(address, format!("option {name}: bad %-escape")))?;
        if !path.is_absolute() {
            return Err(invalid(address, format!("option {name} needs an absolute path")));
        }
        out.push((name.to_string(), path));
    }
    Ok(out)
}

fn take(options: &mut Vec<(String, PathBuf)>, name: &str) -> Option<PathBuf> {
    let at = options.iter().position(|(n, _)| n == name)?;
    Some(options.remove(at).1)
}

/// Host names, IPv4 and (bracketed) IPv6 addresses; nothing ssh could read as an option.
fn parse_host_port(address: &str, authority: &str) -> Result<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| invalid(address, "unclosed '[' in the host"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| invalid(address, "expected ':port' after ']'"))?),
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid(address, "only an IPv6 address goes in brackets"));
        }
        (host.to_string(), port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let valid = !host.is_empty()
            && !host.starts_with(['-', '.'])
            && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !valid {
            return Err(invalid(address, format!("{host:?} is not a host name or address")));
        }
        (host.to_string(), port)
    };
    let port = match port {
        None => None,
        Some(p) => {
            Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| invalid(address, format!("bad port {p:?}")))?)
        }
    };
    Ok((host, port))
}

impl DockerAddress {
    /// Parses an address (see the module documentation). Errors are `InvalidArgument`.
    pub fn parse(address: &str) -> Result<DockerAddress> {
        let address = address.trim();
        let (base, query) = match address.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (address, None),
        };
        let kind = if let Some(path) = base.strip_prefix("unix://").or(base.starts_with('/').then_some(base)) {
            options(address, query, &[])?;
            if !path.starts_with('/') {
                return Err(invalid(address, "unix:// needs an absolute socket path (unix:///run/docker.sock)"));
            }
            AddressKind::Unix(PathBuf::from(path))
        } else if let Some(rest) = base.strip_prefix("tcp://").or_else(|| base.strip_prefix("http://")) {
            let authority = rest.strip_suffix('/').unwrap_or(rest);
            if authority.is_empty() || authority.contains('/') {
                return Err(invalid(address, "use tcp://host:port"));
            }
            let (host, port) = parse_host_port(address, authority)?;
            let port = port.ok_or_else(|| invalid(address, "give the port (2375 plain, 2376 with TLS)"))?;
            let tls = tls_files(address, options(address, query, &["tls-dir", "ca", "cert", "key"])?)?;
            if tls.is_some() && base.starts_with("http://") {
                return Err(invalid(address, "http:// is plain HTTP: write tcp:// with the TLS options"));
            }
            AddressKind::Tcp { host, port, tls }
        } else if let Some(rest) = base.strip_prefix("ssh://") {
            let (authority, path) = match rest.find('/') {
                Some(at) => (&rest[..at], &rest[at..]),
                None => (rest, ""),
            };
            let (user, host_port) = match authority.rsplit_once('@') {
                Some((user, host)) => (Some(user), host),
                None => (None, authority),
            };
            if let Some(user) = user {
                let valid = !user.is_empty()
                    && !user.starts_with('-')
                    && user.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
                if !valid {
                    return Err(invalid(address, format!("{user:?} is not a user name")));
                }
            }
            let (host, port) = parse_host_port(address, host_port)?;
            let remote_socket = match path {
                "" | "/" => DEFAULT_REMOTE_SOCKET.to_string(),
                p if p.chars().any(|c| c == ':' || c.is_whitespace() || c.is_control()) => {
                    return Err(invalid(address, "the remote socket path cannot contain ':' or spaces"))
                }
                p => p.to_string(),
            };
            let mut opts = options(address, query, &["identity", "known-hosts", "config"])?;
            let known_hosts = take(&mut opts, "known-hosts");
            if let Some(path) = &known_hosts {
                // ssh splits `-o` values at spaces and quotes.
                if path.to_string_lossy().chars().any(|c| c.is_whitespace() || c == '"' || c == '\'') {
                    return Err(invalid(address, "the known-hosts path cannot contain spaces or quotes"));
                }
            }
            AddressKind::Ssh(SshTarget {
                user: user.map(str::to_string),
                host,
                port,
                remote_socket,
                identity: take(&mut opts, "identity"),
                known_hosts,
                config: take(&mut opts, "config"),
            })
        } else if base.starts_with("https://") {
            return Err(invalid(address, "write tcp://host:port with the TLS options (?tls-dir=... or ?ca=...)"));
        } else {
            return Err(invalid(
                address,
                "use unix:///path/to/docker.sock, tcp://host:port[?tls-dir=DIR] or ssh://[user@]host[:port][/socket]",
            ));
        };
        Ok(DockerAddress { kind })
    }
}

/// TLS from `tls-dir` (Docker's `DOCKER_CERT_PATH` layout: ca.pem, cert.pem, key.pem) and the
/// single-file options, which win over the directory's.
fn tls_files(address: &str, mut options: Vec<(String, PathBuf)>) -> Result<Option<TlsFiles>> {
    if options.is_empty() {
        return Ok(None);
    }
    let dir = take(&mut options, "tls-dir");
    let from_dir = |name: &str| dir.as_ref().map(|d| d.join(name));
    let ca = take(&mut options, "ca").or_else(|| from_dir("ca.pem"));
    let cert = take(&mut options, "cert").or_else(|| from_dir("cert.pem"));
    let key = take(&mut options, "key").or_else(|| from_dir("key.pem"));
    let Some(ca) = ca else {
        // Fail closed: TLS without a CA to check the daemon against would trust any daemon.
        return Err(invalid(address, "TLS needs the daemon's CA certificate (ca=/path/ca.pem or tls-dir=DIR)"));
    };
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err(invalid(address, "a client certificate needs both cert= and key=")),
    };
    Ok(Some(TlsFiles { ca, client }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(address: &str) -> AddressKind {
        DockerAddress::parse(address).unwrap_or_else(|e| panic!("{address}: {}", e.message())).kind
    }

    fn error(address: &str) -> String {
        let err = DockerAddress::parse(address).unwrap_err();
        assert_eq!(err.kind(), crate::api::ErrorKind::InvalidArgument);
        err.message().to_string()
    }

    #[test]
    fn unix_and_plain_tcp() {
        assert_eq!(kind("unix:///run/d.sock"), AddressKind::Unix("/run/d.sock".into()));
        assert_eq!(kind("/var/run/docker.sock"), AddressKind::Unix("/var/run/docker.sock".into()));
        assert_eq!(kind("tcp://127.0.0.1:2375"), AddressKind::Tcp { host: "127.0.0.1".into(), port: 2375, tls: None });
        assert_eq!(kind("http://[::1]:2375/"), AddressKind::Tcp { host: "::1".into(), port: 2375, tls: None });
        error("unix://relative");
        error("tcp://");
        assert!(error("tcp://host").contains("port"));
        error("tcp://-oProxyCommand=x:1");
        assert!(error("ftp://host").contains("use unix://"));
    }

    #[test]
    fn tls_options_from_a_directory_or_files() {
        let AddressKind::Tcp { tls: Some(tls), .. } = kind("tcp://d.example:2376?tls-dir=/etc/d") else { panic!() };
        assert_eq!(tls.ca, PathBuf::from("/etc/d/ca.pem"));
        assert_eq!(tls.client, Some(("/etc/d/cert.pem".into(), "/etc/d/key.pem".into())));
        let AddressKind::Tcp { tls: Some(tls), .. } = kind("tcp://h:2376?tls-dir=/etc/d&key=/secret/a%26b.pem") else {
            panic!()
        };
        assert_eq!(tls.client, Some(("/etc/d/cert.pem".into(), "/secret/a&b.pem".into())));
        let AddressKind::Tcp { tls: Some(tls), .. } = kind("tcp://h:2376?ca=/c.pem") else { panic!() };
        assert_eq!((tls.ca, tls.client), ("/c.pem".into(), None));

        assert!(error("tcp://h:2376?cert=/c.pem&key=/k.pem").contains("CA"), "no CA: refused, never trusted");
        assert!(error("tcp://h:2376?ca=/c.pem&cert=/c.pem").contains("both"));
        assert!(error("tcp://h:2376?cafile=/c.pem").contains("unknown option"), "a typo never means plain TCP");
        assert!(error("tcp://h:2376?ca=c.pem").contains("absolute"));
        assert!(error("tcp://h:2376?ca=/a&ca=/b").contains("twice"));
        assert!(error("http://h:2376?ca=/a").contains("plain"));
        assert!(error("https://h:2376").contains("tcp://"));
        error("unix:///run/d.sock?ca=/c.pem");
    }

    #[test]
    fn ssh_targets() {
        let AddressKind::Ssh(target) = kind("ssh://me@host.example") else { panic!() };
        assert_eq!(target.user.as_deref(), Some("me"));
        assert_eq!((target.host.as_str(), target.port), ("host.example", None));
        assert_eq!(target.remote_socket, DEFAULT_REMOTE_SOCKET);
        let address = "ssh://root@127.0.0.1:2222/run/user/0/docker.sock?identity=/k/id&known-hosts=/k/kh&config=/k/c";
        let AddressKind::Ssh(target) = kind(address) else { panic!() };
        assert_eq!(target.port, Some(2222));
        assert_eq!(target.remote_socket, "/run/user/0/docker.sock");
        assert_eq!(target.identity, Some("/k/id".into()));
        assert_eq!(target.known_hosts, Some("/k/kh".into()));
        assert_eq!(target.config, Some("/k/c".into()));
        let AddressKind::Ssh(target) = kind("ssh://[::1]:22/") else { panic!() };
        assert_eq!((target.host.as_str(), target.user), ("::1", None));

        error("ssh://-oProxyCommand=evil");
        error("ssh://-l@host");
        error("ssh://me@host/a:b");
        error("ssh://host?identity=/a&ca=/b");
        error("ssh://host?known-hosts=/a%20b");
    }

    #[test]
    fn the_shown_address_has_no_file_paths() {
        let shown = |a: &str| DockerAddress::parse(a).unwrap().to_string();
        assert_eq!(shown("tcp://h:2376?tls-dir=/etc/secret"), "tcp://h:2376 (TLS)");
        assert_eq!(shown("ssh://me@h:2222?identity=/root/.ssh/id"), "ssh://me@h:2222/var/run/docker.sock");
        assert_eq!(shown("ssh://[::1]/run/d.sock"), "ssh://[::1]/run/d.sock");
        assert_eq!(shown("/run/d.sock"), "unix:///run/d.sock");
        assert!(!error("tcp://h:2376?tls-dir=/etc/secret&bogus=1").contains("/etc/secret"));
    }
}
