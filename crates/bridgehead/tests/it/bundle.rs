//! `bridgehead bundle`: the kit collects every file the config names (relative, absolute and
//! `${file:…}` references) and rewrites the config to them; `sha256sum -c` and `bundle verify`
//! accept it and refuse it once changed; skopeo and umoci (Debian) read the image; and the
//! kit, copied alone into an empty directory with the original files gone, serves its config.
//!
//! The image checks skip only with BRIDGEHEAD_SKIP_IMAGE_TOOLS=1 (scripts/test installs skopeo
//! and umoci).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::*;

/// The binary the kit ships: the static build when scripts/test made one (what a user ships),
/// else the test build.
fn shipped_binary() -> String {
    std::env::var("BRIDGEHEAD_STATIC_BINARY").unwrap_or_else(|_| BIN.to_owned())
}

/// A project whose config names files in every way: beside it, by absolute path elsewhere,
/// and through `${file:…}`.
fn project(upstream: &str) -> (tempfile::TempDir, tempfile::TempDir) {
    let project = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let p = project.path();
    std::fs::create_dir_all(p.join("schemas")).unwrap();
    std::fs::write(p.join("schemas/order.json"), r#"{"type":"object","required":["id"]}"#).unwrap();
    std::fs::write(p.join("admin-token"), "kit-admin-token-0123456789\n").unwrap();
    let idp = bridgehead_auth::jwt::keygen::generate(bridgehead_auth::jwt::Algorithm::ES256).unwrap();
    std::fs::write(elsewhere.path().join("idp public.pem"), &idp.public_pem).unwrap();
    // Protos: one beside the config importing one from an include directory elsewhere, which
    // imports a file beside it there (neither import is named by the config).
    std::fs::create_dir_all(p.join("protos")).unwrap();
    std::fs::create_dir_all(elsewhere.path().join("third_party/common")).unwrap();
    std::fs::write(
        p.join("protos/drone.proto"),
        "syntax = \"proto3\";\npackage drone.v1;\nimport \"common/types.proto\";\nservice Telemetry { rpc Get(common.Id) returns (common.Status); }\n",
    )
    .unwrap();
    std::fs::write(
        elsewhere.path().join("third_party/common/types.proto"),
        "syntax = \"proto3\";\npackage common;\nimport public \"common/status.proto\";\nmessage Id { string id = 1; }\n",
    )
    .unwrap();
    std::fs::write(
        elsewhere.path().join("third_party/common/status.proto"),
        "syntax = \"proto3\";\npackage common;\nmessage Status { string mode = 1; }\n",
    )
    .unwrap();
    // A WSDL elsewhere that imports a schema, which includes another.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../soap/tests/fixtures/imported");
    std::fs::create_dir_all(elsewhere.path().join("wsdl")).unwrap();
    for f in ["service.wsdl", "types.xsd", "common.xsd"] {
        std::fs::copy(fixtures.join(f), elsewhere.path().join("wsdl").join(f)).unwrap();
    }
    let config = format!(
        r#"# The kit's config: comments and layout survive the rewrite.
server:
  listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
  token: ${{file:admin-token}}
state:
  url: sqlite://kit-state.db
authenticators:
  idp:
    jwt: {{ public_key_file: "{}", issuer: https://idp.test, audiences: [kit] }}
upstreams:
  api:
    targets: [{{ url: "{upstream}" }}]
  drones:
    targets: [{{ url: "http://127.0.0.1:9" }}]
    protocol: h2c
grpc:
  services:
    telemetry:
      upstream: drones
      descriptors: {{ protos: [protos/drone.proto], include: ["{third_party}"] }}
soap:
  services:
    catalog: {{ upstream: api, wsdl: "{wsdl}" }}
routes:
  - {{ name: api, match: {{ path_prefix: /api }}, upstream: api }}
webhooks:
  event_types:
    order.created: {{ schema: schemas/order.json }}
"#,
        elsewhere.path().join("idp public.pem").display(),
        third_party = elsewhere.path().join("third_party").display(),
        wsdl = elsewhere.path().join("wsdl/service.wsdl").display(),
    );
    std::fs::write(p.join("bridgehead.yaml"), config).unwrap();
    (project, elsewhere)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kit_holds_every_file_verifies_loads_as_an_image_and_serves_alone() {
    let mock = bridgehead_mock::MockServer::start(bridgehead_mock::MockOptions::default()).await.unwrap();
    let (project, elsewhere) = project(&mock.url());
    let out = tempfile::tempdir().unwrap();
    let kit = out.path().join("kit");
    let binary = shipped_binary();
    let (ok, text) = run(Command::new(BIN)
        .args(["bundle", "-c"])
        .arg(project.path().join("bridgehead.yaml"))
        .arg("--out")
        .arg(&kit)
        .args(["--binary", &binary]));
    assert!(ok, "{text}");

    // The layout, and the config rewritten to the copies (comments kept).
    for f in [
        "bridgehead",
        "bridgehead.service",
        "bridgehead.1",
        "completions/bridgehead.bash",
        "completions/_bridgehead",
        "completions/bridgehead.fish",
        "image.tar",
        "SHA256SUMS",
    ] {
        assert!(kit.join(f).is_file(), "{f} missing: {text}");
    }
    assert_eq!(std::fs::read(kit.join("bridgehead")).unwrap(), std::fs::read(&binary).unwrap());
    let config = std::fs::read_to_string(kit.join("config/bridgehead.yaml")).unwrap();
    assert!(config.starts_with("# The kit's config"), "{config}");
    assert!(config.contains(r#"token: "${file:files/03-admin-token}""#), "{config}");
    assert!(config.contains(r#"public_key_file: "files/01-idp_public.pem""#), "{config}");
    assert!(config.contains(r#"schema: "files/02-order.json""#), "{config}");
    assert!(!config.contains(&elsewhere.path().display().to_string()), "{config}");
    assert_eq!(
        std::fs::read_to_string(kit.join("config/files/02-order.json")).unwrap(),
        r#"{"type":"object","required":["id"]}"#
    );
    // Protos where the compiler finds them: the include directory holds the files used from it,
    // the proto beside the config keeps its path.
    assert!(config.contains(r#"include: ["files/04-third_party"]"#), "{config}");
    assert!(config.contains("protos: [protos/drone.proto]"), "{config}");
    for f in [
        "protos/drone.proto",
        "files/04-third_party/common/types.proto",
        "files/04-third_party/common/status.proto",
    ] {
        assert!(kit.join("config").join(f).is_file(), "{f}");
    }
    // The WSDL with the schemas it imports, in their places.
    assert!(config.contains(r#"wsdl: "files/05-wsdl/service.wsdl""#), "{config}");
    for f in ["service.wsdl", "types.xsd", "common.xsd"] {
        assert!(kit.join("config/files/05-wsdl").join(f).is_file(), "{f}");
    }
    // Secrets are the owner's only: the kit, its files and the image (which holds them too).
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&kit), 0o700);
    assert_eq!(mode(&kit.join("config/files/03-admin-token")), 0o600);
    assert_eq!(mode(&kit.join("image.tar")), 0o600);
    assert_eq!(mode(&kit.join("config/bridgehead.yaml")), 0o600);
    let (ok, text) = run(Command::new("sha256sum").args(["-c", "--quiet", "SHA256SUMS"]).current_dir(&kit));
    assert!(ok, "{text}");

    // The image, read by independent tools.
    if std::env::var("BRIDGEHEAD_SKIP_IMAGE_TOOLS").as_deref() == Ok("1") {
        eprintln!("image checks skipped: BRIDGEHEAD_SKIP_IMAGE_TOOLS=1");
    } else {
        let archive = format!("docker-archive:{}", kit.join("image.tar").display());
        let (ok, text) = run(Command::new("skopeo").args(["inspect", "--config", &archive]));
        assert!(ok, "skopeo (scripts/test installs it; BRIDGEHEAD_SKIP_IMAGE_TOOLS=1 skips): {text}");
        let image: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(image["config"]["User"], "65532:65532");
        assert_eq!(image["config"]["Entrypoint"], serde_json::json!(["/bridgehead"]));
        assert_eq!(
            image["config"]["Cmd"],
            serde_json::json!(["serve", "-c", "/etc/bridgehead/bridgehead.yaml"])
        );
        assert_eq!(image["os"], "linux");
        let (ok, text) = run(Command::new("skopeo").args(["list-tags", &archive]));
        assert!(ok, "{text}");
        let tags = serde_json::from_str::<serde_json::Value>(&text).unwrap();
        assert_eq!(
            tags["Tags"],
            serde_json::json!([format!("bridgehead:{}", env!("CARGO_PKG_VERSION"))]),
            "{text}"
        );
        let oci = out.path().join("oci");
        let (ok, text) = run(Command::new("skopeo")
            .args(["copy", "-q", &archive])
            .arg(format!("oci:{}:bridgehead", oci.display())));
        assert!(ok, "{text}");
        let unpacked = out.path().join("unpacked");
        let (ok, text) = run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:bridgehead", oci.display()))
            .arg(&unpacked));
        assert!(ok, "umoci: {text}");
        let rootfs = unpacked.join("rootfs");
        assert_eq!(std::fs::read(rootfs.join("bridgehead")).unwrap(), std::fs::read(&binary).unwrap());
        assert_eq!(std::fs::read_to_string(rootfs.join("etc/bridgehead/bridgehead.yaml")).unwrap(), config);
        assert!(rootfs.join("etc/bridgehead/files/01-idp_public.pem").is_file());
        assert!(std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap().contains(":65532:65532:"));
        let runtime: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(unpacked.join("config.json")).unwrap()).unwrap();
        assert_eq!(runtime["process"]["user"]["uid"], 65532);
        assert_eq!(runtime["process"]["cwd"], "/var/lib/bridgehead");
    }

    // The far side: the kit alone, the project and the absolute path gone.
    drop(project);
    drop(elsewhere);
    let far = tempfile::tempdir().unwrap();
    let (ok, text) = run(Command::new("cp").arg("-a").arg(&kit).arg(far.path()));
    assert!(ok, "{text}");
    drop(out);
    let kit = far.path().join("kit");
    let (ok, text) = run(Command::new(BIN).args(["bundle", "verify"]).arg(&kit));
    assert!(ok, "{text}");
    assert!(text.contains("ok   17 files match SHA256SUMS") && text.contains("digests match"), "{text}");
    let mut child = Killed(
        Command::new(kit.join("bridgehead"))
            .args(["serve", "--no-watch", "-c", "config/bridgehead.yaml"])
            .current_dir(&kit)
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = std::io::BufRead::lines(std::io::BufReader::new(child.0.stderr.take().unwrap()));
    let listening = wait_log(&mut stderr, "listening");
    let data = listening["fields"]["data"].as_str().unwrap().to_owned();
    let admin = listening["fields"]["admin"].as_str().unwrap().to_owned();
    assert_eq!(get(&format!("http://{data}/api/orders")).await.status, 200);
    let metrics = send(
        &client(),
        http::Request::get(format!("http://{admin}/metrics"))
            .header("authorization", "Bearer kit-admin-token-0123456789")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(metrics.status, 200);
    drop(child);

    // A changed file and an unlisted one are both refused, each by name.
    std::fs::write(kit.join("config/files/02-order.json"), "{}").unwrap();
    std::fs::write(kit.join("config/files/extra.pem"), "x").unwrap();
    let out = Command::new(BIN).args(["bundle", "verify"]).arg(&kit).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL config/files/02-order.json: changed since the kit was made"), "{text}");
    assert!(text.contains("FAIL config/files/extra.pem: not in SHA256SUMS"), "{text}");
    // A changed binary is not run.
    std::fs::write(kit.join("bridgehead"), "#!/bin/sh\necho pwned\n").unwrap();
    let out = Command::new(BIN).args(["bundle", "verify"]).arg(&kit).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL bridgehead: changed since the kit was made"), "{text}");
    assert!(text.contains("FAIL bridgehead not run") && !text.contains("pwned"), "{text}");
}

#[test]
fn bundle_refusals_name_the_problem() {
    let (project, elsewhere) = project("http://127.0.0.1:9");
    let cfg = project.path().join("bridgehead.yaml");
    // A non-empty output directory.
    let (code, _, err) =
        bridgehead(&["bundle", "-c", cfg.to_str().unwrap(), "--out", project.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("exists and is not empty"), "{err}");
    // A file the config names that is not there.
    std::fs::remove_file(project.path().join("schemas/order.json")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let kit = out.path().join("kit");
    let (code, _, err) = bridgehead(&["bundle", "-c", cfg.to_str().unwrap(), "--out", kit.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("webhooks.event_types.order.created.schema"), "{err}");
    // A WSDL importing a schema by absolute path is found out in the kit, and the failed run
    // leaves nothing behind: neither beside a new directory nor in an existing empty one.
    std::fs::write(project.path().join("schemas/order.json"), "{}").unwrap();
    let wsdl = elsewhere.path().join("wsdl/service.wsdl");
    let types = elsewhere.path().join("wsdl/types.xsd");
    let text = std::fs::read_to_string(&wsdl).unwrap();
    std::fs::write(
        &wsdl,
        text.replace("schemaLocation=\"types.xsd\"", &format!("schemaLocation=\"{}\"", types.display())),
    )
    .unwrap();
    for existing in [false, true] {
        if existing {
            std::fs::create_dir(&kit).unwrap();
        }
        let (code, _, err) =
            bridgehead(&["bundle", "-c", cfg.to_str().unwrap(), "--out", kit.to_str().unwrap()]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("soap.services.catalog.wsdl") && err.contains("absolute path"), "{err}");
        let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        if existing {
            assert_eq!(left, vec![std::ffi::OsString::from("kit")]);
            assert_eq!(std::fs::read_dir(&kit).unwrap().count(), 0);
        } else {
            assert!(left.is_empty(), "{left:?}");
        }
    }
    // No kit at all.
    let (code, out, _) = bridgehead(&["bundle", "verify", Path::new("/nonexistent-kit").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("FAIL SHA256SUMS"), "{out}");
}
