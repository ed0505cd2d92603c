//! The documented value formats of Alibaba Cloud ECI pod annotations, so
//! that `validate` catches a profile whose annotations ECI would reject or
//! silently ignore.

use std::net::{IpAddr, Ipv4Addr};

/// The prefix of ECI annotations.
pub const PREFIX: &str = "k8s.aliyun.com/";

/// The annotation ECI reads the vSwitches from (set from `vSwitchIds`).
pub const VSWITCH: &str = "k8s.aliyun.com/eci-vswitch";
/// The annotation ECI reads the security groups from (set from `securityGroupId`).
pub const SECURITY_GROUP: &str = "k8s.aliyun.com/eci-security-group";

/// What the format table says about one annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// A known ECI annotation with a valid value.
    Valid,
    /// A known ECI annotation with a value outside its documented format.
    Invalid(String),
    /// An annotation ECI sets itself; a profile must not set it.
    SetByEci,
    /// A `k8s.aliyun.com/` annotation this table does not know.
    UnknownEci,
    /// Not an ECI annotation.
    NotEci,
}

type Check = fn(&str) -> Result<(), String>;

/// Names (after `k8s.aliyun.com/`) of annotations that ECI sets itself.
const SET_BY_ECI: &[&str] = &[
    "eci-request-id",
    "eci-instance-id",
    "eci-instance-spec",
    "eci-instance-compute-category",
    "allocated-eipInstanceId",
    "allocated-eipAddress",
    "allocated-ipv6Address",
    "eci-created-by-template",
    "eni-instance-id",
    "eci-vpc",
    "eci-matched-image-cache",
    "eci-schedule-result",
];

/// Known annotations (full keys) and their checks.
const FORMATS: &[(&str, Check)] = &[
    ("k8s.aliyun.com/eci-use-specs", use_specs),
    ("k8s.aliyun.com/eci-instance-type", ecs_instance_type),
    ("k8s.aliyun.com/eci-spot-strategy", |v| {
        one_of(v, &["SpotAsPriceGo", "SpotWithPriceLimit"])
    }),
    ("k8s.aliyun.com/eci-spot-price-limit", price),
    ("k8s.aliyun.com/eci-spot-duration", non_negative_integer),
    ("k8s.aliyun.com/eci-spot-fallback", boolean),
    ("k8s.aliyun.com/eci-auto-imc", boolean),
    ("k8s.aliyun.com/imc-perfect-match", boolean),
    ("k8s.aliyun.com/eci-with-eip", boolean),
    ("k8s.aliyun.com/eci-enable-ipv6", boolean),
    ("k8s.aliyun.com/eci-ipv6-bandwidth-enable", boolean),
    ("k8s.aliyun.com/eci-fixed-ip", boolean),
    ("k8s.aliyun.com/eci-eviction-enable", boolean),
    ("k8s.aliyun.com/eci-sls-enable", boolean),
    ("k8s.aliyun.com/eci-image-cache", boolean),
    ("k8s.aliyun.com/eci-vswitch", |v| {
        id_list(v, "vsw-", usize::MAX)
    }),
    ("k8s.aliyun.com/eci-schedule-strategy", |v| {
        one_of(v, &["VSwitchOrdered", "VSwitchRandom"])
    }),
    ("k8s.aliyun.com/eci-security-group", |v| {
        id_list(v, "sg-", 5)
    }),
    ("k8s.aliyun.com/eci-eip-instanceid", |v| id(v, "eip-")),
    ("k8s.aliyun.com/eip-bandwidth", non_negative_integer),
    ("k8s.aliyun.com/eip-isp", |v| one_of(v, &["BGP", "BGP_PRO"])),
    ("k8s.aliyun.com/eip-internet-charge-type", |v| {
        one_of(v, &["PayByBandwidth", "PayByTraffic"])
    }),
    ("k8s.aliyun.com/eip-common-bandwidth-package-id", |v| {
        id(v, "cbwp-")
    }),
    ("k8s.aliyun.com/eip-public-ip-address-pool-id", |v| {
        id(v, "pippool-")
    }),
    ("k8s.aliyun.com/eci-instance-family", |v| {
        list(v, ecs_family)
    }),
    ("k8s.aliyun.com/eci-instance-generation", |v| {
        list(v, non_negative_integer)
    }),
    ("k8s.aliyun.com/eci-compute-category", |v| {
        list(v, |c| one_of(c, &["economy", "general"]))
    }),
    ("k8s.aliyun.com/eci-gpu-driver-version", gpu_driver_version),
    ("k8s.aliyun.com/eci-privatepool-matchcriteria", |v| {
        one_of(v, &["Open", "Target"])
    }),
    ("k8s.aliyun.com/eci-privatepool-id", |v| id(v, "eap-")),
    ("k8s.aliyun.com/eci-fail-strategy", |v| {
        one_of(v, &["fail-back", "fail-over", "fail-fast"])
    }),
    ("k8s.aliyun.com/eci-max-pending-minute", max_pending_minute),
    ("k8s.aliyun.com/eci-custom-hosts", custom_hosts),
    ("k8s.aliyun.com/eci-custom-tags", custom_tags),
    ("k8s.aliyun.com/eci-ram-role-name", ram_role_name),
    (
        "k8s.aliyun.com/imc-match-count-request",
        non_negative_integer,
    ),
    ("k8s.aliyun.com/eci-imc-id", |v| id(v, "imc-")),
    ("k8s.aliyun.com/acr-instance-ids", |v| {
        list(v, acr_instance_id)
    }),
    ("k8s.aliyun.com/plain-http-registry", |v| list(v, host_port)),
    ("k8s.aliyun.com/insecure-registry", |v| list(v, host_port)),
    ("k8s.aliyun.com/eci-data-cache-bucket", non_empty),
    ("k8s.aliyun.com/eci-data-cache-pl", |v| {
        one_of(v, &["PL0", "PL1", "PL2", "PL3"])
    }),
    (
        "k8s.aliyun.com/eci-data-cache-provisionedIops",
        non_negative_integer,
    ),
    ("k8s.aliyun.com/eci-data-cache-burstingEnabled", boolean),
    ("k8s.aliyun.com/eci-ipv6-bandwidth", bandwidth),
    ("k8s.aliyun.com/eci-private-ip-address", ipv4),
    (
        "k8s.aliyun.com/eci-fixed-ip-retain-hour",
        non_negative_integer,
    ),
    ("kubernetes.io/ingress-bandwidth", bandwidth),
    ("kubernetes.io/egress-bandwidth", bandwidth),
    ("k8s.aliyun.com/eci-custom-dnsconfig", custom_dns_config),
    (
        "k8s.aliyun.com/eci-extra-ephemeral-storage",
        positive_quantity,
    ),
    ("k8s.aliyun.com/eci-ephemeral-storage-options", json_object),
    ("k8s.aliyun.com/eci-ntp-server", |v| list(v, ip_address)),
    ("k8s.aliyun.com/eci-core-pattern", absolute_path),
    ("k8s.aliyun.com/eci-resource-group-id", |v| id(v, "rg-")),
];

/// Checks annotation `key` with `value` against the documented ECI formats.
pub fn check(key: &str, value: &str) -> Finding {
    if let Some((_, check)) = FORMATS.iter().find(|(k, _)| *k == key) {
        return match check(value) {
            Ok(()) => Finding::Valid,
            Err(why) => Finding::Invalid(why),
        };
    }
    match key.strip_prefix(PREFIX) {
        Some(name) if SET_BY_ECI.contains(&name) => Finding::SetByEci,
        Some(_) => Finding::UnknownEci,
        None => Finding::NotEci,
    }
}

fn one_of(v: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(format!("must be one of {}", allowed.join(", ")))
    }
}

fn boolean(v: &str) -> Result<(), String> {
    one_of(v, &["true", "false"])
}

fn non_empty(v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(())
    }
}

fn non_negative_integer(v: &str) -> Result<(), String> {
    if !v.is_empty() && v.len() <= 18 && v.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err("must be a whole number (e.g. \"5\")".into())
    }
}

fn max_pending_minute(v: &str) -> Result<(), String> {
    match v.parse::<u32>() {
        Ok(n) if (10..=1440).contains(&n) && non_negative_integer(v).is_ok() => Ok(()),
        _ => Err("must be a whole number of minutes from 10 to 1440".into()),
    }
}

/// A decimal with at most 3 decimal places, e.g. `0.25`.
fn price(v: &str) -> Result<(), String> {
    let err =
        || Err("must be a decimal price with at most 3 decimal places (e.g. \"0.25\")".into());
    let (whole, fraction) = v.split_once('.').unwrap_or((v, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 3 {
        return err();
    }
    if v.contains('.') && fraction.is_empty() {
        return err();
    }
    Ok(())
}

/// Applies `item` to every element of a comma-separated list (no empty elements).
fn list(v: &str, item: impl Fn(&str) -> Result<(), String>) -> Result<(), String> {
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    for part in v.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err("has an empty item in its comma-separated list".into());
        }
        item(part).map_err(|why| format!("item {part:?} {why}"))?;
    }
    Ok(())
}

/// A resource ID such as `vsw-2ze0abc`: the prefix then lowercase letters and digits.
fn id(v: &str, prefix: &str) -> Result<(), String> {
    match v.strip_prefix(prefix) {
        Some(rest)
            if !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "must be an ID of the form {prefix}<letters and digits>"
        )),
    }
}

fn id_list(v: &str, prefix: &str, most: usize) -> Result<(), String> {
    list(v, |item| id(item, prefix))?;
    let count = v.split(',').count();
    if count > most {
        return Err(format!("must list at most {most} IDs, not {count}"));
    }
    Ok(())
}

/// `ecs.<family>.<size>`, e.g. `ecs.c6.large`, `ecs.gn6i-c4g1.xlarge`.
fn ecs_instance_type(v: &str) -> Result<(), String> {
    let mut parts = v.split('.');
    let ok = parts.next() == Some("ecs")
        && parts.next().is_some_and(is_ecs_word)
        && parts.next().is_some_and(is_ecs_word)
        && parts.next().is_none();
    if ok {
        Ok(())
    } else {
        Err("must be an ECS instance type such as ecs.c6.large".into())
    }
}

/// `ecs.<family>`, e.g. `ecs.c6`.
fn ecs_family(v: &str) -> Result<(), String> {
    match v.strip_prefix("ecs.") {
        Some(family) if is_ecs_word(family) => Ok(()),
        _ => Err("must be an ECS instance family such as ecs.c6".into()),
    }
}

fn is_ecs_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Each item `<cpu>-<memory>Gi` (e.g. `2-4Gi`, `0.5-1Gi`) or an ECS instance type.
fn use_specs(v: &str) -> Result<(), String> {
    list(v, |item| {
        if item.starts_with("ecs.") {
            return ecs_instance_type(item);
        }
        let spec = item
            .strip_suffix("Gi")
            .and_then(|s| s.split_once('-'))
            .filter(|(cpu, mem)| is_positive_decimal(cpu) && is_positive_decimal(mem));
        match spec {
            Some(_) => Ok(()),
            None => Err(
                "must be <cpu>-<memory>Gi (e.g. 2-4Gi) or an ECS type (e.g. ecs.c6.large)".into(),
            ),
        }
    })
}

fn is_positive_decimal(s: &str) -> bool {
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    !whole.is_empty()
        && digits(whole)
        && digits(fraction)
        && !(s.contains('.') && fraction.is_empty())
        && s.parse::<f64>().is_ok_and(|f| f > 0.0)
}

/// `<driver>=<version>`, e.g. `tesla=525.85.12`.
fn gpu_driver_version(v: &str) -> Result<(), String> {
    match v.split_once('=') {
        Some((driver, version))
            if is_ecs_word(driver)
                && !version.is_empty()
                && version.bytes().all(|b| b.is_ascii_digit() || b == b'.') =>
        {
            Ok(())
        }
        _ => Err("must be <driver>=<version> (e.g. tesla=525.85.12)".into()),
    }
}

/// A JSON array of `{"host": ..., "ip": ...}`.
fn custom_hosts(v: &str) -> Result<(), String> {
    let err = || "must be a JSON array of {\"host\": ..., \"ip\": ...} objects".to_string();
    let hosts: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(v).map_err(|_| err())?;
    for entry in &hosts {
        let host = entry.get("host").and_then(|h| h.as_str());
        let ip = entry.get("ip").and_then(|i| i.as_str());
        match (host, ip) {
            (Some(h), Some(ip)) if !h.is_empty() && ip.parse::<IpAddr>().is_ok() => {}
            _ => return Err(err()),
        }
    }
    Ok(())
}

/// `key:value` pairs joined by `,`, at most 3.
fn custom_tags(v: &str) -> Result<(), String> {
    list(v, |item| match item.split_once(':') {
        Some((k, _)) if !k.is_empty() => Ok(()),
        _ => Err("must be key:value".into()),
    })?;
    if v.split(',').count() > 3 {
        return Err("must list at most 3 key:value tags".into());
    }
    Ok(())
}

fn ram_role_name(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err("must be a RAM role name (letters, digits, '.', '-', '_', at most 64)".into())
    }
}

/// `cri-...`, optionally prefixed `<region>:`.
fn acr_instance_id(v: &str) -> Result<(), String> {
    let id_part = match v.split_once(':') {
        Some((region, rest)) if is_ecs_word(region) => rest,
        Some(_) => return Err("must be [region:]cri-<id>".into()),
        None => v,
    };
    id(id_part, "cri-")
}

/// `host[:port]`.
fn host_port(v: &str) -> Result<(), String> {
    let (host, port) = match v.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (v, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err("must be host[:port]".into())
    }
}

/// A bandwidth such as `100M` (a number with an optional K, M or G suffix).
fn bandwidth(v: &str) -> Result<(), String> {
    let number = v.trim_end_matches(['K', 'M', 'G', 'k']);
    if v.len() - number.len() <= 1 && is_positive_decimal(number) {
        Ok(())
    } else {
        Err("must be a bandwidth such as 100M".into())
    }
}

fn ipv4(v: &str) -> Result<(), String> {
    v.parse::<Ipv4Addr>()
        .map(|_| ())
        .map_err(|_| "must be an IPv4 address".into())
}

fn ip_address(v: &str) -> Result<(), String> {
    v.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| "must be an IP address".into())
}

fn absolute_path(v: &str) -> Result<(), String> {
    if v.starts_with('/') {
        Ok(())
    } else {
        Err("must be an absolute path".into())
    }
}

fn json_object(v: &str) -> Result<(), String> {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(v)
        .map(|_| ())
        .map_err(|_| "must be a JSON object".into())
}

/// A JSON object with only `nameservers`, `searches` and `options`.
fn custom_dns_config(v: &str) -> Result<(), String> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(v)
        .map_err(|_| "must be a JSON object with nameservers, searches, options".to_string())?;
    match object
        .keys()
        .find(|k| !matches!(k.as_str(), "nameservers" | "searches" | "options"))
    {
        Some(k) => Err(format!(
            "has unknown field {k:?} (expected nameservers, searches, options)"
        )),
        None => Ok(()),
    }
}

/// A positive Kubernetes quantity, e.g. `50Gi`.
fn positive_quantity(v: &str) -> Result<(), String> {
    let err = || Err("must be a positive Kubernetes quantity such as 50Gi".into());
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    let mut number = v;
    if let Some(s) = SUFFIXES.iter().find(|s| v.ends_with(*s)) {
        number = &v[..v.len() - s.len()];
    } else if let Some(i) = v.find(['e', 'E']) {
        let exponent = &v[i + 1..];
        let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        if exponent.is_empty() || !exponent.bytes().all(|b| b.is_ascii_digit()) {
            return err();
        }
        number = &v[..i];
    }
    let number = number.strip_prefix('+').unwrap_or(number);
    if is_positive_decimal(number) {
        Ok(())
    } else {
        err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(key: &str, value: &str) -> bool {
        check(key, value) == Finding::Valid
    }

    #[test]
    fn use_specs_formats() {
        let k = "k8s.aliyun.com/eci-use-specs";
        for v in [
            "2-4Gi",
            "0.5-1Gi",
            "ecs.c6.large",
            "2-4Gi,ecs.gn6i-c4g1.xlarge",
        ] {
            assert!(valid(k, v), "{v}");
        }
        for v in ["", "2-4", "2-4G", "ecs.c6", "four-8Gi", "2-4Gi,", "0-1Gi"] {
            assert!(!valid(k, v), "{v}");
        }
    }

    #[test]
    fn enumerations_and_numbers() {
        assert!(valid("k8s.aliyun.com/eci-spot-strategy", "SpotAsPriceGo"));
        assert!(!valid("k8s.aliyun.com/eci-spot-strategy", "spotaspricego"));
        assert!(valid("k8s.aliyun.com/eci-spot-price-limit", "0.125"));
        assert!(!valid("k8s.aliyun.com/eci-spot-price-limit", "0.1255"));
        assert!(!valid("k8s.aliyun.com/eci-spot-price-limit", "1."));
        assert!(valid("k8s.aliyun.com/eci-with-eip", "true"));
        assert!(!valid("k8s.aliyun.com/eci-with-eip", "yes"));
        assert!(valid("k8s.aliyun.com/eci-max-pending-minute", "240"));
        assert!(!valid("k8s.aliyun.com/eci-max-pending-minute", "5"));
        assert!(!valid("k8s.aliyun.com/eci-max-pending-minute", "+20"));
    }

    #[test]
    fn id_lists() {
        let sg = "k8s.aliyun.com/eci-security-group";
        assert!(valid(sg, "sg-abc123"));
        assert!(valid(sg, "sg-a,sg-b,sg-c,sg-d,sg-e"));
        assert!(!valid(sg, "sg-a,sg-b,sg-c,sg-d,sg-e,sg-f"));
        assert!(!valid(sg, "vsw-abc"));
        assert!(valid(VSWITCH, "vsw-a1,vsw-b2"));
        assert!(!valid(VSWITCH, "vsw-a1,,vsw-b2"));
    }

    #[test]
    fn structured_values() {
        assert!(valid(
            "k8s.aliyun.com/eci-custom-hosts",
            r#"[{"host":"example.com","ip":"10.0.0.1"}]"#
        ));
        assert!(!valid(
            "k8s.aliyun.com/eci-custom-hosts",
            r#"[{"host":"x"}]"#
        ));
        assert!(valid("k8s.aliyun.com/eci-extra-ephemeral-storage", "50Gi"));
        assert!(valid("k8s.aliyun.com/eci-extra-ephemeral-storage", "1e3"));
        assert!(!valid("k8s.aliyun.com/eci-extra-ephemeral-storage", "50GB"));
        assert!(!valid("k8s.aliyun.com/eci-extra-ephemeral-storage", "0Gi"));
        assert!(valid("kubernetes.io/ingress-bandwidth", "40M"));
        assert!(valid(
            "k8s.aliyun.com/eci-ntp-server",
            "100.100.5.1,100.100.5.2"
        ));
        assert!(valid(
            "k8s.aliyun.com/acr-instance-ids",
            "cn-beijing:cri-abc,cri-def"
        ));
        assert!(valid(
            "k8s.aliyun.com/insecure-registry",
            "harbor.example.com:5000"
        ));
    }

    #[test]
    fn ownership_of_keys() {
        assert_eq!(
            check("k8s.aliyun.com/eci-instance-id", "x"),
            Finding::SetByEci
        );
        assert_eq!(
            check("k8s.aliyun.com/eci-new-thing", "x"),
            Finding::UnknownEci
        );
        assert_eq!(check("example.com/owner", "x"), Finding::NotEci);
    }
}
