//! Build facts for `bridgehead version`: the commit (from git, or `BRIDGEHEAD_COMMIT` when
//! building outside a checkout), the target and the compiler. Nothing here runs at run time.

use std::process::Command;

fn main() {
    let commit = std::env::var("BRIDGEHEAD_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        let out = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    let commit = match commit {
        Some(c) if dirty => format!("{c}-dirty"),
        Some(c) => c,
        None => "unknown".into(),
    };
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("cargo:rustc-env=BRIDGEHEAD_COMMIT={commit}");
    println!("cargo:rustc-env=BRIDGEHEAD_TARGET={}", std::env::var("TARGET").unwrap_or_default());
    println!("cargo:rustc-env=BRIDGEHEAD_PROFILE={}", std::env::var("PROFILE").unwrap_or_default());
    println!("cargo:rustc-env=BRIDGEHEAD_RUSTC={rustc}");
    println!("cargo:rerun-if-env-changed=BRIDGEHEAD_COMMIT");
    // The commit changes with HEAD and the index; a missing .git (a source tarball) is fine.
    for f in ["../../.git/HEAD", "../../.git/index"] {
        if std::path::Path::new(f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
}
