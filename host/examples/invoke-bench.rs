//! Driver of `bench/host.sh`.
//!
//!     invoke-bench URL PAYLOAD_FILE COUNT WARMUP
//!
//! POSTs the payload COUNT times in a row (after WARMUP untimed ones) over
//! one keep-alive connection to a Lambda Invoke API URL; prints the median,
//! p95 and mean latency. Any answer but a 200 without
//! `X-Amz-Function-Error` stops it with an error.

use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, payload_file, count, warmup] = args.as_slice() else {
        return Err("usage: invoke-bench URL PAYLOAD_FILE COUNT WARMUP".into());
    };
    let payload = std::fs::read(payload_file)?;
    let (count, warmup): (usize, usize) = (count.parse()?, warmup.parse()?);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut samples = Vec::with_capacity(count);
    for n in 0..warmup + count {
        let started = Instant::now();
        let mut response = agent.post(url).send(&payload[..])?;
        let body = response.body_mut().read_to_vec()?;
        let took = started.elapsed();
        if response.status() != 200 || response.headers().contains_key("x-amz-function-error") {
            return Err(format!(
                "invocation {n}: {}: {}",
                response.status(),
                String::from_utf8_lossy(&body)
            )
            .into());
        }
        if n >= warmup {
            samples.push(took);
        }
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let mean = samples.iter().sum::<Duration>() / u32::try_from(samples.len())?;
    println!(
        "invoke n={} median_us={:.1} p95_us={:.1} mean_us={:.1}",
        samples.len(),
        at(0.5).as_secs_f64() * 1e6,
        at(0.95).as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6
    );
    Ok(())
}
