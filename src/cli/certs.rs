//! `eci-profile certs`: a CA and a serving pair for development and bootstrap.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use eci_profile::certs;

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into (created if needed)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// DNS name for the serving certificate (repeatable), e.g. eci-profile.eci-profile-system.svc
    #[arg(long = "dns", value_name = "NAME")]
    dns_names: Vec<String>,
    /// IP address for the serving certificate (repeatable)
    #[arg(long = "ip", value_name = "IP")]
    ips: Vec<IpAddr>,
}

pub fn run(args: CertsArgs) -> Result<ExitCode, String> {
    if args.dns_names.is_empty() && args.ips.is_empty() {
        return Err("give at least one --dns NAME or --ip IP".into());
    }
    eci_profile::tls::install_default_provider();
    let generated = certs::generate(&args.dns_names, &args.ips)
        .map_err(|e| format!("cannot generate certificates: {e}"))?;
    let ca = certs::write(&args.out, &generated)
        .map_err(|e| format!("cannot write into {}: {e}", args.out.display()))?;
    super::print(&format!(
        "wrote {}, {} and {} (mode 0600); caBundle: base64 -w0 {}\n",
        ca.display(),
        args.out.join(certs::CERT_FILE).display(),
        args.out.join(certs::KEY_FILE).display(),
        ca.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}
