//! Turns a [`Verdict`] into a human reason: list, rule as written, `FILE:LINE`,
//! action, EDE code, decision id. Used by `qalqan explain` and logs.

use std::fmt::Write as _;

use super::{Policy, Verdict};
use crate::name::QName;

/// A verdict explained.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// `blocked`, `allowed` or `pass`.
    pub outcome: &'static str,
    pub list: Option<String>,
    pub file_line: Option<String>,
    /// The rule as written in the source, when the source can be re-read.
    pub rule_text: Option<String>,
    pub action: Option<String>,
    pub ede: Option<u16>,
    pub decision: Option<String>,
    /// What a shadow list (`mode = "shadow"`) would have blocked the name
    /// with: shown apart, never part of the outcome.
    pub shadow: Option<ShadowHit>,
    /// The view of the client asked about (`--client`), when one applies.
    pub view: Option<String>,
}

/// A shadow list's hit, explained.
#[derive(Debug, Clone)]
pub struct ShadowHit {
    pub list: String,
    pub file_line: String,
    pub rule_text: Option<String>,
    pub action: String,
}

/// Explains the decision for `name`. `read_line` re-reads `(source, line)`
/// to show the rule as written (return `None` when that is not possible).
pub fn explain(policy: &Policy, name: &QName, read_line: &dyn Fn(&str, u32) -> Option<String>) -> Explanation {
    explain_in(policy, name, None, read_line)
}

/// [`explain`] for a client of `view` (`None`: every list, as for a
/// client no view covers).
pub fn explain_in(policy: &Policy, name: &QName, view: Option<&super::views::View>, read_line: &dyn Fn(&str, u32) -> Option<String>) -> Explanation {
    let verdict = policy.check_in(name.as_name(), view.map(|v| &v.lists));
    let (outcome, hit) = match verdict {
        Verdict::Pass => ("pass", None),
        Verdict::Allowed(h) => ("allowed", Some(h)),
        Verdict::Blocked(h) => ("blocked", Some(h)),
    };
    let mut ex = Explanation {
        outcome,
        list: None,
        file_line: None,
        rule_text: None,
        action: None,
        ede: None,
        decision: None,
        shadow: None,
        view: view.map(|v| v.name.clone()),
    };
    if let Some(hit) = policy.shadow_hit(name.as_name()) {
        if let Some(list) = policy.list(&hit) {
            let line = policy.rule_line(hit.rule);
            ex.shadow = Some(ShadowHit {
                list: list.name.clone(),
                file_line: format!("{}:{}", list.source, line),
                rule_text: read_line(&list.source, line),
                action: policy.answer(&hit).as_str().to_owned(),
            });
        }
    }
    if let Some(hit) = hit {
        let line = policy.rule_line(hit.rule);
        if let Some(list) = policy.list(&hit) {
            ex.list = Some(list.name.clone());
            ex.file_line = Some(format!("{}:{}", list.source, line));
            ex.rule_text = read_line(&list.source, line);
        }
        ex.decision = policy.decision(hit.rule).map(str::to_owned);
        if matches!(verdict, Verdict::Blocked(_)) {
            ex.action = Some(policy.answer(&hit).as_str().to_owned());
            ex.ede = Some(policy.ede(&hit).0);
        }
    }
    ex
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::from(self.outcome);
        if let Some(v) = &self.view {
            let _ = write!(s, "\n  view:     {v}");
        }
        if let Some(l) = &self.list {
            let _ = write!(s, "\n  list:     {l}");
        }
        if let Some(r) = &self.rule_text {
            let _ = write!(s, "\n  rule:     {r}");
        }
        if let Some(fl) = &self.file_line {
            let _ = write!(s, "\n  source:   {fl}");
        }
        if let Some(a) = &self.action {
            let _ = write!(s, "\n  action:   {a}");
        }
        if let Some(e) = self.ede {
            let _ = write!(s, "\n  ede:      {e}");
        }
        if let Some(d) = &self.decision {
            let _ = write!(s, "\n  decision: {d}");
        }
        if let Some(sh) = &self.shadow {
            let _ = write!(s, "\nshadow (not enforced)\n  list:     {}", sh.list);
            if let Some(r) = &sh.rule_text {
                let _ = write!(s, "\n  rule:     {r}");
            }
            let _ = write!(s, "\n  source:   {}\n  would:    {}", sh.file_line, sh.action);
        }
        f.write_str(&s)
    }
}
