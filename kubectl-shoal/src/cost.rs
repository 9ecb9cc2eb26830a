//! What `kubectl shoal cost` shows: a job's cost on the cluster next to
//! what the same work would have cost on AWS Lambda, from what its status
//! records (`status.usage`). Pure: no API calls.
//!
//! The model, in full (docs/hybrid.md has a worked example):
//! - **Lambda**: `invocations × request price + GB-seconds × GB-second
//!   price`, GB-seconds being the sum over the workers' REPORT lines of
//!   `Billed Duration × Memory Size` (the job's `handler.memoryMiB`), as
//!   Lambda bills. Prices come from a table keyed by region and
//!   architecture ([`PriceTable`]); the built-in one holds list prices (on
//!   demand, first tier, no free tier) for a few regions. Only fanned-out
//!   jobs with an output record these figures, once finished.
//! - **Cluster**: `worker-seconds × node price per second × share`, where
//!   worker-seconds are seconds of ready worker pods and `share` is the
//!   part of a node one pod reserves through its requests: the larger of
//!   its CPU share and its memory share (what it keeps other pods from
//!   using). A pod requests `handler.memoryMiB` and CPU as Lambda allots it
//!   (1 vCPU per 1,769 MiB). The node is an input (`--node-price`,
//!   `--node-cpu`, `--node-memory`); control plane and idle nodes are not
//!   counted.
//! - The comparison assumes each item would take on Lambda the time it
//!   took in its pod (the pod's CPU is what Lambda gives the same memory).
//!   Utilisation is the workers' billed seconds over their worker-seconds
//!   × `handler.concurrency`: the share of their slots' time spent in the
//!   handler.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use shoal_operator::crd::BatchJob;
use shoal_operator::{usage, workload};

/// The built-in price table (JSON, the shape [`PriceTable`] reads).
pub const LIST_PRICES: &str = include_str!("lambda-prices.json");

/// Lambda prices by region, then by architecture (`x86_64`, `arm64`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriceTable {
    /// Where the prices come from.
    pub source: String,
    /// Region → architecture → prices.
    pub regions: BTreeMap<String, BTreeMap<String, LambdaPrices>>,
}

/// Lambda's prices for one region and architecture, in USD.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LambdaPrices {
    /// Per GB-second of compute.
    pub gb_second: f64,
    /// Per million requests.
    pub per_million_requests: f64,
}

impl PriceTable {
    /// Reads a table from its JSON text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let table: Self =
            serde_json::from_str(text).map_err(|e| format!("price table {origin}: {e}"))?;
        for (region, architectures) in &table.regions {
            for (architecture, prices) in architectures {
                let valid = |p: f64| p.is_finite() && p >= 0.0;
                if !valid(prices.gb_second) || !valid(prices.per_million_requests) {
                    return Err(format!(
                        "price table {origin}: {region}/{architecture}: prices must be finite and not negative"
                    ));
                }
            }
        }
        Ok(table)
    }

    /// The prices of `region` and `architecture`.
    pub fn prices(&self, region: &str, architecture: &str) -> Result<LambdaPrices, String> {
        let architectures = self.regions.get(region).ok_or_else(|| {
            format!(
                "no Lambda prices for region {region} in the price table (it has {}); pass --prices FILE with yours",
                self.regions.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        architectures.get(architecture).copied().ok_or_else(|| {
            format!("no Lambda prices for {architecture} in {region} in the price table")
        })
    }
}

/// A node of the cluster and its price.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// USD per hour.
    pub price_per_hour: f64,
    /// Allocatable vCPUs.
    pub cpu: f64,
    /// Allocatable memory, GiB.
    pub memory_gib: f64,
}

impl Node {
    /// Checks the figures make a node.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.price_per_hour.is_finite() && self.price_per_hour >= 0.0) {
            return Err("--node-price must be a price per hour, 0 or more".into());
        }
        if !(self.cpu.is_finite()
            && self.cpu > 0.0
            && self.memory_gib.is_finite()
            && self.memory_gib > 0.0)
        {
            return Err("--node-cpu and --node-memory must be more than 0".into());
        }
        Ok(())
    }
}

/// The Lambda side.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LambdaCost {
    /// Region priced.
    pub region: String,
    /// Architecture priced.
    pub architecture: String,
    /// The prices applied.
    pub prices: LambdaPrices,
    /// Attempts run (requests).
    pub invocations: i64,
    /// GB-seconds billed.
    pub gb_seconds: f64,
    /// `invocations × per_million_requests / 1e6`.
    pub requests_usd: f64,
    /// `gb_seconds × gb_second`.
    pub compute_usd: f64,
    /// Both.
    pub total_usd: f64,
}

/// The cluster side.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCost {
    /// Seconds of ready worker pods.
    pub worker_seconds: f64,
    /// CPU one worker pod requests, vCPU.
    pub worker_cpu: f64,
    /// Memory one worker pod requests, MiB.
    pub worker_memory_mib: u32,
    /// The node priced.
    pub node: Node,
    /// Part of a node one worker pod reserves.
    pub node_share: f64,
    /// `cpu` or `memory`: which request sets the share.
    pub bound_by: &'static str,
    /// `worker_seconds × node price per second × node_share`.
    pub total_usd: f64,
    /// Items one worker pod runs at a time (`handler.concurrency`).
    pub worker_concurrency: u32,
    /// How busy the workers were: billed seconds over worker-seconds ×
    /// concurrency (when the Lambda figures are known).
    pub utilisation: Option<f64>,
    /// Utilisation below which the cluster costs more than Lambda's
    /// compute for the same work: a worker-second's price over
    /// `concurrency × memory GB × GB-second price`.
    pub break_even_utilisation: Option<f64>,
}

/// A job's cost, both ways.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    /// Namespace of the job.
    pub namespace: String,
    /// Name of the job.
    pub name: String,
    /// Its phase.
    pub phase: String,
    /// On Lambda, when the job recorded its workers' REPORT figures.
    pub lambda: Option<LambdaCost>,
    /// Why there is no Lambda side, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lambda_unknown: Option<String>,
    /// On the cluster.
    pub cluster: ClusterCost,
    /// `cluster / lambda`, when both are known and Lambda's is not 0.
    pub ratio: Option<f64>,
}

/// What `job` cost at `now`, priced with `prices` (region, architecture
/// and their prices) and `node`.
pub fn of(job: &BatchJob, now: Timestamp, prices: (&str, &str, LambdaPrices), node: Node) -> Cost {
    let status = job.status.clone().unwrap_or_default();
    let recorded = status.usage.clone().unwrap_or_default();
    let (region, architecture, lambda_prices) = prices;
    let lambda = match (recorded.invocations, recorded.gb_seconds) {
        (Some(invocations), Some(gb_seconds)) => {
            let requests_usd = invocations as f64 * lambda_prices.per_million_requests / 1e6;
            let compute_usd = gb_seconds * lambda_prices.gb_second;
            Some(LambdaCost {
                region: region.to_owned(),
                architecture: architecture.to_owned(),
                prices: lambda_prices,
                invocations,
                gb_seconds,
                requests_usd,
                compute_usd,
                total_usd: requests_usd + compute_usd,
            })
        }
        _ => None,
    };
    let lambda_unknown = lambda.is_none().then(|| {
        let fanned_out_with_output = job.spec.source.sqs.is_none()
            && job.spec.source.amqp.is_none()
            && job.spec.output.is_some();
        if !fanned_out_with_output {
            "not recorded: only fanned-out jobs with an output record their workers' REPORT figures"
                .to_owned()
        } else if status.phase.is_finished() {
            "not recorded: the job finished before its workers recorded REPORT figures".to_owned()
        } else {
            "known when the job finishes (summed from its workers' REPORT figures)".to_owned()
        }
    });
    let memory_mib = job
        .spec
        .handler
        .memory_mib
        .unwrap_or(workload::DEFAULT_MEMORY_MIB);
    let (pod_memory_mib, pod_cpu_millis) = workload::pod_resources(&job.spec.handler);
    let worker_cpu = f64::from(pod_cpu_millis) / 1000.0;
    let cpu_share = worker_cpu / node.cpu;
    let memory_share = f64::from(pod_memory_mib) / 1024.0 / node.memory_gib;
    let (node_share, bound_by) = if cpu_share >= memory_share {
        (cpu_share, "cpu")
    } else {
        (memory_share, "memory")
    };
    let worker_seconds = usage::worker_seconds_at(&recorded, now);
    let per_worker_second = node.price_per_hour / 3600.0 * node_share;
    let concurrency = job
        .spec
        .handler
        .concurrency
        .unwrap_or(workload::DEFAULT_CONCURRENCY)
        .max(1);
    // What a pod's worth of busy slots would cost on Lambda per second.
    let lambda_per_busy_second =
        lambda_prices.gb_second * f64::from(memory_mib) / 1024.0 * f64::from(concurrency);
    let utilisation = recorded
        .billed_ms
        .filter(|_| worker_seconds > 0.0)
        .map(|ms| ms as f64 / 1000.0 / (worker_seconds * f64::from(concurrency)));
    let cluster = ClusterCost {
        worker_seconds,
        worker_cpu,
        worker_memory_mib: pod_memory_mib,
        node,
        node_share,
        bound_by,
        total_usd: worker_seconds * per_worker_second,
        worker_concurrency: concurrency,
        utilisation,
        break_even_utilisation: (lambda_per_busy_second > 0.0)
            .then(|| per_worker_second / lambda_per_busy_second),
    };
    let ratio = lambda
        .as_ref()
        .filter(|l| l.total_usd > 0.0)
        .map(|l| cluster.total_usd / l.total_usd);
    Cost {
        namespace: job.namespace().unwrap_or_default(),
        name: job.name_any(),
        phase: format!("{:?}", status.phase),
        lambda,
        lambda_unknown,
        cluster,
        ratio,
    }
}

/// An amount in USD: to the cent from a cent up, else six decimals.
pub fn usd(amount: f64) -> String {
    if amount.abs() >= 0.01 {
        format!("${}", thousands(amount, 2))
    } else {
        format!("${amount:.6}")
    }
}

/// `value` with `decimals` decimals and thousands separated by commas.
pub fn thousands(value: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, value.abs());
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if value < 0.0 { "-" } else { "" };
    if fraction.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{fraction}")
    }
}

/// What people read.
pub fn render(cost: &Cost) -> String {
    let mut text = format!(
        "BatchJob {}/{}: {}\n\n",
        cost.namespace, cost.name, cost.phase
    );
    let row = |label: &str, what: String, amount: String| {
        let line = format!("  {label:<10}{what:<58}{amount:>12}");
        format!("{}\n", line.trim_end())
    };
    match (&cost.lambda, &cost.lambda_unknown) {
        (Some(l), _) => {
            text.push_str(&format!("On Lambda ({}, {})\n", l.region, l.architecture));
            text.push_str(&row(
                "requests",
                format!(
                    "{} × ${} per million",
                    thousands(l.invocations as f64, 0),
                    l.prices.per_million_requests
                ),
                usd(l.requests_usd),
            ));
            text.push_str(&row(
                "compute",
                format!(
                    "{} GB-s × ${}",
                    thousands(l.gb_seconds, 3),
                    l.prices.gb_second
                ),
                usd(l.compute_usd),
            ));
            text.push_str(&row("total", String::new(), usd(l.total_usd)));
        }
        (None, why) => {
            text.push_str(&format!(
                "On Lambda: {}\n",
                why.as_deref().unwrap_or("not recorded")
            ));
        }
    }
    let c = &cost.cluster;
    text.push_str("\nOn the cluster\n");
    text.push_str(&row(
        "workers",
        format!(
            "{} pod-seconds × {} vCPU, {} MiB, {} at a time",
            thousands(c.worker_seconds, 1),
            c.worker_cpu,
            c.worker_memory_mib,
            c.worker_concurrency
        ),
        String::new(),
    ));
    text.push_str(&row(
        "node",
        format!(
            "${}/h for {} vCPU, {} GiB: a pod takes {:.2}% ({})",
            c.node.price_per_hour,
            c.node.cpu,
            c.node.memory_gib,
            c.node_share * 100.0,
            c.bound_by
        ),
        String::new(),
    ));
    text.push_str(&row("total", String::new(), usd(c.total_usd)));
    text.push('\n');
    if let Some(ratio) = cost.ratio {
        text.push_str(&format!("Cluster / Lambda: {ratio:.2}\n"));
    }
    if let Some(utilisation) = c.utilisation {
        text.push_str(&format!(
            "Workers busy: {:.1}% of their slots' time\n",
            utilisation * 100.0
        ));
    }
    if let Some(utilisation) = c.break_even_utilisation {
        text.push_str(&format!(
            "Break-even: the cluster is cheaper while its workers are busy more than {:.1}%\n",
            utilisation * 100.0
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_table_reads_and_names_what_it_lacks() {
        let table = PriceTable::parse(LIST_PRICES, "built-in").unwrap();
        let prices = table.prices("us-east-1", "x86_64").unwrap();
        assert!(prices.gb_second > 0.0 && prices.per_million_requests > 0.0);
        let missing = table.prices("mars-north-1", "x86_64").unwrap_err();
        assert!(
            missing.contains("mars-north-1") && missing.contains("us-east-1"),
            "{missing}"
        );
        assert!(table.prices("us-east-1", "sparc").is_err());
        let negative =
            r#"{"source":"x","regions":{"r":{"x86_64":{"gbSecond":-1,"perMillionRequests":0.2}}}}"#;
        assert!(
            PriceTable::parse(negative, "f")
                .unwrap_err()
                .contains("r/x86_64")
        );
        assert!(PriceTable::parse(r#"{"source":"x","regions":{},"extra":1}"#, "f").is_err());
    }

    /// The worked example of docs/hybrid.md, by hand.
    #[test]
    fn the_worked_example_matches_a_hand_calculation() {
        let job: BatchJob =
            serde_yaml::from_str(include_str!("../../docs/cost-example.yaml")).unwrap();
        let prices = LambdaPrices {
            gb_second: 0.0000166667,
            per_million_requests: 0.2,
        };
        let node = Node {
            price_per_hour: 0.096,
            cpu: 2.0,
            memory_gib: 8.0,
        };
        let cost = of(
            &job,
            Timestamp::now(),
            ("us-east-1", "x86_64", prices),
            node,
        );
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        let lambda = cost.lambda.clone().unwrap();
        // 2,000,000 × 0.4 s × 1,769 MB / 1,024 = 1,382,031.25 GB-s.
        assert!(close(lambda.gb_seconds, 2e6 * 0.4 * 1769.0 / 1024.0));
        assert!(close(lambda.requests_usd, 0.40));
        assert!(close(lambda.compute_usd, 1_382_031.25 * 0.0000166667));
        assert!(close(lambda.total_usd, 0.40 + 1_382_031.25 * 0.0000166667));
        // A pod: 1,769 MiB → 1 vCPU, half the node's CPU (a fifth of its
        // memory): $0.048 an hour.
        let cluster = &cost.cluster;
        assert_eq!((cluster.worker_cpu, cluster.bound_by), (1.0, "cpu"));
        assert!(close(cluster.node_share, 0.5));
        assert!(close(cluster.total_usd, 666_666.667 * 0.048 / 3600.0));
        // 800,000 billed seconds over 666,666.667 × 2 slot-seconds.
        assert!(close(
            cluster.utilisation.unwrap(),
            800_000.0 / 1_333_333.334
        ));
        // $0.048/h against 2 slots × 1.7275 GB × $0.0000166667/s.
        let per_slot = 2.0 * 1769.0 / 1024.0 * 0.0000166667;
        assert!(close(
            cluster.break_even_utilisation.unwrap(),
            0.048 / 3600.0 / per_slot
        ));
        assert!(close(
            cost.ratio.unwrap(),
            cluster.total_usd / lambda.total_usd
        ));
    }

    #[test]
    fn a_running_or_consuming_job_says_why_lambda_is_unknown() {
        let mut job: BatchJob =
            serde_yaml::from_str(include_str!("../../docs/cost-example.yaml")).unwrap();
        let status = job.status.as_mut().unwrap();
        status.phase = shoal_operator::crd::Phase::Running;
        let usage = status.usage.as_mut().unwrap();
        (usage.invocations, usage.gb_seconds, usage.billed_ms) = (None, None, None);
        usage.counted_workers = 3;
        usage.counted_until = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::from_second(1_800_000_000).unwrap(),
        ));
        let prices = LambdaPrices {
            gb_second: 1e-5,
            per_million_requests: 0.2,
        };
        let node = Node {
            price_per_hour: 0.1,
            cpu: 2.0,
            memory_gib: 8.0,
        };
        let now = Timestamp::from_second(1_800_000_010).unwrap();
        let cost = of(&job, now, ("r", "x86_64", prices), node);
        assert!(cost.lambda.is_none() && cost.ratio.is_none());
        assert!(
            cost.lambda_unknown
                .unwrap()
                .contains("when the job finishes")
        );
        // Three workers for ten more seconds, counted live.
        assert!((cost.cluster.worker_seconds - 666_696.667).abs() < 1e-6);
        job.spec.source.s3 = None;
        job.spec.source.sqs = Some(serde_json::from_str(r#"{"queueUrl":"http://q"}"#).unwrap());
        let cost = of(&job, now, ("r", "x86_64", prices), node);
        assert!(
            cost.lambda_unknown
                .unwrap()
                .contains("only fanned-out jobs")
        );
    }

    #[test]
    fn amounts_read_as_people_write_them() {
        assert_eq!(usd(13.73336), "$13.73");
        assert_eq!(usd(1234.5), "$1,234.50");
        assert_eq!(usd(0.0070754), "$0.007075");
        assert_eq!(usd(0.4), "$0.40");
        assert_eq!(thousands(2_000_000.0, 0), "2,000,000");
        assert_eq!(thousands(800_000.0, 3), "800,000.000");
        assert_eq!(thousands(999.96, 1), "1,000.0");
    }
}
