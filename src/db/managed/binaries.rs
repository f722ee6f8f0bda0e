//! Finding the PostgreSQL server binaries installed on the machine.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The oldest major version the managed cluster runs on.
pub const MIN_MAJOR: u32 = 14;

/// A folder holding `postgres` and `initdb`, and their major version.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub bindir: PathBuf,
    pub major: u32,
}

impl PgBinaries {
    pub fn postgres(&self) -> PathBuf {
        self.bindir.join("postgres")
    }

    pub fn initdb(&self) -> PathBuf {
        self.bindir.join("initdb")
    }

    /// Looks, in order, in `explicit` (PG_BINDIR), in `pg_config --bindir`, and in the Debian
    /// layout `/usr/lib/postgresql/<major>/bin` (newest first). The first folder with a usable
    /// server of version 14 or newer wins.
    pub fn locate(explicit: Option<&Path>) -> Result<Self, String> {
        if let Some(dir) = explicit {
            return Self::probe(dir).map_err(|why| {
                format!(
                    "PG_BINDIR is {}, but {why}. Point it at the folder that holds `postgres` and `initdb`",
                    dir.display()
                )
            });
        }

        let mut candidates = Vec::new();
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
            && out.status.success()
        {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !dir.is_empty() {
                candidates.push(PathBuf::from(dir));
            }
        }
        candidates.extend(debian_bindirs(Path::new("/usr/lib/postgresql")));

        let mut seen = Vec::new();
        for dir in candidates {
            match Self::probe(&dir) {
                Ok(found) => return Ok(found),
                Err(why) => seen.push(format!("{}: {why}", dir.display())),
            }
        }
        let detail = if seen.is_empty() {
            String::new()
        } else {
            format!(" (looked at {})", seen.join("; "))
        };
        Err(format!(
            "the PostgreSQL server binaries ({MIN_MAJOR} or newer) were not found{detail}. \
             Install them (Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install postgresql-server`; \
             macOS: `brew install postgresql@16`), or set PG_BINDIR to the folder that holds `postgres` and `initdb`, \
             or set DATABASE_URL to use a PostgreSQL server you run yourself"
        ))
    }

    fn probe(dir: &Path) -> Result<Self, String> {
        for tool in ["postgres", "initdb"] {
            if !dir.join(tool).is_file() {
                return Err(format!("it has no `{tool}`"));
            }
        }
        let out = Command::new(dir.join("postgres"))
            .arg("--version")
            .output()
            .map_err(|e| format!("`postgres --version` could not run: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let major = parse_major(&text)
            .ok_or_else(|| format!("`postgres --version` printed {:?}", text.trim()))?;
        if major < MIN_MAJOR {
            return Err(format!(
                "it holds PostgreSQL {major}, older than {MIN_MAJOR}"
            ));
        }
        Ok(PgBinaries {
            bindir: dir.to_path_buf(),
            major,
        })
    }
}

/// `/usr/lib/postgresql/<major>/bin` folders, newest major first.
fn debian_bindirs(root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    found.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    found.into_iter().map(|(_, dir)| dir).collect()
}

/// The major version in `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
fn parse_major(version_output: &str) -> Option<u32> {
    let rest = version_output.split(")").nth(1)?.trim();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_major("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_major("postgres (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(parse_major("postgres (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("something else"), None);
    }

    #[test]
    fn explicit_folder_without_binaries_names_the_variable_and_the_fix() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = PgBinaries::locate(Some(dir.path())).expect_err("empty folder");
        assert!(err.contains("PG_BINDIR"), "{err}");
        assert!(err.contains("has no `postgres`"), "{err}");
    }

    #[test]
    fn debian_layout_is_searched_newest_first() {
        let root = tempfile::tempdir().expect("temp dir");
        for major in ["14", "16", "15", "notaversion"] {
            std::fs::create_dir_all(root.path().join(major).join("bin")).expect("mkdir");
        }
        let dirs = debian_bindirs(root.path());
        let majors: Vec<String> = dirs
            .iter()
            .map(|d| {
                d.parent()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(majors, ["16", "15", "14"]);
    }
}
