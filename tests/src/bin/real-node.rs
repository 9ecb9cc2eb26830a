//! Starts the real node of the end-to-end tests for trying things by hand
//! (`scripts/real-node.sh` builds what it needs and runs this): the same
//! namespace, control plane, kubelet and containerd as
//! `tests/tests/real_node.rs`, with the images in `SHOAL_IMAGES` imported.
//! On a terminal it opens a shell inside the node's network namespace with
//! `KUBECONFIG` set and kubectl on `PATH`; leaving the shell (or Ctrl-C
//! without a terminal) tears the node down and puts the machine back.
//! `real-node --clean` only cleans up after nodes whose process was killed.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use shoal_tests::node::{NODE_IP, Netns, Node};

fn images() -> Vec<PathBuf> {
    let Some(dir) = std::env::var_os("SHOAL_IMAGES").map(PathBuf::from) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "tar"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn shell(node: &Node, netns: &str) {
    let kubectl = std::env::var("SHOAL_KUBECTL").unwrap_or_default();
    let tools = Path::new(&kubectl)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let path = format!("{tools}:{}", std::env::var("PATH").unwrap_or_default());
    let status = Command::new("bash")
        .arg("--norc")
        .arg("-i")
        .env("KUBECONFIG", node.plane().kubeconfig())
        .env("PATH", path)
        .env("PS1", format!("({netns}) \\w$ "))
        .status();
    if let Err(e) = status {
        eprintln!("cannot start a shell: {e}");
    }
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--clean") {
        let problems = shoal_tests::node::clean_stale();
        shoal_tests::node::netns::remove_stale();
        for problem in &problems {
            eprintln!("{problem}");
        }
        return if problems.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let images = images();
    if images.is_empty() {
        eprintln!("no image archives in SHOAL_IMAGES: run scripts/real-node.sh, which builds them");
        return ExitCode::from(2);
    }
    let netns = Netns::create();
    let name = netns.name().to_owned();
    let problems = netns.run(move || {
        let node = Node::start(&images);
        println!(
            "node up: API server https://{NODE_IP}:6443, kubeconfig {}\n\
             network namespace {name}: nsenter --net=/run/netns/{name} <command>\n\
             logs and configuration in {}",
            node.plane().kubeconfig().display(),
            node.dir().display()
        );
        if std::io::stdin().is_terminal() {
            println!("a shell inside the node's namespace; exit it to tear the node down");
            shell(&node, &name);
        } else {
            println!("Ctrl-C tears the node down");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                let _ = runtime.block_on(tokio::signal::ctrl_c());
            }
        }
        node.stop()
    });
    drop(netns);
    for problem in &problems {
        eprintln!("teardown: {problem}");
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
