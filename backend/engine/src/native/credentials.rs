//! Registry settings: which registries are plain HTTP, and the credentials to log in with.
//!
//! `images/registries.json` (mode 0600) holds them; each secret is sealed with
//! ChaCha20-Poly1305 under a random key kept in a separate file, `images/registries.key`
//! (0600), with the registry's name as associated data. A copy of the settings file alone
//! (a backup, a support bundle) reveals no secret, and a sealed secret cannot be moved to
//! another registry's entry. Secrets leave this module only as [`RegistryCredentials`], whose
//! `Debug` hides them, and only towards the registry client.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};

use crate::api::{EngineError, RegistryConfig, RegistryCredentials, RegistrySummary, Result};

const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StoredRegistry {
    insecure: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    /// base64(nonce ‖ ciphertext).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed_secret: Option<String>,
}

/// What a pull needs to know about one registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryAccess {
    pub insecure: bool,
    pub credentials: Option<RegistryCredentials>,
}

#[derive(Debug, Clone)]
pub struct RegistrySettings {
    file: PathBuf,
    key_file: PathBuf,
    lock: std::sync::Arc<std::sync::Mutex<()>>,
}

/// The name registries are stored under: Docker Hub's aliases become `docker.io`.
pub fn normalize_registry(registry: &str) -> Result<String> {
    let name = registry.trim().trim_end_matches('/').to_ascii_lowercase();
    let name = name.strip_prefix("https://").or_else(|| name.strip_prefix("http://")).unwrap_or(&name).to_string();
    let name = match name.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".to_string(),
        _ => name,
    };
    let valid = !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        && !name.starts_with(['.', '-', ':']);
    if !valid {
        return Err(EngineError::invalid(format!("invalid registry name {registry:?}: use host or host:port")));
    }
    Ok(name)
}

impl RegistrySettings {
    pub fn new(images_root: &Path) -> Self {
        RegistrySettings {
            file: images_root.join("registries.json"),
            key_file: images_root.join("registries.key"),
            lock: Default::default(),
        }
    }

    fn read(&self) -> Result<BTreeMap<String, StoredRegistry>> {
        match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| EngineError::internal("the registry settings file is damaged", e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(EngineError::internal("cannot read the registry settings", e)),
        }
    }

    fn write(&self, all: &BTreeMap<String, StoredRegistry>) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(all).map_err(|e| EngineError::internal("cannot encode registry settings", e))?;
        write_private(&self.file, &bytes).map_err(|e| EngineError::internal("cannot save the registry settings", e))
    }

    fn cipher(&self, create: bool) -> Result<Option<ChaCha20Poly1305>> {
        let key = match std::fs::read(&self.key_file) {
            Ok(key) if key.len() == 32 => key,
            Ok(_) => {
                return Err(EngineError::internal(
                    "the registry key file is damaged",
                    std::io::Error::other("wrong length"),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let key: [u8; 32] = rand::random();
                write_private(&self.key_file, &key)
                    .map_err(|e| EngineError::internal("cannot create the registry key", e))?;
                key.to_vec()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(EngineError::internal("cannot read the registry key", e)),
        };
        Ok(Some(ChaCha20Poly1305::new(Key::from_slice(&key))))
    }

    pub fn set(&self, registry: &str, config: RegistryConfig) -> Result<()> {
        let name = normalize_registry(registry)?;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = self.read()?;
        let mut stored = StoredRegistry { insecure: config.insecure, ..Default::default() };
        if let Some(creds) = config.credentials {
            if creds.username.is_empty() || creds.secret.is_empty() {
                return Err(EngineError::invalid("registry credentials need a user name and a secret"));
            }
            let cipher = self.cipher(true)?.expect("created on demand");
            let nonce: [u8; NONCE_LEN] = rand::random();
            let sealed = cipher
                .encrypt(Nonce::from_slice(&nonce), Payload { msg: creds.secret.as_bytes(), aad: name.as_bytes() })
                .map_err(|_| EngineError::internal("cannot seal the secret", std::io::Error::other("aead")))?;
            let mut blob = nonce.to_vec();
            blob.extend_from_slice(&sealed);
            stored.username = Some(creds.username);
            stored.sealed_secret = Some(base64::engine::general_purpose::STANDARD.encode(blob));
        }
        all.insert(name, stored);
        self.write(&all)
    }

    pub fn remove(&self, registry: &str) -> Result<()> {
        let name = normalize_registry(registry)?;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = self.read()?;
        if all.remove(&name).is_none() {
            return Err(EngineError::not_found(format!("registry {name} is not configured")));
        }
        self.write(&all)
    }

    pub fn list(&self) -> Result<Vec<RegistrySummary>> {
        Ok(self
            .read()?
            .into_iter()
            .map(|(registry, s)| RegistrySummary { registry, insecure: s.insecure, username: s.username })
            .collect())
    }

    /// The settings for `registry`, with its secret unsealed (defaults when not configured).
    pub fn access(&self, registry: &str) -> Result<RegistryAccess> {
        let name = normalize_registry(registry)?;
        let Some(stored) = self.read()?.remove(&name) else {
            return Ok(RegistryAccess::default());
        };
        let credentials = match (stored.username, stored.sealed_secret) {
            (Some(username), Some(sealed)) => {
                let unreadable = || {
                    EngineError::internal(
                        format!("the stored credentials for {name} cannot be read: configure them again"),
                        std::io::Error::other("unseal failed"),
                    )
                };
                let blob = base64::engine::general_purpose::STANDARD.decode(sealed).map_err(|_| unreadable())?;
                if blob.len() <= NONCE_LEN {
                    return Err(unreadable());
                }
                let cipher = self.cipher(false)?.ok_or_else(unreadable)?;
                let (nonce, sealed) = blob.split_at(NONCE_LEN);
                let secret = cipher
                    .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: name.as_bytes() })
                    .map_err(|_| unreadable())?;
                Some(RegistryCredentials { username, secret: String::from_utf8(secret).map_err(|_| unreadable())? })
            }
            _ => None,
        };
        Ok(RegistryAccess { insecure: stored.insecure, credentials })
    }
}

/// Writes a file only root can read, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_are_sealed_on_disk_and_bound_to_their_registry() {
        let tmp = tempfile::tempdir().unwrap();
        let settings = RegistrySettings::new(tmp.path());
        let creds = RegistryCredentials { username: "ci".into(), secret: "s3cret-token".into() };
        settings
            .set("Registry-1.Docker.io", RegistryConfig { insecure: false, credentials: Some(creds.clone()) })
            .unwrap();
        settings.set("127.0.0.1:5000", RegistryConfig { insecure: true, credentials: None }).unwrap();

        let on_disk = std::fs::read_to_string(tmp.path().join("registries.json")).unwrap();
        assert!(!on_disk.contains("s3cret-token"), "{on_disk}");
        for file in ["registries.json", "registries.key"] {
            let mode = std::fs::metadata(tmp.path().join(file)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        assert_eq!(settings.access("docker.io").unwrap().credentials, Some(creds));
        assert!(settings.access("127.0.0.1:5000").unwrap().insecure);
        assert!(!settings.access("ghcr.io").unwrap().insecure);
        let listed = format!("{:?}", settings.list().unwrap());
        assert!(listed.contains("docker.io") && listed.contains("ci") && !listed.contains("s3cret"), "{listed}");

        // A sealed secret moved to another registry's entry does not open.
        let mut all: serde_json::Value = serde_json::from_str(&on_disk).unwrap();
        all["127.0.0.1:5000"] = all["docker.io"].clone();
        std::fs::write(tmp.path().join("registries.json"), all.to_string()).unwrap();
        let err = settings.access("127.0.0.1:5000").unwrap_err();
        assert!(!err.detail().contains("s3cret"), "{}", err.detail());

        settings.remove("docker.io").unwrap();
        assert_eq!(settings.remove("docker.io").unwrap_err().kind(), crate::api::ErrorKind::NotFound);
        assert!(normalize_registry("bad host").is_err());
    }
}
