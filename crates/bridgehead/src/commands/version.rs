//! `bridgehead version`: what this binary is: its version, the commit it was built from, how it
//! was built (target, profile, static or not, compiler) and the features compiled in.

use std::process::ExitCode;

/// The build facts.
#[derive(serde::Serialize)]
pub struct Version {
    pub version: &'static str,
    pub commit: &'static str,
    pub target: &'static str,
    pub profile: &'static str,
    /// Linked statically (`+crt-static`): runs on any x86_64 Linux, with no shared libraries.
    pub static_binary: bool,
    pub rustc: &'static str,
    pub allocator: &'static str,
    pub features: Vec<&'static str>,
}

pub fn current() -> Version {
    let mut features = Vec::new();
    if cfg!(feature = "alloc-count") {
        features.push("alloc-count");
    }
    Version {
        version: env!("CARGO_PKG_VERSION"),
        commit: env!("BRIDGEHEAD_COMMIT"),
        target: env!("BRIDGEHEAD_TARGET"),
        profile: env!("BRIDGEHEAD_PROFILE"),
        static_binary: cfg!(target_feature = "crt-static"),
        rustc: env!("BRIDGEHEAD_RUSTC"),
        allocator: if cfg!(feature = "alloc-count") { "system (counting)" } else { "mimalloc" },
        features,
    }
}

pub fn run(output: super::Output) -> anyhow::Result<ExitCode> {
    let v = current();
    match output {
        super::Output::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        super::Output::Text => {
            println!("bridgehead {} ({})", v.version, v.commit);
            println!(
                "target    {}{}",
                v.target,
                if v.static_binary { ", static" } else { ", dynamically linked" }
            );
            println!("profile   {}", v.profile);
            println!("compiler  {}", v.rustc);
            println!("allocator {}", v.allocator);
            println!(
                "features  {}",
                if v.features.is_empty() { "(default)".to_owned() } else { v.features.join(", ") }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
