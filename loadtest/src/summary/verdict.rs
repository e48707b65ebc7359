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
    /// each one's goodput at least that share of the first's.
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
        if let (Some(min), Some((first, rest))) = (min_share, self.curve.split_first()) {
            for p in rest {
                let check = Check {
                    rule: format!(
                        "goodput at {}x >= {min} x goodput at {}x",
                        p.multiple, first.multiple
                    ),
                    value: p.goodput_share,
                    passed: p.goodput_share >= min,
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
}
