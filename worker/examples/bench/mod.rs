//! What the queue benchmark drivers (`sqs-bench`, `amqp-bench`) share:
//! running a contender until its queue is drained, its CPU time, and the
//! report (each round, best and median rates, ratios to the last
//! contender).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The `since_start_ms` of a contender's "first receive" log line.
pub fn first_receive_ms(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains("first receive"))?;
    let rest = &line[line.find("since_start_ms")? + "since_start_ms".len()..];
    let number: String = rest
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number.parse().ok()
}

/// User + system CPU seconds of a running process (Linux `/proc`; the
/// clock tick is 100 Hz on every Linux this runs on).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// The queue server's pid, when the script names it (`SERVER_PID`): its
/// CPU time over a run tells what each contender costs the server.
pub fn server_pid() -> Option<u32> {
    std::env::var("SERVER_PID").ok()?.parse().ok()
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `NAME=COMMAND` arguments.
pub fn contenders(args: &[String]) -> Result<Vec<(&str, &str)>, BoxError> {
    Ok(args
        .iter()
        .map(|c| c.split_once('=').ok_or("contender must be NAME=COMMAND"))
        .collect::<Result<_, _>>()?)
}

/// One timed run: the contender started through `sh -c` with `$QUEUE` set,
/// polled with `remaining` every 20 ms until it reports 0.
pub struct Run {
    pub child: Child,
    pub started: Instant,
    pub log_path: std::path::PathBuf,
    pub name: String,
    server_cpu_at_start: Option<f64>,
}

impl Run {
    pub fn start(
        name: &str,
        command: &str,
        queue: &str,
        log_path: std::path::PathBuf,
    ) -> Result<Self, BoxError> {
        let log = std::fs::File::create(&log_path)?;
        let server_cpu_at_start = server_pid().and_then(cpu_seconds);
        let started = Instant::now();
        let child = Command::new("sh")
            .args(["-c", command])
            .env("QUEUE", queue)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Self {
            child,
            started,
            log_path,
            name: name.to_owned(),
            server_cpu_at_start,
        })
    }

    /// Fails if the contender exits or takes more than 600 s.
    pub fn check(&mut self) -> Result<(), BoxError> {
        if let Some(status) = self.child.try_wait()? {
            return Err(format!(
                "{} exited early ({status}); see {}",
                self.name,
                self.log_path.display()
            )
            .into());
        }
        if self.started.elapsed() > Duration::from_secs(600) {
            let _ = self.child.kill();
            return Err(format!("{} did not drain the queue in 600 s", self.name).into());
        }
        Ok(())
    }

    /// Time since the start, the contender's CPU time so far and the
    /// server's since the start.
    pub fn measure(&self) -> Measured {
        Measured {
            elapsed: self.started.elapsed(),
            cpu: cpu_seconds(self.child.id()),
            server_cpu: server_pid()
                .and_then(cpu_seconds)
                .zip(self.server_cpu_at_start)
                .map(|(now, start)| now - start),
        }
    }

    /// Kills the contender.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Run {
    /// A contender never outlives its run, even when the driver fails.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one run cost: wall-clock time, and CPU seconds of the contender
/// and of the queue server.
#[derive(Clone, Copy)]
pub struct Measured {
    pub elapsed: Duration,
    pub cpu: Option<f64>,
    pub server_cpu: Option<f64>,
}

/// Rates and first-receive times of every contender, over the counted
/// rounds.
pub struct Report {
    names: Vec<String>,
    rates: Vec<Vec<f64>>,
    firsts: Vec<Vec<f64>>,
}

impl Report {
    pub fn new(contenders: &[(&str, &str)]) -> Self {
        Self {
            names: contenders.iter().map(|(n, _)| (*n).to_owned()).collect(),
            rates: vec![Vec::new(); contenders.len()],
            firsts: vec![Vec::new(); contenders.len()],
        }
    }

    /// Prints one round of contender `index` (round 0 is the warm-up, not
    /// counted).
    pub fn round(
        &mut self,
        round: usize,
        index: usize,
        messages: usize,
        measured: &Measured,
        log: &str,
    ) {
        let Measured {
            elapsed,
            cpu,
            server_cpu,
        } = *measured;
        let rate = messages as f64 / elapsed.as_secs_f64();
        let first = first_receive_ms(log);
        println!(
            "round {round}{} {:>10}: {messages} messages in {:.2} s = {rate:.0} msg/s, {} µs CPU/msg (server {}), first receive {} ms",
            if round == 0 { " (warm-up)" } else { "" },
            self.names[index],
            elapsed.as_secs_f64(),
            cpu.map_or("?".into(), |s| format!("{:.0}", s * 1e6 / messages as f64)),
            server_cpu.map_or("?".into(), |s| format!("{:.0}", s * 1e6 / messages as f64)),
            first.map_or("?".into(), |ms| format!("{ms:.1}"))
        );
        if round > 0 {
            // For bench/lib/paired.py: `sample SCENARIO ROUND CONTENDER VALUE`.
            println!("sample msg/s {round} {} {rate:.1}", self.names[index]);
            if let Some(cpu) = cpu {
                let us = cpu * 1e6 / messages as f64;
                println!("sample cpu-us/msg {round} {} {us:.2}", self.names[index]);
            }
            if let Some(cpu) = server_cpu {
                let us = cpu * 1e6 / messages as f64;
                println!(
                    "sample server-cpu-us/msg {round} {} {us:.2}",
                    self.names[index]
                );
            }
            self.rates[index].push(rate);
            if let Some(ms) = first {
                self.firsts[index].push(ms);
            }
        }
    }

    /// Best and median of each, and each against the last contender.
    pub fn print(&self) {
        println!();
        let best: Vec<f64> = self
            .rates
            .iter()
            .map(|r| r.iter().copied().fold(0.0, f64::max))
            .collect();
        for (index, name) in self.names.iter().enumerate() {
            println!(
                "{name:>10}: best {:.0} msg/s, median {:.0} msg/s, median start-to-first-receive {:.1} ms",
                best[index],
                median(self.rates[index].clone()),
                median(self.firsts[index].clone())
            );
        }
        let last = self.names.len() - 1;
        for (index, name) in self.names[..last].iter().enumerate() {
            println!(
                "ratio {name}/{} = {:.2}x (best), {:.2}x (median)",
                self.names[last],
                best[index] / best[last],
                median(self.rates[index].clone()) / median(self.rates[last].clone())
            );
        }
    }
}
