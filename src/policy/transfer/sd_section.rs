//! The export document's service discovery sections, `internal_domains` and `internal_routes`,
//! checked as the external API checks a map request: names as stored (lowercase, valid labels),
//! every route under a domain of the document, no name that is itself a domain, nothing twice.

use super::document::Problems;
use crate::api::sd::InternalRoute;
use crate::policy::sd::validate;
use std::collections::HashSet;

pub(super) fn validate(
    domains: Option<&[String]>,
    routes: Option<&[InternalRoute]>,
    problems: &mut Problems,
) {
    let (domains, routes) = match (domains, routes) {
        (None, None) => return,
        (Some(d), Some(r)) => (d, r),
        _ => {
            problems.push(
                "internal_domains and internal_routes come together (both or neither)".into(),
            );
            return;
        }
    };
    let mut known: HashSet<&str> = HashSet::new();
    for (i, d) in domains.iter().enumerate() {
        let at = format!("internal_domains[{i}]");
        match validate::domain(d) {
            Ok(canonical) if canonical == *d => {}
            Ok(canonical) => problems.push(format!(
                "{at} {d:?} is not as stored (lowercase, no trailing dot: {canonical:?})"
            )),
            Err(e) => problems.push(format!("{at}: {e}")),
        }
        if !known.insert(d) {
            problems.push(format!("{at} {d:?} appears twice"));
        }
    }
    let mut seen: HashSet<&InternalRoute> = HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        let at = format!("internal_routes[{i}]");
        if let Err(e) = validate::app_guid(&r.app_guid) {
            problems.push(format!("{at}: {e}"));
        }
        match validate::host(&r.host) {
            Ok(canonical) if canonical == r.host => {}
            Ok(canonical) => problems.push(format!(
                "{at}.host {:?} is not as stored (lowercase: {canonical:?})",
                r.host
            )),
            Err(e) => problems.push(format!("{at}: {e}")),
        }
        let name = r.name();
        if !known.contains(r.domain.as_str()) {
            problems.push(format!(
                "{at}.domain {:?} is not in internal_domains",
                r.domain
            ));
        } else if known.contains(name.as_str()) {
            problems.push(format!("{at}: name {name:?} is itself an internal domain"));
        }
        if name.len() > 253 {
            problems.push(format!("{at}: name {name:?} is longer than 253 characters"));
        }
        if !seen.insert(r) {
            problems.push(format!("{at} appears twice"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Routes<'a> = Option<Vec<(&'a str, &'a str, &'a str)>>;

    fn problems_of(domains: Option<Vec<&str>>, routes: Routes<'_>) -> Vec<String> {
        let domains: Option<Vec<String>> =
            domains.map(|d| d.into_iter().map(String::from).collect());
        let routes: Option<Vec<InternalRoute>> = routes.map(|r| {
            r.into_iter()
                .map(|(app, host, domain)| InternalRoute::new(app, host, domain))
                .collect()
        });
        let mut problems = Problems::default();
        validate(domains.as_deref(), routes.as_deref(), &mut problems);
        problems.into_result().err().unwrap_or_default()
    }

    #[test]
    fn good_sections_pass_and_absent_ones_too() {
        assert!(problems_of(None, None).is_empty());
        assert!(problems_of(
            Some(vec!["apps.internal", "svc.internal"]),
            Some(vec![
                ("a", "backend", "apps.internal"),
                ("b", "backend", "apps.internal")
            ])
        )
        .is_empty());
    }

    #[test]
    fn each_bad_section_is_named() {
        let cases: Vec<(Option<Vec<&str>>, Routes<'_>, &str)> = vec![
            (Some(vec!["apps.internal"]), None, "both or neither"),
            (
                Some(vec!["Apps.Internal"]),
                Some(vec![]),
                "internal_domains[0]",
            ),
            (Some(vec!["internal"]), Some(vec![]), "internal_domains[0]"),
            (Some(vec!["a.b", "a.b"]), Some(vec![]), "appears twice"),
            (
                Some(vec!["apps.internal"]),
                Some(vec![("a", "x", "other.internal")]),
                "not in internal_domains",
            ),
            (
                Some(vec!["apps.internal", "b.apps.internal"]),
                Some(vec![("a", "b", "apps.internal")]),
                "itself an internal domain",
            ),
            (
                Some(vec!["apps.internal"]),
                Some(vec![("a", "Backend", "apps.internal")]),
                "internal_routes[0].host",
            ),
            (
                Some(vec!["apps.internal"]),
                Some(vec![("", "x", "apps.internal")]),
                "internal_routes[0]: missing app_guid",
            ),
            (
                Some(vec!["apps.internal"]),
                Some(vec![
                    ("a", "x", "apps.internal"),
                    ("a", "x", "apps.internal"),
                ]),
                "internal_routes[1] appears twice",
            ),
        ];
        for (domains, routes, want) in cases {
            let got = problems_of(domains.clone(), routes.clone());
            assert!(
                got.iter().any(|p| p.contains(want)),
                "{domains:?} {routes:?}: {got:?} lacks {want:?}"
            );
        }
    }
}
