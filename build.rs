//! Records the git commit the binary is built from, for error reports' release
//! (`aide@{version}+{commit}`). AIDE_GIT_COMMIT, when set at build time, wins (a build from a
//! source archive has no .git); otherwise `git rev-parse`, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=AIDE_GIT_COMMIT");
    let commit = std::env::var("AIDE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
                .filter(|c| !c.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=AIDE_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD itself names the branch, the branch's file its commit.
    if let Ok(git_dir) = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
        && git_dir.status.success()
    {
        let dir = String::from_utf8_lossy(&git_dir.stdout).trim().to_string();
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Ok(head) = std::fs::read_to_string(format!("{dir}/HEAD"))
            && let Some(reference) = head.strip_prefix("ref: ")
        {
            println!("cargo:rerun-if-changed={dir}/{}", reference.trim());
        }
        if std::path::Path::new(&format!("{dir}/packed-refs")).exists() {
            println!("cargo:rerun-if-changed={dir}/packed-refs");
        }
    }
}
