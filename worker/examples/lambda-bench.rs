//! Driver of `bench/lambda.sh`.
//!
//!     lambda-bench invoke URL PAYLOAD_FILE COUNT WARMUP
//!         POSTs the payload COUNT times in a row (after WARMUP untimed
//!         ones) over one keep-alive connection to an emulator's invoke
//!         URL; prints per-invocation latency.
//!     lambda-bench cold BOOTSTRAP COUNT
//!         COUNT times: starts BOOTSTRAP with AWS_LAMBDA_RUNTIME_API
//!         pointing at a listener of its own and times process start to
//!         the first `GET .../invocation/next` request; prints the times.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{label} n={} median_us={:.1} p95_us={:.1} mean_us={:.1}",
        samples.len(),
        at(0.5).as_secs_f64() * 1e6,
        at(0.95).as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6
    );
}

async fn invoke(
    url: &str,
    payload_file: &str,
    count: usize,
    warmup: usize,
) -> Result<(), BoxError> {
    let payload = Bytes::from(std::fs::read(payload_file)?);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let uri: http::Uri = url.parse()?;
    let mut samples = Vec::with_capacity(count);
    for n in 0..warmup + count {
        let request = http::Request::post(uri.clone()).body(Full::new(payload.clone()))?;
        let started = Instant::now();
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let took = started.elapsed();
        if !status.is_success() || body.windows(5).any(|w| w == b"error") {
            return Err(format!(
                "invocation {n}: {status}: {}",
                String::from_utf8_lossy(&body)
            )
            .into());
        }
        if n >= warmup {
            samples.push(took);
        }
    }
    summary("invoke", samples);
    Ok(())
}

fn cold(bootstrap: &str, count: usize) -> Result<(), BoxError> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let api = listener.local_addr()?;
        let started = Instant::now();
        let mut child = Command::new(bootstrap)
            .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let (mut stream, _) = listener.accept()?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let took = started.elapsed();
        child.kill()?;
        child.wait()?;
        let line = String::from_utf8_lossy(&head);
        if !line.starts_with("GET /2018-06-01/runtime/invocation/next") {
            return Err(format!("first request was not `next`: {line}").into());
        }
        samples.push(took);
    }
    summary("cold", samples);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize| -> Result<usize, BoxError> {
        Ok(args.get(i).ok_or("missing argument")?.parse()?)
    };
    match args.get(1).map(String::as_str) {
        Some("invoke") if args.len() == 6 => {
            invoke(&args[2], &args[3], number(4)?, number(5)?).await
        }
        Some("cold") if args.len() == 4 => cold(&args[2], number(3)?),
        _ => Err(
            "usage: lambda-bench invoke URL PAYLOAD_FILE COUNT WARMUP | cold BOOTSTRAP COUNT"
                .into(),
        ),
    }
}
