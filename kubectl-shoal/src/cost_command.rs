//! `cost`: the job, from the cluster or a file, priced with the inputs
//! the command line gives ([`crate::cost`] computes, this prints).

use std::io::Write;

use k8s_openapi::jiff::Timestamp;
use shoal_operator::crd::BatchJob;

use crate::commands::{write_json, write_text};
use crate::{Error, Output, Result};

/// How `cost` prices a job.
#[derive(Debug, Clone)]
pub struct CostInputs {
    /// Region of the Lambda prices.
    pub region: String,
    /// Architecture of the Lambda prices.
    pub architecture: &'static str,
    /// The Lambda prices.
    pub prices: crate::cost::LambdaPrices,
    /// The node priced.
    pub node: crate::cost::Node,
}

/// A BatchJob read from a YAML or JSON file (`kubectl get bj NAME -o
/// yaml`).
pub fn job_from_file(path: &std::path::Path) -> Result<BatchJob> {
    const MAX_BYTES: u64 = 4 << 20;
    let what = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| Error::Usage(format!("reading {what}: {e}")))?
        .len();
    if size > MAX_BYTES {
        return Err(Error::Usage(format!(
            "{what}: {size} bytes is more than a BatchJob takes ({MAX_BYTES} at most)"
        )));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Usage(format!("reading {what}: {e}")))?;
    // YAML is a superset of JSON: one parser reads both.
    serde_yaml::from_str(&text).map_err(|e| Error::Usage(format!("{what}: not a BatchJob: {e}")))
}

/// `cost`: what `job` cost on the cluster and would have cost on Lambda.
pub fn cost(
    job: &BatchJob,
    inputs: &CostInputs,
    output: Output,
    out: &mut impl Write,
) -> Result<()> {
    let cost = crate::cost::of(
        job,
        Timestamp::now(),
        (&inputs.region, inputs.architecture, inputs.prices),
        inputs.node,
    );
    match output {
        Output::Json => write_json(out, &cost),
        Output::Human => write_text(out, &crate::cost::render(&cost)),
    }
}
