//! The verdict of a run: limits checked and integrity rules applied.

use super::Summary;
use crate::options::Profile;
use serde::Serialize;

/// A limit checked at the end of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked, e.g. `p99 delivery <= 100 ms`.
    pub rule: String,
    /// The measured value.
    pub value: f64,
    /// Whether it held.
    pub passed: bool,
}

impl Summary {
    /// Applies the limits and integrity rules; sets `checks`, `failures`, `passed`.
    pub fn judge(
        &mut self,
        p99_delivery_ms: Option<f64>,
        p99_send_ms: Option<f64>,
        max_error_rate: Option<f64>,
    ) {
        let stress = self.profile == Profile::Stress;
        let mut checks = Vec::new();
        if !stress {
            if let Some(l) = p99_delivery_ms {
                checks.push(Check {
                    rule: format!("p99 delivery <= {l} ms"),
                    value: self.delivery.p99_ms,
                    passed: self.delivery.p99_ms <= l,
                });
            }
            if let Some(l) = max_error_rate {
                checks.push(Check {
                    rule: format!("error rate <= {l}"),
                    value: self.error_rate,
                    passed: self.error_rate <= l,
                });
            }
        }
        if let Some(l) = p99_send_ms {
            checks.push(Check {
                rule: format!("p99 send->ok <= {l} ms"),
                value: self.send_ok.p99_ms,
                passed: self.send_ok.p99_ms <= l,
            });
        }
        let mut failures: Vec<String> = checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{} (measured {:.3})", c.rule, c.value))
            .collect();
        if self.gaps > 0 {
            failures.push(format!(
                "{} acknowledged messages never delivered (gaps)",
                self.gaps
            ));
        }
        if self.profile == Profile::Peak && self.recovery_s.is_none() && !self.phases.is_empty() {
            failures.push(
                "peak: p99 delivery did not come back near the baseline after the spike".into(),
            );
        }
        if stress && self.knee.is_none() {
            failures.push("stress: not even the first step met the limits".into());
        }
        if self.messages_sent == 0 && self.profile != Profile::ConnectStorm {
            failures.push("no message was sent".into());
        }
        if self.users > 0 && self.failed_users as usize == self.users {
            failures.push("no user got in".into());
        }
        for rule in &self.goose_thresholds_failed {
            failures.push(format!("goose threshold failed: {rule}"));
        }
        self.checks = checks;
        self.passed = failures.is_empty();
        self.failures = failures;
    }

    /// Overload: every planned multiple measured, and, with `min_share`,
    /// each one's goodput at least that share of the first's (the mean of
    /// its steps when it was offered more than once).
    pub fn judge_curve(&mut self, planned: usize, min_share: Option<f64>) {
        if self.profile != Profile::Overload {
            return;
        }
        if self.curve.len() < planned {
            self.failures.push(format!(
                "overload: {} of {planned} rates measured",
                self.curve.len()
            ));
        }
        if let (Some(min), Some(first)) = (min_share, self.curve.first().map(|p| p.multiple)) {
            for (multiple, shares) in self.shares_past(first) {
                let mut rule = format!("goodput at {multiple}x >= {min} x goodput at {first}x");
                if shares.len() > 1 {
                    rule.push_str(&format!(" (mean of {} steps)", shares.len()));
                }
                let value = super::mean(shares.iter().copied());
                let check = Check {
                    rule,
                    value,
                    passed: value >= min,
                };
                if !check.passed {
                    self.failures
                        .push(format!("{} (measured {:.3})", check.rule, check.value));
                }
                self.checks.push(check);
            }
        }
        self.passed = self.failures.is_empty();
    }

    /// Each multiple other than `first`, in the order first offered, with
    /// the goodput shares of its steps.
    pub fn shares_past(&self, first: f64) -> Vec<(f64, Vec<f64>)> {
        let mut out: Vec<(f64, Vec<f64>)> = Vec::new();
        for p in self.curve.iter().filter(|p| p.multiple != first) {
            match out.iter_mut().find(|(m, _)| *m == p.multiple) {
                Some((_, shares)) => shares.push(p.goodput_share),
                None => out.push((p.multiple, vec![p.goodput_share])),
            }
        }
        out
    }
}
