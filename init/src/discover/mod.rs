//! The discover stage: providers found on the LAN — the DHCP lease's boot
//! URL (option 67) and DNS-SD over Multicast DNS ([`mdns`]) on the boot
//! link — in the order the fetch stage tries them.
//!
//! Discovery only chooses where to fetch; what is trusted stays the
//! image's keys and floor, so a hostile box that answers first costs a
//! refused manifest and a failover, never a boot of its bytes (SECURITY.md
//! row 26).
//!
//! Order: the DHCP boot URL first (it counts as priority 0 heard before
//! any mDNS answer), then the mDNS providers serving the channel and arch,
//! lowest TXT `priority` first and, among equals, the first to answer.
//! The boot URL names the base of a provider tree, as `phase.provider=`
//! does: `http://10.0.0.1/tree/` is fetched as
//! `http://10.0.0.1/tree/stable/x86_64/manifest.json`.
//!
//! A round listens for `phase.discover.timeout`, or for [`SETTLE`] once a
//! provider is known. In local mode a round that finds nothing is repeated
//! with the fetch stage's backoff until `rd.retry` runs out.

pub mod mdns;

use std::time::{Duration, Instant};

use phase_discover::Discovered;
use serde::Serialize;
use serde_json::{Value, json};

use crate::error_chain;
use crate::fetch::Budget;
use crate::network::Configured;
use crate::plan::{BootPlan, ProviderUrl, Stage};
use crate::policy::{Failure, Tried};

/// How long a round listens once a provider is known: the first query goes
/// out 20–120 ms in and responders answer within another 120 ms (RFC 6762
/// §6), follow-ups for what an answer left out 120 ms after that.
pub const SETTLE: Duration = Duration::from_secs(1);

/// One provider heard of, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heard {
    /// `mdns` or `dhcp` (option 67).
    pub from: &'static str,
    /// The mDNS instance name, or the DHCP server's address.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    /// Why it is not tried: a stable name, and the reason as a line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Heard {
    fn label(&self) -> String {
        match self.from {
            "dhcp" => format!("DHCP option 67 from {}", self.name),
            _ => format!("mDNS {:?}", self.name),
        }
    }

    /// A skipped provider as a line of the failure report.
    fn tried(&self) -> Option<Tried> {
        let kind = self.skipped?;
        Some(Tried {
            at: Some(self.label()),
            what: Some("provider".into()),
            outcome: "skipped",
            kind: kind.into(),
            detail: json!({ "from": self.from, "name": self.name, "url": self.url }),
            error: self.reason.clone().unwrap_or_default(),
        })
    }
}

/// What discovery found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Found {
    pub interface: String,
    /// Everything heard in the last round, providers and skipped alike.
    pub heard: Vec<Heard>,
    /// Where to fetch from, in order.
    #[serde(serialize_with = "urls")]
    pub providers: Vec<ProviderUrl>,
    pub rounds: u32,
    pub queries: u32,
    /// Milliseconds from the start to the first usable provider.
    pub first_ms: Option<u64>,
    /// Why mDNS could not run (the boot URL may still be used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mdns_error: Option<String>,
}

fn urls<S: serde::Serializer>(p: &[ProviderUrl], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(p.iter().map(|p| &p.url))
}

impl Found {
    /// The stage's line: the providers in the order they will be tried,
    /// each with where it was heard of, then what was skipped and why.
    pub fn summary(&self) -> String {
        let tried = self.providers.iter().map(|p| {
            match self
                .heard
                .iter()
                .find(|h| h.skipped.is_none() && h.url.as_deref() == Some(p.url.as_str()))
            {
                Some(h) => format!("{} ({})", p.url, h.label()),
                None => p.url.clone(),
            }
        });
        let skipped = self
            .heard
            .iter()
            .filter(|h| h.skipped.is_some() || h.url.is_none())
            .map(|h| {
                format!(
                    "{} skipped: {}",
                    h.label(),
                    h.reason.as_deref().unwrap_or_default()
                )
            });
        let mut parts: Vec<String> = tried.chain(skipped).collect();
        if let Some(e) = &self.mdns_error {
            parts.push(format!("mDNS: {e}"));
        }
        format!(
            "{} provider(s) on {}{}{}",
            self.providers.len(),
            self.interface,
            if parts.is_empty() { "" } else { ": " },
            parts.join("; ")
        )
    }

    /// The failure report's lines for what discovery found: every skipped
    /// provider first, then the fetch stage's attempts, each attempt at a
    /// discovered provider saying where it was heard of.
    pub fn annotate(&self, tried: &mut Vec<Tried>) {
        for t in tried.iter_mut() {
            let Some(h) = self.heard.iter().find(|h| h.url == t.at) else {
                continue;
            };
            if let Value::Object(map) = &mut t.detail {
                map.insert(
                    "discovered".into(),
                    json!({ "from": h.from, "name": h.name, "priority": h.priority }),
                );
            }
        }
        let mut lines: Vec<Tried> = self.heard.iter().filter_map(Heard::tried).collect();
        lines.append(tried);
        *tried = lines;
    }

    /// Local mode found nothing to fetch from.
    pub fn nothing(&self, plan: &BootPlan) -> Failure {
        let mut failure = Failure::new(
            Stage::Discover,
            format!(
                "no provider found on {} (phase.discover.timeout={} s, {} round(s) within rd.retry={} s, {} mDNS queries, {} heard of){}",
                self.interface,
                plan.discover_timeout.as_secs(),
                self.rounds,
                plan.retry.as_secs(),
                self.queries,
                self.heard.len(),
                self.mdns_error
                    .as_ref()
                    .map(|e| format!("; mDNS: {e}"))
                    .unwrap_or_default()
            ),
        )
        .because(
            "nothing_discovered",
            json!({
                "interface": self.interface,
                "timeout_s": plan.discover_timeout.as_secs(),
                "retry_s": plan.retry.as_secs(),
                "rounds": self.rounds,
                "queries": self.queries,
                "heard": self.heard.len(),
                "mdns_error": self.mdns_error,
            }),
        );
        failure.tried = self.heard.iter().filter_map(Heard::tried).collect();
        failure
    }
}

/// The DHCP boot URL and what a browse heard, in fetch order.
pub fn merge(
    dhcp: Option<(&str, &str)>,
    instances: &[Discovered],
    order: &[phase_discover::Provider],
) -> (Vec<Heard>, Vec<ProviderUrl>) {
    let mut heard = Vec::new();
    let mut providers = Vec::new();
    if let Some((server, url)) = dhcp {
        let mut h = Heard {
            from: "dhcp",
            name: server.into(),
            url: Some(url.into()),
            priority: None,
            skipped: None,
            reason: None,
        };
        match ProviderUrl::parse(url) {
            Ok(p) => {
                h.url = Some(p.url.clone());
                providers.push(p);
            }
            Err(e) => {
                h.skipped = Some("url");
                h.reason = Some(e);
            }
        }
        heard.push(h);
    }
    let first_mdns = providers.len();
    for d in instances {
        let mut h = Heard {
            from: "mdns",
            name: d.instance.clone(),
            url: None,
            priority: None,
            skipped: None,
            reason: None,
        };
        match &d.outcome {
            Ok(p) => {
                h.priority = Some(p.priority);
                match ProviderUrl::parse(&p.url) {
                    Ok(u) if providers[..first_mdns].contains(&u) => {
                        h.skipped = Some("duplicate");
                        h.reason = Some(format!("{} is already the DHCP boot URL", u.url));
                        h.url = Some(u.url);
                    }
                    Ok(u) => h.url = Some(u.url),
                    Err(e) => {
                        h.skipped = Some("url");
                        h.reason = Some(e);
                    }
                }
            }
            Err(skip) => {
                h.skipped = Some(skip.kind());
                h.reason = Some(skip.to_string());
            }
        }
        heard.push(h);
    }
    for p in order {
        let Ok(u) = ProviderUrl::parse(&p.url) else {
            continue;
        };
        if !providers.contains(&u) {
            providers.push(u);
        }
    }
    (heard, providers)
}

/// Discovers providers for `arch` on the boot link `net`. With `budget`,
/// rounds that find nothing are repeated with backoff until it ends.
pub fn run(plan: &BootPlan, net: &Configured, arch: &str, budget: Option<&Budget>) -> Found {
    let start = Instant::now();
    let dhcp = net.boot_url.as_deref().map(|url| {
        let server = net.server.map(|s| s.to_string()).unwrap_or_default();
        (server, url)
    });
    let mut found = Found {
        interface: net.interface.clone(),
        ..Found::default()
    };
    if dhcp.is_some() {
        found.first_ms = Some(0);
    }
    let mut delay = budget.map_or(Duration::ZERO, |b| b.first_delay);
    loop {
        found.rounds += 1;
        let round_start = start.elapsed();
        let browsed = mdns::browse(
            &net.interface,
            net.address,
            plan.discover_timeout,
            SETTLE,
            dhcp.is_some(),
            &plan.channel,
            arch,
        );
        let (instances, order) = match browsed {
            Ok(b) => {
                found.queries += b.queries;
                found.mdns_error = None;
                if found.first_ms.is_none()
                    && let Some(first) = b.first
                {
                    found.first_ms = Some((round_start + first).as_millis() as u64);
                }
                (b.instances, b.providers)
            }
            Err(e) => {
                found.mdns_error = Some(error_chain(&e));
                (Vec::new(), Vec::new())
            }
        };
        let dhcp = dhcp.as_ref().map(|(s, u)| (s.as_str(), *u));
        (found.heard, found.providers) = merge(dhcp, &instances, &order);
        let Some(budget) = budget else { break };
        if !found.providers.is_empty() || !budget.wait(delay) {
            break;
        }
        delay = (delay * 2).min(budget.max_delay);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use phase_discover::{Provider, Skip};

    fn provider(instance: &str, url: &str, priority: u16) -> Provider {
        Provider {
            instance: instance.into(),
            url: url.into(),
            address: "10.0.0.1:80".parse().unwrap(),
            priority,
        }
    }

    #[test]
    fn the_boot_url_comes_first_then_mdns_by_priority() {
        let a = provider("a", "http://10.0.0.1:8080/", 5);
        let b = provider("b", "http://10.0.0.2:80/tree/", 1);
        let same = provider("same", "http://10.0.0.9:80/t/", 0);
        let instances = vec![
            Discovered {
                instance: "a".into(),
                outcome: Ok(a.clone()),
            },
            Discovered {
                instance: "arm only".into(),
                outcome: Err(Skip::Arch {
                    wanted: "x86_64".into(),
                    offered: vec!["aarch64".into()],
                }),
            },
            Discovered {
                instance: "b".into(),
                outcome: Ok(b.clone()),
            },
            Discovered {
                instance: "same".into(),
                outcome: Ok(same.clone()),
            },
        ];
        let order = [same, b, a];
        let (heard, providers) = merge(
            Some(("10.0.0.254", "http://10.0.0.9:80/t/")),
            &instances,
            &order,
        );
        let urls: Vec<&str> = providers.iter().map(|p| p.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://10.0.0.9:80/t",
                "http://10.0.0.2:80/tree",
                "http://10.0.0.1:8080"
            ]
        );
        let skipped: Vec<(&str, Option<&str>)> =
            heard.iter().map(|h| (h.name.as_str(), h.skipped)).collect();
        assert_eq!(
            skipped,
            [
                ("10.0.0.254", None),
                ("a", None),
                ("arm only", Some("arch")),
                ("b", None),
                ("same", Some("duplicate")),
            ]
        );
        // Without a boot URL the same instance is a provider.
        let (_, providers) = merge(None, &instances, &order);
        assert_eq!(providers.len(), 3);
        assert_eq!(providers[0].url, "http://10.0.0.9:80/t");
    }

    #[test]
    fn a_bad_boot_url_is_named() {
        let (heard, providers) = merge(Some(("10.0.0.1", "http://a/?x")), &[], &[]);
        assert!(providers.is_empty());
        assert_eq!(heard[0].skipped, Some("url"));
        assert!(
            heard[0].tried().unwrap().error.contains("query"),
            "{heard:?}"
        );
    }

    #[test]
    fn the_report_lists_skips_then_attempts_with_their_source() {
        let found = Found {
            interface: "eth0".into(),
            heard: vec![
                Heard {
                    from: "mdns",
                    name: "hostile".into(),
                    url: Some("http://10.0.0.5:81".into()),
                    priority: Some(1),
                    skipped: None,
                    reason: None,
                },
                Heard {
                    from: "mdns",
                    name: "arm".into(),
                    url: None,
                    priority: None,
                    skipped: Some("arch"),
                    reason: Some("it serves arches".into()),
                },
            ],
            ..Found::default()
        };
        let mut tried = vec![Tried {
            at: Some("http://10.0.0.5:81".into()),
            what: Some("manifest".into()),
            outcome: "refused",
            kind: "rollback".into(),
            detail: json!({ "version": 4 }),
            error: "refused".into(),
        }];
        found.annotate(&mut tried);
        assert_eq!(tried.len(), 2);
        assert_eq!(
            (tried[0].outcome, tried[0].kind.as_str()),
            ("skipped", "arch")
        );
        assert_eq!(tried[0].line(), "mDNS \"arm\": it serves arches");
        assert_eq!(
            tried[1].detail["discovered"],
            json!({ "from": "mdns", "name": "hostile", "priority": 1 })
        );
        let plan = BootPlan::default();
        let failure = found.nothing(&plan);
        assert_eq!(failure.kind, "nothing_discovered");
        assert_eq!(failure.detail["timeout_s"], 5);
        assert_eq!(failure.tried.len(), 1);
    }

    #[test]
    fn the_summary_lists_providers_in_the_order_they_are_tried() {
        let heard = |name: &str, url: &str, skipped: Option<&'static str>| Heard {
            from: "mdns",
            name: name.into(),
            url: Some(url.into()),
            priority: Some(0),
            skipped,
            reason: skipped.map(|_| "not for this arch".into()),
        };
        let found = Found {
            interface: "eth0".into(),
            // Heard in this order; tried in priority order.
            heard: vec![
                heard("good", "http://10.0.0.2", None),
                heard("sparc", "http://10.0.0.3", Some("arch")),
                heard("first", "http://10.0.0.1", None),
            ],
            providers: vec![
                ProviderUrl::parse("http://10.0.0.1").unwrap(),
                ProviderUrl::parse("http://10.0.0.2").unwrap(),
            ],
            ..Found::default()
        };
        assert_eq!(
            found.summary(),
            "2 provider(s) on eth0: http://10.0.0.1 (mDNS \"first\"); \
             http://10.0.0.2 (mDNS \"good\"); mDNS \"sparc\" skipped: not for this arch"
        );
    }
}
