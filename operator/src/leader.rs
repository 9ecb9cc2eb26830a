//! Leader election on a `coordination.k8s.io/v1` Lease, so several operator
//! replicas can run and exactly one reconciles.
//!
//! Contract:
//! - A replica leads while the Lease names it and it renews the Lease every
//!   third of the lease duration; writes use the Lease's resourceVersion, so
//!   two replicas can never both win the same round.
//! - A Lease not renewed for its duration is taken over by the next replica
//!   that tries.
//! - A leader that fails to renew for a whole lease duration stops leading:
//!   [`lead`] returns an error and the process exits, to be restarted as a
//!   follower, rather than risk two leaders.
//! - On a clean shutdown the leader clears the holder, so a follower takes
//!   over at once instead of after the lease duration.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::error::{Error, Result};

/// Who competes for which Lease.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// Whether `lease` may be taken by `identity` at `now`: free, ours, or not
/// renewed for its duration.
pub fn may_take(lease: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    let holder = lease.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == identity {
        return true;
    }
    let duration = i64::from(lease.lease_duration_seconds.unwrap_or(15));
    let Some(renewed) = lease.renew_time.as_ref() else {
        return true;
    };
    now.duration_since(renewed.0).as_secs() >= duration
}

impl LeaseLock {
    /// A lock on Lease `name` held as `identity`.
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let ours = previous
            .and_then(|p| p.holder_identity.as_deref())
            .is_some_and(|h| h == self.identity);
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.duration.as_secs()).unwrap_or(15)),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..LeaseSpec::default()
        }
    }

    /// One round: takes or renews the Lease if allowed. `Ok(true)` if this
    /// replica holds it now.
    pub async fn try_acquire(&self) -> Result<bool> {
        let now = Timestamp::now();
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(Error::kube(format!("reading lease {}", self.name)))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(None, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(Error::kube(format!("creating lease {}", self.name))(e)),
            };
        };
        let current = lease.spec.clone().unwrap_or_default();
        if !may_take(&current, &self.identity, now) {
            return Ok(false);
        }
        lease.spec = Some(self.spec(Some(&current), now));
        // The resourceVersion we read makes this a compare-and-swap.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(Error::kube(format!("renewing lease {}", self.name))(e)),
        }
    }

    /// Gives the Lease up (clean shutdown): clears the holder if it is us.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            .is_some_and(|h| h == self.identity);
        if !ours {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = None;
        }
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(lease = %self.name, error = %e, "cannot release the lease");
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        let retry = self.duration / 3;
        let mut waiting_logged = false;
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "leading");
                    return;
                }
                Ok(false) if !waiting_logged => {
                    tracing::info!(lease = %self.name, "another replica leads; waiting");
                    waiting_logged = true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election round failed"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews the Lease until it cannot for a whole lease duration; returns
    /// the reason leadership was lost.
    pub async fn keep(&self) -> Error {
        let period = self.duration / 3;
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(period).await;
            match self.try_acquire().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    return Error::Config(format!("lost lease {} to another replica", self.name));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the lease");
                    if last_renewal.elapsed() >= self.duration {
                        return Error::Config(format!(
                            "could not renew lease {} for {:?}",
                            self.name, self.duration
                        ));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: Option<i64>, now: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            renew_time: renewed_secs_ago
                .map(|s| MicroTime(now - k8s_openapi::jiff::SignedDuration::from_secs(s))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_taken_only_when_free_ours_or_expired() {
        let now = Timestamp::now();
        assert!(may_take(&lease(None, None, now), "a", now));
        assert!(may_take(&lease(Some("a"), Some(1), now), "a", now));
        assert!(!may_take(&lease(Some("b"), Some(1), now), "a", now));
        assert!(!may_take(&lease(Some("b"), Some(14), now), "a", now));
        assert!(may_take(&lease(Some("b"), Some(15), now), "a", now));
        assert!(may_take(&lease(Some(""), Some(1), now), "a", now));
    }
}
