//! `borealis cert issue | revoke`: client certificates from a cluster directory's CA, and taking
//! one back.
//!
//! The CA is the one in `DIR/pki` (`ca.pem`, `ca.key`), made by `borealis cluster up` / `dev` or
//! `cluster init --hosts`; both commands need its key on hand. `issue` writes `DIR/pki/NAME.pem`
//! and `NAME.key`, a certificate with the DNS name NAME (so it speaks for the client
//! `borealis://client/NAME`) valid for `--days` days. `revoke` lists a certificate's serial in
//! `DIR/pki/crl.pem`, signed again by the CA with a higher CRL number; a node refuses the
//! certificate at its next handshake once its `tls.crl` names (a copy of) that file and it was
//! reloaded (SIGHUP, `systemctl reload storaged`): docs/operations.md, "Certificates".
//!
//! Invariants: `issue` never replaces a certificate, and never makes one with a node's name (peers
//! know nodes by that name); `revoke` writes the CRL atomically, after every check passed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use transport::pki::{self, Validity};

use crate::local::{LocalCluster, DEFAULT_DIR};

/// Default validity of an issued certificate, in days.
pub const DAYS_DEFAULT: u32 = 365;
/// Longest validity `issue` accepts, in days (ten years).
pub const DAYS_MAX: u32 = 3650;

#[derive(Debug, Args)]
pub struct CertArgs {
    /// The cluster's directory: its CA is DIR/pki/ca.pem and ca.key.
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub action: CertAction,
}

#[derive(Debug, Subcommand)]
pub enum CertAction {
    /// Issues a client certificate from the cluster's CA: DIR/pki/NAME.pem and NAME.key, for the
    /// client borealis://client/NAME. Refuses a name that has a certificate, or a node's name.
    Issue {
        /// The client's name: a DNS name (lowercase letters, digits, '-', dots).
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Days the certificate is valid (from now, less five minutes for clock skew).
        #[arg(long, value_name = "N", default_value_t = DAYS_DEFAULT,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(DAYS_MAX)))]
        days: u32,
    },
    /// Revokes the certificate DIR/pki/NAME.pem: lists its serial in DIR/pki/crl.pem, signed
    /// again by the CA. Nodes refuse it from their next reload (SIGHUP) once their `tls.crl`
    /// names a copy of that file; connections made before go on.
    Revoke {
        /// The certificate's name (DIR/pki/NAME.pem).
        #[arg(long, value_name = "NAME")]
        name: String,
    },
}

/// Runs `borealis cert`: prints what was written, or fails with why nothing was.
pub fn run(args: CertArgs) -> anyhow::Result<ExitCode> {
    let cluster = LocalCluster::load(&args.dir)?;
    let pki_dir = pki_dir(&cluster)?;
    match args.action {
        CertAction::Issue { name, days } => issue(&cluster, &pki_dir, &name, days)?,
        CertAction::Revoke { name } => revoke(&cluster, &pki_dir, &name)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The directory of the cluster's CA: where its client certificate lies.
fn pki_dir(cluster: &LocalCluster) -> anyhow::Result<PathBuf> {
    let ca = cluster.client_tls().ca_cert;
    let dir = ca.parent().with_context(|| format!("{}: no directory", ca.display()))?;
    Ok(dir.to_owned())
}

fn issue(cluster: &LocalCluster, pki_dir: &Path, name: &str, days: u32) -> anyhow::Result<()> {
    if let Some(node) = cluster.nodes().iter().find(|node| node.name == name) {
        bail!("{name:?} is the name of node {}: peers would take a client holding it for the node", node.id);
    }
    let files = pki::issue_cert(pki_dir, name, Validity::days_from_now(days))
        .with_context(|| format!("issuing a certificate for {name:?}"))?;
    println!("issued {name} (valid {days} days): {} and {}", files.cert.display(), files.key.display());
    Ok(())
}

fn revoke(cluster: &LocalCluster, pki_dir: &Path, name: &str) -> anyhow::Result<()> {
    let cert = pki_dir.join(format!("{name}.pem"));
    if name == pki::CA_STEM || !cert.is_file() {
        bail!("no certificate to revoke at {}", cert.display());
    }
    let update = pki::revoke_certs(pki_dir, &[&cert]).with_context(|| format!("revoking {name:?}"))?;
    let listed = format!(
        "{} lists {} certificate(s), CRL number {}",
        update.path.display(),
        update.revoked_total,
        update.number
    );
    if update.added == 0 {
        println!("{name} was revoked already; signed the CRL again: {listed}");
    } else {
        println!("revoked {name}: {listed}");
    }
    println!(
        "give each node this file (storaged.toml: [tls] crl = ...) and reload it (systemctl reload storaged)"
    );
    if let Some(node) = cluster.nodes().iter().find(|node| node.name == name) {
        println!(
            "note: {name} is node {}: nodes will refuse its connections, but clients still dial it; replace it",
            node.id
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_action(dir: &Path, action: CertAction) -> anyhow::Result<ExitCode> {
        run(CertArgs { dir: dir.to_owned(), action })
    }

    #[test]
    fn issue_writes_a_new_name_once_and_revoke_lists_it_once() {
        let dir = tempfile::tempdir().unwrap();
        LocalCluster::load_or_create(dir.path()).unwrap();
        let issue = |name: &str| run_action(dir.path(), CertAction::Issue { name: name.into(), days: 30 });
        let revoke = |name: &str| run_action(dir.path(), CertAction::Revoke { name: name.into() });

        issue("alice").unwrap();
        let pki_dir = dir.path().join("pki");
        let cert = std::fs::read(pki_dir.join("alice.pem")).unwrap();
        let again = issue("alice").unwrap_err();
        assert!(format!("{again:#}").contains("has a certificate already"), "{again:#}");
        assert_eq!(std::fs::read(pki_dir.join("alice.pem")).unwrap(), cert, "never replaced");
        let node = issue("node-1").unwrap_err();
        assert!(format!("{node:#}").contains("is the name of node 1"), "{node:#}");

        revoke("alice").unwrap();
        revoke("alice").unwrap();
        let cas = transport::tls::load_certs(&pki_dir.join("ca.pem")).unwrap();
        let crls = transport::crl::load_crls(&pki::crl_path(&pki_dir), &cas).unwrap();
        let contents = transport::crl::read_crl(&crls[0], &cas).unwrap();
        assert_eq!((contents.number, contents.revoked.len()), (2, 1));
        let missing = revoke("bob").unwrap_err();
        assert!(format!("{missing:#}").contains("no certificate to revoke"), "{missing:#}");
        assert!(revoke("ca").is_err(), "the CA is not revoked by its own CRL");
    }

    #[test]
    fn the_command_line_parses_with_its_defaults_and_bounds() {
        use clap::{CommandFactory, Parser};
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            args: CertArgs,
        }
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["cert", "issue", "--name", "app-1"]).unwrap();
        assert!(matches!(cli.args.action, CertAction::Issue { days: DAYS_DEFAULT, .. }));
        assert_eq!(cli.args.dir, PathBuf::from(DEFAULT_DIR));
        assert!(Cli::try_parse_from(["cert", "issue", "--name", "x", "--days", "0"]).is_err());
        let cli = Cli::try_parse_from(["cert", "revoke", "--name", "app-1", "--dir", "/tmp/c"]).unwrap();
        assert_eq!(cli.args.dir, PathBuf::from("/tmp/c"));
    }
}
