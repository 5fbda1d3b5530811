//! A container IP asked for by the runtime: `CNI_ARGS` `IP=<addr>` (the convention of the
//! reference IPAM plugins) or the `ips` capability (`runtimeConfig.ips`, CIDR strings). At most
//! one IPv4 address; it must be a usable address of the cell's subnet. Anything else is refused
//! (never ignored): a container that asked for an address and got another would break whoever
//! asked.

use ipnet::Ipv4Net;
use serde_json::Value;
use std::net::Ipv4Addr;

/// Why a requested IP is refused (the details of the CNI error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The address in `text` (`a.b.c.d` or `a.b.c.d/len`).
fn parse(text: &str) -> Result<Ipv4Addr, Refused> {
    let host = text.split_once('/').map_or(text, |(h, _)| h);
    host.trim()
        .parse()
        .map_err(|_| Refused(format!("{text:?} is not an IPv4 address")))
}

/// Every IP asked for, as text: `IP=` (comma-separated values allowed) and `runtimeConfig.ips`.
fn asked(
    args: &[(String, String)],
    runtime_config: Option<&Value>,
) -> Result<Vec<String>, Refused> {
    let mut out: Vec<String> = args
        .iter()
        .filter(|(k, _)| k == "IP")
        .flat_map(|(_, v)| v.split(','))
        .map(str::to_string)
        .collect();
    match runtime_config.and_then(|rc| rc.get("ips")) {
        None | Some(Value::Null) => {}
        Some(Value::Array(ips)) => {
            for ip in ips {
                let text = ip
                    .as_str()
                    .ok_or_else(|| Refused(format!("runtimeConfig.ips: {ip} is not a string")))?;
                out.push(text.to_string());
            }
        }
        Some(other) => return Err(Refused(format!("runtimeConfig.ips: {other} is not a list"))),
    }
    Ok(out)
}

/// The one IP the runtime asked for, if any (not yet checked against a subnet).
pub fn requested(
    args: &[(String, String)],
    runtime_config: Option<&Value>,
) -> Result<Option<Ipv4Addr>, Refused> {
    match asked(args, runtime_config)?.as_slice() {
        [] => Ok(None),
        [one] => parse(one).map(Some),
        many => Err(Refused(format!(
            "more than one IP requested ({}); this plugin gives one IPv4 address",
            many.join(", ")
        ))),
    }
}

/// Checks that `ip` is a usable address of `subnet` (not its network or broadcast address).
pub fn check_in(ip: Ipv4Addr, subnet: Ipv4Net) -> Result<(), Refused> {
    if !subnet.contains(&ip) {
        return Err(Refused(format!(
            "{ip} is not in this cell's subnet {subnet}"
        )));
    }
    if ip == subnet.network() || ip == subnet.broadcast() {
        return Err(Refused(format!(
            "{ip} is the network or broadcast address of {subnet}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn args(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn one_ip_from_either_source() {
        let ip: Ipv4Addr = "10.0.0.5".parse().unwrap();
        assert_eq!(requested(&args(&[("IgnoreUnknown", "1")]), None), Ok(None));
        assert_eq!(requested(&args(&[("IP", "10.0.0.5")]), None), Ok(Some(ip)));
        let rc = json!({"ips": ["10.0.0.5/24"], "portMappings": []});
        assert_eq!(requested(&[], Some(&rc)), Ok(Some(ip)));
        assert_eq!(requested(&[], Some(&json!({"ips": []}))), Ok(None));
        for (a, rc, want) in [
            (vec![("IP", "10.0.0.5,10.0.0.6")], None, "more than one"),
            (
                vec![("IP", "10.0.0.5")],
                Some(json!({"ips": ["10.0.0.6/24"]})),
                "more than one",
            ),
            (vec![("IP", "fd00::1")], None, "not an IPv4 address"),
            (vec![("IP", "")], None, "not an IPv4 address"),
            (vec![], Some(json!({"ips": [5]})), "not a string"),
            (vec![], Some(json!({"ips": "10.0.0.5"})), "not a list"),
        ] {
            let e = requested(&args(&a), rc.as_ref()).unwrap_err();
            assert!(e.0.contains(want), "{a:?} {rc:?}: {e}");
        }
    }

    #[test]
    fn usable_addresses_of_the_subnet_only() {
        let subnet: Ipv4Net = "10.0.0.0/29".parse().unwrap();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(check_in(ip("10.0.0.1"), subnet).is_ok());
        assert!(check_in(ip("10.0.0.6"), subnet).is_ok());
        for bad in ["10.0.0.0", "10.0.0.7", "10.0.0.8", "192.0.2.1"] {
            assert!(check_in(ip(bad), subnet).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_args_give_an_answer_not_a_panic(v in ".{0,40}", rc in prop::option::of(".{0,40}")) {
            let rc = rc.map(|s| json!({"ips": [s]}));
            let _ = requested(&args(&[("IP", &v)]), rc.as_ref());
        }
    }
}
