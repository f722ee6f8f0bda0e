//! Secrets the server may keep itself, in development only.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand::RngCore;
use secrecy::SecretString;

use crate::config::{Config, MIN_JWT_SECRET_BYTES};

const JWT_SECRET_FILE: &str = "jwt_secret";

/// JWT_SECRET when set; otherwise (development only, as configuration enforces) a random secret
/// generated once and kept, readable by its owner alone, in the data folder, so sessions survive
/// restarts.
pub fn jwt_secret(config: &Config) -> Result<SecretString, String> {
    if let Some(secret) = &config.jwt_secret {
        return Ok(secret.clone());
    }
    if config.environment.is_deployed() {
        return Err("JWT_SECRET is required outside development".to_string());
    }
    load_or_create(&config.data_dir.join(JWT_SECRET_FILE))
}

fn load_or_create(path: &Path) -> Result<SecretString, String> {
    match fs::read_to_string(path) {
        Ok(text) if text.trim().len() >= MIN_JWT_SECRET_BYTES => {
            return Ok(SecretString::from(text.trim()));
        }
        Ok(_) => {
            return Err(format!(
                "{} is shorter than {MIN_JWT_SECRET_BYTES} bytes; delete it to have a new one generated",
                path.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("could not read {}: {e}", path.display())),
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("could not create {}: {e}", dir.display()))?;
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("could not create {}: {e}", path.display()))?;
    file.write_all(secret.as_bytes())
        .map_err(|e| format!("could not write {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a development JWT secret");
    Ok(SecretString::from(secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_once_then_reused_and_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested").join(JWT_SECRET_FILE);
        let first = load_or_create(&path).expect("created");
        let second = load_or_create(&path).expect("read back");
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert_eq!(first.expose_secret().len(), 64);
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(JWT_SECRET_FILE);
        fs::write(&path, "short").expect("write");
        let err = load_or_create(&path).expect_err("too short");
        assert!(err.contains("shorter than 32 bytes"), "{err}");
        assert!(!err.contains("short\""), "must not echo the secret: {err}");
    }
}
