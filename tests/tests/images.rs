//! The images `scripts/build-images.sh` writes (what the real node runs)
//! and the Dockerfiles users build describe the same image: the final
//! stage's binary at the same path, entrypoint, command, user, environment
//! and ports; and the archive holds what a distroless base would (the
//! libraries the binary loads, CA certificates, the `nonroot` user, /tmp).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use shoal_tests::node::{PAUSE_IMAGE, image_archive, images_dir};

/// Environment the Dockerfiles' base image (distroless cc) sets.
const BASE_ENV: [&str; 2] = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
];

/// The final stage of a Dockerfile, as the image it describes.
#[derive(Debug, Default)]
struct Stage {
    base: String,
    copies: Vec<(String, String)>,
    user: String,
    env: Vec<String>,
    expose: Vec<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
}

fn dockerfile(name: &str) -> Stage {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut stage = Stage::default();
    for line in text.lines().map(str::trim) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        match word {
            "FROM" => {
                stage = Stage {
                    base: rest.to_owned(),
                    ..Stage::default()
                }
            }
            "COPY" => {
                let parts: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|p| !p.starts_with("--"))
                    .collect();
                stage
                    .copies
                    .push((parts[0].to_owned(), parts[1].to_owned()));
            }
            "USER" => stage.user = rest.to_owned(),
            "ENV" => stage.env.push(rest.to_owned()),
            "EXPOSE" => stage.expose.push(format!("{rest}/tcp")),
            "ENTRYPOINT" => stage.entrypoint = Some(serde_json::from_str(rest).unwrap()),
            "CMD" => stage.cmd = Some(serde_json::from_str(rest).unwrap()),
            _ => {}
        }
    }
    stage
}

/// An image archive unpacked: its config and its one layer's files.
struct Image {
    config: Value,
    root: tempfile::TempDir,
}

fn tar(args: &[&str], dir: &Path) {
    let out = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unpack(archive: &Path) -> Image {
    let layout = tempfile::tempdir().unwrap();
    tar(&["xf", &archive.to_string_lossy()], layout.path());
    let read = |digest: &str| -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").unwrap();
        std::fs::read(layout.path().join("blobs/sha256").join(hex)).unwrap()
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).unwrap()).unwrap();
    let manifest: Value =
        serde_json::from_slice(&read(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let config: Value =
        serde_json::from_slice(&read(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let root = tempfile::tempdir().unwrap();
    let digest = layers[0]["digest"].as_str().unwrap();
    let blob = layout
        .path()
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    tar(&["xzf", &blob.to_string_lossy()], root.path());
    Image { config, root }
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|a| {
        a.iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect()
    })
}

/// `cargo_profile`: the Cargo profile the Dockerfile builds `binary` with
/// (the operator has its own: see the workspace's Cargo.toml).
fn same_image(dockerfile_name: &str, archive: &str, binary: &str, cargo_profile: &str) {
    let stage = dockerfile(dockerfile_name);
    assert!(
        stage.base.starts_with("gcr.io/distroless/cc-debian12"),
        "{dockerfile_name}: the archive stands for a distroless cc base, not {}",
        stage.base
    );
    let image = unpack(&image_archive(archive));
    let config = &image.config["config"];
    assert_eq!(
        config["User"],
        stage.user.as_str(),
        "{dockerfile_name}: USER"
    );
    assert_eq!(
        strings(&config["Entrypoint"]),
        stage.entrypoint,
        "{dockerfile_name}: ENTRYPOINT"
    );
    assert_eq!(strings(&config["Cmd"]), stage.cmd, "{dockerfile_name}: CMD");
    let mut want_env: Vec<String> = BASE_ENV.iter().map(|s| (*s).to_owned()).collect();
    want_env.extend(stage.env.iter().cloned());
    assert_eq!(
        strings(&config["Env"]),
        Some(want_env),
        "{dockerfile_name}: ENV"
    );
    let ports: Vec<String> = config["ExposedPorts"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(ports, stage.expose, "{dockerfile_name}: EXPOSE");

    // The binary: where COPY puts it, the build of `cargo_profile` in the
    // Dockerfile; in the archive, the build scripts/build-images.sh made
    // (that profile, or dev or test for the tests: see its header), debug
    // info stripped as the Dockerfile does, and runnable by its loader.
    let (source, dest) = &stage.copies[0];
    assert!(
        source.ends_with(&format!("/target/{cargo_profile}/{binary}")),
        "{dockerfile_name}: COPY --from the {cargo_profile} build, not {source}"
    );
    let inside = image.root.path().join(dest.trim_start_matches('/'));
    let images = images_dir();
    let profile = std::fs::read_to_string(images.join("profile")).unwrap();
    assert!(
        ["release", "dev", "test"].contains(&profile.trim()),
        "profile {profile:?}"
    );
    let built = images.join("bin").join(binary);
    let unstripped = std::fs::read(&built).unwrap();
    let stripped = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(stripped.path())
        .arg(&built)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stripped = std::fs::read(stripped.path()).unwrap();
    let held = std::fs::read(&inside).unwrap();
    assert!(
        held == stripped,
        "{dest} is the {} {binary}, stripped",
        profile.trim()
    );
    assert!(
        held.len() < unstripped.len(),
        "{dest}: stripping took debug info out"
    );
    let ldd = Command::new("ldd").arg(&inside).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split("=>")
            .last()
            .unwrap_or_default()
            .split('(')
            .next()
            .unwrap_or_default()
            .trim();
        if path.starts_with('/') {
            assert!(
                image
                    .root
                    .path()
                    .join(path.trim_start_matches('/'))
                    .is_file(),
                "{archive} lacks {path}, which {binary} loads"
            );
        }
    }

    // What distroless's nonroot variant has.
    let passwd = std::fs::read_to_string(image.root.path().join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    assert!(
        image
            .root
            .path()
            .join("etc/ssl/certs/ca-certificates.crt")
            .is_file()
    );
    let tmp = std::fs::metadata(image.root.path().join("tmp")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        tmp.permissions().mode() & 0o7777,
        0o1777,
        "/tmp is world-writable, sticky"
    );
}

#[test]
fn the_worker_image_is_what_deploy_dockerfile_describes() {
    same_image("Dockerfile", "shoal-thumbnail", "thumbnail", "release");
}

#[test]
fn the_operator_image_is_what_deploy_operator_dockerfile_describes() {
    same_image(
        "operator.Dockerfile",
        "shoal-operator",
        "shoal-operator",
        "operator",
    );
}

#[test]
fn the_host_image_is_what_deploy_host_dockerfile_describes() {
    same_image("host.Dockerfile", "shoal-host", "shoal-host", "release");
}

/// The Python Lambda function's image holds `examples/python-lambda/app.py`
/// byte for byte where Lambda's images keep a function (`/var/task`), and
/// runs it with AWS's runtime interface client by default, as a Lambda
/// user's image does.
#[test]
fn the_python_function_image_holds_the_function_as_deployed() {
    let image = unpack(&image_archive("python-thumbnails"));
    let app = std::fs::read(image.root.path().join("var/task/app.py")).unwrap();
    let source = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-lambda/app.py"),
    )
    .unwrap();
    assert!(
        app == source,
        "app.py in the image differs from the example"
    );
    let config = &image.config["config"];
    let entrypoint = strings(&config["Entrypoint"]).unwrap();
    assert_eq!(entrypoint[1..], ["-m", "awslambdaric"]);
    // The virtualenv at a path no pod mounts over (not the build's, which
    // may be under /tmp).
    assert_eq!(entrypoint[0], "/opt/python-venv/bin/python3");
    assert!(
        image
            .root
            .path()
            .join("opt/python-venv/pyvenv.cfg")
            .is_file(),
        "the image has no virtualenv at /opt/python-venv"
    );
    assert_eq!(
        strings(&config["Cmd"]),
        Some(vec!["app.handler".to_owned()])
    );
    assert!(
        strings(&config["Env"])
            .unwrap()
            .contains(&"LAMBDA_TASK_ROOT=/var/task".to_owned())
    );
    assert_eq!(config["User"], "65532:65532");
}

#[test]
fn image_archives_name_their_images_fully_for_containerd() {
    let mut names = BTreeMap::new();
    for archive in ["pause", "shoal-operator", "shoal-thumbnail", "shoal-host"] {
        let layout = tempfile::tempdir().unwrap();
        tar(
            &["xf", &image_archive(archive).to_string_lossy()],
            layout.path(),
        );
        let index: Value =
            serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).unwrap())
                .unwrap();
        let name = index["manifests"][0]["annotations"]["io.containerd.image.name"]
            .as_str()
            .unwrap()
            .to_owned();
        names.insert(archive, name);
    }
    let tag = env!("CARGO_PKG_VERSION");
    assert_eq!(names["pause"], PAUSE_IMAGE);
    assert_eq!(
        names["shoal-operator"],
        format!("docker.io/library/shoal-operator:{tag}")
    );
    assert_eq!(
        names["shoal-thumbnail"],
        format!("docker.io/library/shoal-thumbnail:{tag}")
    );
    assert_eq!(
        names["shoal-host"],
        format!("docker.io/library/shoal-host:{tag}")
    );
}
