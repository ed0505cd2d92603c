//! Development and bootstrap certificates: a CA and a serving pair signed
//! by it, written with the file names of a cert-manager Secret.

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// `ca.crt`, `tls.crt`, `tls.key`, as in a cert-manager Secret.
pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// How long generated certificates are valid.
pub const VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// A generated CA certificate and a serving pair signed by it (PEM).
#[derive(Clone)]
pub struct Generated {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Generates a CA and a serving certificate for `dns_names` and `ips`,
/// valid from an hour ago for [`VALIDITY`].
pub fn generate(dns_names: &[String], ips: &[IpAddr]) -> Result<Generated, rcgen::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let not_before =
        rcgen::date_time_ymd(1970, 1, 1) + now.saturating_sub(Duration::from_secs(3600));
    let not_after = rcgen::date_time_ymd(1970, 1, 1) + now + VALIDITY;

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "eci-profile CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

    let mut leaf = CertificateParams::new(dns_names.to_vec())?;
    leaf.subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let common_name = dns_names
        .first()
        .cloned()
        .or_else(|| ips.first().map(ToString::to_string))
        .unwrap_or_else(|| "eci-profile".into());
    leaf.distinguished_name
        .push(DnType::CommonName, common_name);
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca)?;
    Ok(Generated {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` into `dir` (created if needed);
/// the key with mode 0600. Returns the CA path.
pub fn write(dir: &Path, generated: &Generated) -> std::io::Result<PathBuf> {
    write_to(&dir.join(CERT_FILE), &dir.join(KEY_FILE), generated)
}

/// Writes the serving certificate to `cert`, the key to `key` (mode 0600)
/// and the CA as `ca.crt` beside the certificate. Returns the CA path.
pub fn write_to(cert: &Path, key: &Path, generated: &Generated) -> std::io::Result<PathBuf> {
    let ca = cert.with_file_name(CA_FILE);
    for parent in [cert.parent(), key.parent()].into_iter().flatten() {
        if !parent.as_os_str().is_empty() {
            fs::create_dir_all(parent)?;
        }
    }
    write_file(&ca, generated.ca_pem.as_bytes(), 0o644)?;
    write_file(cert, generated.cert_pem.as_bytes(), 0o644)?;
    write_file(key, generated.key_pem.as_bytes(), 0o600)?;
    Ok(ca)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(mode);
        let mut file = options.open(path)?;
        // The mode only applies on creation: enforce it on existing files too.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        options.open(path)?.write_all(contents)
    }
}

/// The `notAfter` time of a DER certificate, in seconds since the Unix epoch.
pub fn not_after(der: &[u8]) -> Option<i64> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version?, serial,
    //   signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... } ... }
    let (certificate, _) = der_element(der, 0x30)?;
    let (mut tbs, _) = der_element(certificate, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_skip(tbs)?;
    }
    for _ in 0..3 {
        tbs = der_skip(tbs)?; // serialNumber, signature, issuer
    }
    let (validity, _) = der_element(tbs, 0x30)?;
    let not_before_rest = der_skip(validity)?;
    let tag = *not_before_rest.first()?;
    let (time, _) = der_element(not_before_rest, tag)?;
    parse_time(tag, std::str::from_utf8(time).ok()?)
}

/// The content of the element at the start of `input` if its tag is `tag`, and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)? as usize;
    let (length, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let length = input
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (length, 2 + n)
    };
    let content = input.get(header..header + length)?;
    Some((content, &input[header + length..]))
}

fn der_skip(input: &[u8]) -> Option<&[u8]> {
    der_element(input, *input.first()?).map(|(_, rest)| rest)
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18).
fn parse_time(tag: u8, s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(parse_time(0x17, "491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_time(0x18, "20500101000000Z"), Some(2_524_608_000));
    }

    #[test]
    fn generated_certificate_expires_after_the_validity() {
        let g = generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()]).unwrap();
        let der = CertificateDer::from_pem_slice(g.cert_pem.as_bytes()).unwrap();
        let expiry = not_after(&der).expect("notAfter parses");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let expected = now + VALIDITY.as_secs() as i64;
        assert!((expiry - expected).abs() < 120, "{expiry} vs {expected}");
        assert!(not_after(b"not a certificate").is_none());
    }

    #[cfg(unix)]
    #[test]
    fn private_key_is_written_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("eci-profile-certs-{}", std::process::id()));
        let g = generate(&["localhost".into()], &[]).unwrap();
        write(&dir, &g).unwrap();
        let mode = fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = fs::metadata(dir.join(CERT_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        fs::remove_dir_all(dir).unwrap();
    }
}
