//! Counters of a resolver, as Prometheus families the daemon registers (labels are static
//! strings, so counting a query allocates nothing).

use crate::metrics::Registrar;
use hickory_proto::op::ResponseCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How a query arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// What a query was, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A name under an internal domain, answered from the table.
    Internal,
    /// Any other name, sent to the upstream resolvers.
    Forwarded,
    /// Not a query this resolver answers (malformed, unsupported opcode, a response, ...).
    Invalid,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Internal => "internal",
            Kind::Forwarded => "forwarded",
            Kind::Invalid => "invalid",
        }
    }
}

/// What happened to one attempt at one upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardOutcome {
    Answered,
    /// Answered SERVFAIL, REFUSED or NOTIMP: the next upstream is tried.
    Rejected,
    Timeout,
    /// Connection or socket error.
    Error,
    /// An answer that does not parse or does not match the question.
    BadReply,
}

impl ForwardOutcome {
    fn as_str(self) -> &'static str {
        match self {
            ForwardOutcome::Answered => "answered",
            ForwardOutcome::Rejected => "rejected",
            ForwardOutcome::Timeout => "timeout",
            ForwardOutcome::Error => "error",
            ForwardOutcome::BadReply => "bad_reply",
        }
    }
}

/// Something that went wrong in the server itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// A worker panicked while handling a query; the worker lives on.
    Panic,
    /// The queue to the forwarding workers was full: answered SERVFAIL.
    ForwardQueueFull,
    /// A TCP connection was closed at once because all connection slots were taken.
    TcpConnectionLimit,
    /// A TCP client took longer than its deadline to send a query: connection closed.
    TcpDeadline,
    /// Sending a reply failed.
    Send,
    /// Receiving on a socket failed (other than a timeout).
    Receive,
}

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Failure::Panic => "panic",
            Failure::ForwardQueueFull => "forward_queue_full",
            Failure::TcpConnectionLimit => "tcp_connection_limit",
            Failure::TcpDeadline => "tcp_deadline",
            Failure::Send => "send",
            Failure::Receive => "receive",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    transport: &'static str,
    kind: &'static str,
    rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardLabels {
    transport: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    reason: &'static str,
}

/// The label of an answer's response code; `dropped` for a query that got no answer.
pub fn rcode_label(rcode: Option<ResponseCode>) -> &'static str {
    match rcode {
        None => "dropped",
        Some(ResponseCode::NoError) => "NOERROR",
        Some(ResponseCode::FormErr) => "FORMERR",
        Some(ResponseCode::ServFail) => "SERVFAIL",
        Some(ResponseCode::NXDomain) => "NXDOMAIN",
        Some(ResponseCode::NotImp) => "NOTIMP",
        Some(ResponseCode::Refused) => "REFUSED",
        Some(ResponseCode::BADVERS) => "BADVERS",
        Some(_) => "other",
    }
}

/// Clones share the counters.
#[derive(Clone, Default)]
pub struct DnsMetrics {
    queries: Family<QueryLabels, Counter>,
    forwards: Family<ForwardLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    routes: Gauge,
    instances: Gauge,
}

impl DnsMetrics {
    /// Registers the families as `<prefix>_queries`, `<prefix>_forward_attempts`,
    /// `<prefix>_failures`, `<prefix>_table_routes`, `<prefix>_table_instances`.
    pub fn register(registry: &mut Registry, prefix: &str) -> DnsMetrics {
        let mut r = Registrar::new(registry, prefix);
        DnsMetrics {
            queries: r.metric(
                "queries",
                "DNS queries answered, by transport, kind (internal, forwarded, invalid) and rcode",
            ),
            forwards: r.metric(
                "forward_attempts",
                "Queries sent to an upstream resolver, by transport and outcome",
            ),
            failures: r.metric("failures", "Failures inside the resolver, by reason"),
            routes: r.metric("table_routes", "Internal route names in the table in force"),
            instances: r.metric("table_instances", "Instances in the table in force"),
        }
    }

    pub fn query(&self, transport: Transport, kind: Kind, rcode: Option<ResponseCode>) {
        self.queries
            .get_or_create(&QueryLabels {
                transport: transport.as_str(),
                kind: kind.as_str(),
                rcode: rcode_label(rcode),
            })
            .inc();
    }

    pub fn forward(&self, transport: Transport, outcome: ForwardOutcome) {
        self.forwards
            .get_or_create(&ForwardLabels {
                transport: transport.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub fn failure(&self, failure: Failure) {
        self.failures
            .get_or_create(&FailureLabels {
                reason: failure.as_str(),
            })
            .inc();
    }

    pub fn table(&self, routes: usize, instances: usize) {
        self.routes.set(routes as i64);
        self.instances.set(instances as i64);
    }

    /// Queries counted so far with these labels; `rcode` as in [`rcode_label`].
    pub fn queries(&self, transport: Transport, kind: Kind, rcode: &'static str) -> u64 {
        self.queries
            .get_or_create(&QueryLabels {
                transport: transport.as_str(),
                kind: kind.as_str(),
                rcode,
            })
            .get()
    }

    pub fn forwards(&self, transport: Transport, outcome: ForwardOutcome) -> u64 {
        self.forwards
            .get_or_create(&ForwardLabels {
                transport: transport.as_str(),
                outcome: outcome.as_str(),
            })
            .get()
    }

    pub fn failures(&self, failure: Failure) -> u64 {
        self.failures
            .get_or_create(&FailureLabels {
                reason: failure.as_str(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exposed_under_the_prefix() {
        let mut registry = Registry::default();
        let m = DnsMetrics::register(&mut registry, "netman_dns");
        m.query(Transport::Udp, Kind::Internal, Some(ResponseCode::NXDomain));
        m.query(Transport::Tcp, Kind::Invalid, None);
        m.forward(Transport::Udp, ForwardOutcome::Timeout);
        m.failure(Failure::Panic);
        m.table(3, 7);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"netman_dns_queries_total{transport="udp",kind="internal",rcode="NXDOMAIN"} 1"#,
            r#"netman_dns_queries_total{transport="tcp",kind="invalid",rcode="dropped"} 1"#,
            r#"netman_dns_forward_attempts_total{transport="udp",outcome="timeout"} 1"#,
            r#"netman_dns_failures_total{reason="panic"} 1"#,
            "netman_dns_table_routes 3",
            "netman_dns_table_instances 7",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert_eq!(m.queries(Transport::Udp, Kind::Internal, "NXDOMAIN"), 1);
    }
}
