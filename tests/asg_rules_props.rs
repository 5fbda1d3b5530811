//! Property tests of the ASG rule parser on hostile input: arbitrary text never panics it; what
//! it accepts is well formed; every error names a rule index and a field; lists with spaces parse
//! as their items.

use netman::asg::{parse_rules, parse_rules_lenient, Traffic};
use proptest::prelude::*;

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("tcp".to_string()),
        Just("udp".to_string()),
        Just("icmp".to_string()),
        Just("all".to_string()),
        Just("10.0.0.1".to_string()),
        Just("10.0.0.0/8".to_string()),
        Just("10.0.0.9-10.0.0.1".to_string()),
        Just("80, 443".to_string()),
        Just("1-65535".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just(",".to_string()),
        Just(" ".to_string()),
        "[ -~]{0,12}",
    ]
}

fn rule_like() -> impl Strategy<Value = String> {
    (
        fragment(),
        fragment(),
        fragment(),
        prop_oneof![Just("-1"), Just("0"), Just("8"), Just("255"), Just("256"), Just("\"x\"")],
        any::<bool>(),
    )
        .prop_map(|(p, d, ports, n, log)| {
            format!(
                r#"{{"protocol":{},"destination":{},"ports":{},"type":{n},"code":{n},"log":{log}}}"#,
                serde_json::to_string(&p).unwrap(),
                serde_json::to_string(&d).unwrap(),
                serde_json::to_string(&ports).unwrap(),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse_rules(&text);
        let _ = parse_rules_lenient(&text);
    }

    #[test]
    fn accepted_rules_are_well_formed_and_errors_are_located(
        rules in proptest::collection::vec(rule_like(), 0..6)
    ) {
        let doc = format!("[{}]", rules.join(","));
        let (good, bad) = parse_rules_lenient(&doc).expect("an array is a rule array");
        prop_assert_eq!(good.len() + bad.len(), rules.len());
        for e in &bad {
            let i = e.index.expect("a rule's error names its index");
            prop_assert!(i < rules.len());
            let prefix = format!("rules[{i}].{}: ", e.field);
            prop_assert!(e.to_string().starts_with(&prefix), "{}", e);
        }
        for r in &good {
            prop_assert!(!r.destinations.is_empty());
            for d in &r.destinations {
                prop_assert!(d.start <= d.end);
            }
            if let Traffic::Tcp(ports) | Traffic::Udp(ports) = &r.traffic {
                prop_assert!(!ports.is_empty());
                for p in ports {
                    prop_assert!(p.start >= 1 && p.start <= p.end);
                }
            }
        }
        match parse_rules(&doc) {
            Ok(all) => prop_assert!(bad.is_empty() && all == good),
            Err(first) => prop_assert_eq!(Some(&first), bad.first()),
        }
    }

    #[test]
    fn port_lists_with_spaces_parse_as_their_items(
        ports in proptest::collection::vec(1u16..=65535, 1..8),
        pad in "[ ]{0,3}"
    ) {
        let list = ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(&format!(",{pad}"));
        let doc = format!(r#"[{{"protocol":"tcp","destination":"10.0.0.1","ports":"{pad}{list}{pad}"}}]"#);
        let rules = parse_rules(&doc).unwrap();
        let Traffic::Tcp(parsed) = &rules[0].traffic else { panic!("tcp") };
        let starts: Vec<u16> = parsed.iter().map(|p| p.start).collect();
        prop_assert_eq!(starts, ports);
    }
}
