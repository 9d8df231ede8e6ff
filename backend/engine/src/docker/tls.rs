//! TLS to a remote Docker daemon (`tcp://host:port` with TLS options): the one place that reads
//! the CA, client certificate and key and builds the rustls client configuration, used both by
//! bollard's requests ([`TlsTarget::docker`], through hyper-rustls) and by the hijacked attach and
//! exec connections ([`TlsTarget::connect`], through tokio-rustls) — terminals are as protected
//! as the rest.
//!
//! Fails closed: the daemon's certificate is checked against the configured CA only (never the
//! system's trust store), for the configured host name or address; any problem with the files
//! stops the connection with an `invalid_argument` error. TLS failures on the wire are put in
//! words by [`failure`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::{BollardRequest, Docker};
use hyper_rustls::FixedServerNameResolver;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::address::TlsFiles;
use crate::api::{EngineError, Result};

/// Pooled connections to the daemon are closed after this long unused.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Which of the files went wrong, in the words of the address's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TlsFile {
    Ca,
    Cert,
    Key,
}

impl std::fmt::Display for TlsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsFile::Ca => "the CA certificate (ca=)",
            TlsFile::Cert => "the client certificate (cert=)",
            TlsFile::Key => "the client key (key=)",
        })
    }
}

/// Why the TLS files cannot be used. These name the paths, so they are logged (as an error's
/// source), not shown by the API.
#[derive(Debug, thiserror::Error)]
pub(super) enum TlsFileError {
    #[error("cannot read {file} {}", path.display())]
    Read { file: TlsFile, path: PathBuf, source: std::io::Error },
    #[error("{file} {} holds no PEM {expected}", path.display())]
    Empty { file: TlsFile, path: PathBuf, expected: &'static str },
    #[error("{file} {} is not valid PEM: {reason}", path.display())]
    BadPem { file: TlsFile, path: PathBuf, reason: String },
    #[error("{file} {} is not usable", path.display())]
    Unusable { file: TlsFile, path: PathBuf, source: rustls::Error },
}

impl TlsFileError {
    fn file(&self) -> TlsFile {
        match self {
            TlsFileError::Read { file, .. }
            | TlsFileError::Empty { file, .. }
            | TlsFileError::BadPem { file, .. }
            | TlsFileError::Unusable { file, .. } => *file,
        }
    }

    /// What the API may show: which file, not where it is.
    fn summary(&self) -> String {
        let file = self.file();
        match self {
            TlsFileError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                format!("{file} does not exist")
            }
            TlsFileError::Read { .. } => format!("{file} cannot be read"),
            TlsFileError::Empty { expected, .. } => format!("{file} holds no PEM {expected}"),
            TlsFileError::BadPem { .. } => format!("{file} is not valid PEM"),
            TlsFileError::Unusable { source: rustls::Error::InconsistentKeys(_), .. } => {
                format!("{file} does not belong to the client certificate (cert=)")
            }
            TlsFileError::Unusable { .. } => format!("{file} is not usable"),
        }
    }
}

fn read(file: TlsFile, path: &Path) -> std::result::Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read { file, path: path.to_path_buf(), source })
}

fn certificates(file: TlsFile, path: &Path) -> std::result::Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read(file, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| TlsFileError::BadPem { file, path: path.to_path_buf(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsFileError::Empty { file, path: path.to_path_buf(), expected: "certificate" });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> std::result::Result<PrivateKeyDer<'static>, TlsFileError> {
    let file = TlsFile::Key;
    let pem = read(file, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            TlsFileError::Empty { file, path: path.to_path_buf(), expected: "private key" }
        }
        other => TlsFileError::BadPem { file, path: path.to_path_buf(), reason: other.to_string() },
    })
}

/// Builds the client configuration from the address's files: roots = the CA's certificates only,
/// and the client certificate when one is configured. `shown` is the address for messages.
pub(super) fn client_config(files: &TlsFiles, shown: &str) -> Result<Arc<ClientConfig>> {
    build_config(files).map_err(|e| {
        EngineError::invalid(format!("TLS for the Docker daemon at {shown}: {}", e.summary())).with_source(e)
    })
}

fn build_config(files: &TlsFiles) -> std::result::Result<Arc<ClientConfig>, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(TlsFile::Ca, &files.ca)? {
        roots.add(cert).map_err(|source| TlsFileError::Unusable {
            file: TlsFile::Ca,
            path: files.ca.clone(),
            source,
        })?;
    }
    // The ring provider explicitly, rather than whatever the process installed as its default.
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsFileError::Unusable { file: TlsFile::Ca, path: files.ca.clone(), source })?
        .with_root_certificates(roots);
    let config = match &files.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certificates(TlsFile::Cert, cert)?;
            let key_der = private_key(key)?;
            // Also refuses a key that does not belong to the certificate.
            builder.with_client_auth_cert(chain, key_der).map_err(|source| TlsFileError::Unusable {
                file: TlsFile::Key,
                path: key.clone(),
                source,
            })?
        }
    };
    Ok(Arc::new(config))
}

/// A daemon reached over TLS: where, the name its certificate must carry, and the configuration.
#[derive(Clone)]
pub(super) struct TlsTarget {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTarget").field("host", &self.host).field("port", &self.port).finish_non_exhaustive()
    }
}

impl TlsTarget {
    /// Reads the files (see [`client_config`]); `host` is a name or an IP address (IPv6 without
    /// brackets), checked against the daemon certificate's subject alternative names.
    pub(super) fn new(host: &str, port: u16, files: &TlsFiles, shown: &str) -> Result<TlsTarget> {
        let server_name = ServerName::try_from(host.to_string()).map_err(|e| {
            EngineError::invalid(format!("{shown}: {host:?} cannot be checked against a certificate: {e}"))
        })?;
        Ok(TlsTarget { host: host.to_string(), port, server_name, config: client_config(files, shown)? })
    }

    /// `host:port` as it goes in a URI.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// A new TLS connection (for a hijacked stream).
    pub(super) async fn connect(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        // Terminal keystrokes are small writes; do not hold them back.
        tcp.set_nodelay(true)?;
        TlsConnector::from(self.config.clone()).connect(self.server_name.clone(), tcp).await
    }

    /// Opens a connection and asks `GET /_ping`. Run before the first request through the
    /// pooled client, whose errors can lose the TLS cause: with TLS 1.3 a daemon refuses a
    /// client certificate only after the handshake, and hyper then reports a connection that
    /// closed before use ("not ready") rather than the daemon's alert. Here the request is
    /// written and the answer read directly, so the alert comes back as the read's error.
    pub(super) async fn probe(&self, shown: &str) -> Result<()> {
        let failed = |e: std::io::Error| match failure(&e) {
            Some(why) => {
                EngineError::unavailable(format!("TLS with the Docker daemon at {shown} failed: {why}")).with_source(e)
            }
            None => EngineError::unavailable(format!("cannot reach the Docker daemon at {shown}")).with_source(e),
        };
        let mut stream = self.connect().await.map_err(failed)?;
        let request = format!("GET /_ping HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.authority());
        stream.write_all(request.as_bytes()).await.map_err(failed)?;
        stream.flush().await.map_err(failed)?;
        let mut head = [0u8; 7];
        stream.read_exact(&mut head).await.map_err(failed)?;
        if &head != b"HTTP/1." {
            return Err(EngineError::unavailable(format!("the daemon at {shown} does not answer HTTP over TLS")));
        }
        Ok(())
    }

    /// A bollard client whose every request goes over this TLS configuration (pooled HTTP/1.1
    /// connections; `https` only, so nothing is ever sent in the clear).
    pub(super) fn docker(&self, timeout_secs: u64) -> Result<Docker> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(ClientConfig::clone(&self.config))
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(self.server_name.clone()))
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE).build(https);
        let transport = move |request: BollardRequest| {
            let client = client.clone();
            async move { client.request(request).await.map_err(bollard::errors::Error::from) }
        };
        Docker::connect_with_custom_transport(
            transport,
            Some(format!("https://{}", self.authority())),
            timeout_secs,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| EngineError::internal("cannot set up the TLS client for the Docker daemon", e))
    }
}

/// If a TLS problem is behind `err` (anywhere in its chain), what it means, in words.
pub(super) fn failure(err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut current = Some(err);
    // Chains are short; the bound only guards against a cycle.
    for _ in 0..16 {
        let e = current?;
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(tls));
        }
        // `io::Error::source` skips the error it wraps, which is where rustls puts its own.
        if let Some(tls) =
            e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()?.downcast_ref::<rustls::Error>())
        {
            return Some(describe(tls));
        }
        current = e.source();
    }
    None
}

fn describe(err: &rustls::Error) -> &'static str {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as E};
    match err {
        E::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => {
            "the daemon's certificate is not signed by the configured CA"
        }
        E::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            "the daemon's certificate is not valid for the host in the address"
        }
        E::InvalidCertificate(
            Cert::Expired | Cert::ExpiredContext { .. } | Cert::NotValidYet | Cert::NotValidYetContext { .. },
        ) => "the daemon's certificate has expired or is not valid yet",
        E::InvalidCertificate(_) => "the daemon's certificate was rejected",
        E::AlertReceived(Alert::CertificateRequired) => {
            "the daemon requires a client certificate (give cert= and key=, or tls-dir=)"
        }
        E::AlertReceived(
            Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::UnsupportedCertificate
            | Alert::AccessDenied
            | Alert::HandshakeFailure,
        ) => "the daemon refused the connection: it needs a client certificate signed by a CA it trusts",
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            "the daemon does not answer with TLS on this port"
        }
        _ => "the TLS connection failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles { ca: dir.join("ca.pem"), client: Some((dir.join("cert.pem"), dir.join("key.pem"))) }
    }

    #[test]
    fn unreadable_files_are_named_in_the_log_not_in_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let err = client_config(&files(dir.path()), "tcp://h:2376 (TLS)").unwrap_err();
        assert_eq!(err.kind(), crate::api::ErrorKind::InvalidArgument);
        assert!(err.message().contains("the CA certificate (ca=) does not exist"), "{}", err.message());
        assert!(!err.message().contains(&*dir.path().to_string_lossy()), "{}", err.message());
        assert!(err.detail().contains(&*dir.path().join("ca.pem").to_string_lossy()), "{}", err.detail());

        std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
        let err = client_config(&files(dir.path()), "x").unwrap_err();
        assert!(err.message().contains("holds no PEM certificate"), "{}", err.message());
    }

    #[test]
    fn rustls_errors_are_found_inside_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(failure(&io), Some("the daemon's certificate is not signed by the configured CA"));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(failure(&plain), None);
    }
}
