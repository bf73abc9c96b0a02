// `sqlx::migrate!` embeds the SQL files at compile time but cannot tell cargo to watch them on
// stable Rust, so a new or changed migration would otherwise leave a stale binary.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
