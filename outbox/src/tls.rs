//! [`NatsTls`]: how the outbox's NATS connections use TLS, one type for every connect
//! path (the relay, restore, audit, repair's range read).
//!
//! NATS turns TLS on when the server asks for it (`tls://` URLs, or a server started
//! with `--tls`). These settings say whom to trust and who we are: a private CA to
//! verify the server with (`--nats-tls-ca`; without it the system's roots), and a
//! client certificate for servers that verify clients (`--nats-tls-cert` and
//! `--nats-tls-key`, together). Any of them also makes TLS required, so that a client
//! configured for TLS never falls back to plain text.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// The TLS settings of the outbox's NATS connections. The default: no CA, no client
/// certificate, TLS only where the URL or the server asks for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// A PEM file of CA certificates to trust, in addition to the system's roots: how a
    /// server certificate signed by a private CA is verified.
    pub ca: Option<PathBuf>,
    /// A PEM client certificate (chain), for servers that verify clients
    /// (`--tlsverify`). Goes with `key`.
    pub cert: Option<PathBuf>,
    /// The PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

impl NatsTls {
    /// Whether any TLS setting is given (then TLS is required).
    pub fn is_configured(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// Checks that the certificate and key come together and that every file named is
    /// readable, so that a bad setting is reported at start, naming the file.
    pub fn validate(&self) -> Result<(), Error> {
        match (&self.cert, &self.key) {
            (Some(_), None) => {
                return Err(Error::InvalidConfig(
                    "a NATS client certificate (--nats-tls-cert) needs its key (--nats-tls-key)"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::InvalidConfig(
                    "a NATS client key (--nats-tls-key) needs its certificate (--nats-tls-cert)"
                        .into(),
                ));
            }
            _ => {}
        }
        for (what, path) in [
            ("CA file", &self.ca),
            ("client certificate", &self.cert),
            ("client key", &self.key),
        ] {
            if let Some(path) = path {
                readable_pem(what, path)?;
            }
        }
        Ok(())
    }

    /// `options` with these settings applied.
    pub(crate) fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> async_nats::ConnectOptions {
        if !self.is_configured() {
            return options;
        }
        options = options.require_tls(true);
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options
    }
}

/// Checks that `path` can be read and holds PEM text.
fn readable_pem(what: &str, path: &Path) -> Result<(), Error> {
    let text = std::fs::read(path).map_err(|error| {
        Error::InvalidConfig(format!(
            "cannot read the NATS TLS {what} {}: {error}",
            path.display()
        ))
    })?;
    if !text.windows(11).any(|window| window == b"-----BEGIN ") {
        return Err(Error::InvalidConfig(format!(
            "the NATS TLS {what} {} holds no PEM block (-----BEGIN ...)",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_configured_is_valid_and_optional() {
        let tls = NatsTls::default();
        assert!(!tls.is_configured());
        assert!(tls.validate().is_ok());
    }

    #[test]
    fn certificate_and_key_go_together_and_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let only_cert = NatsTls {
            cert: Some(pem.clone()),
            ..NatsTls::default()
        };
        assert!(format!("{}", only_cert.validate().unwrap_err()).contains("--nats-tls-key"));
        let only_key = NatsTls {
            key: Some(pem.clone()),
            ..NatsTls::default()
        };
        assert!(format!("{}", only_key.validate().unwrap_err()).contains("--nats-tls-cert"));
        let missing = dir.path().join("missing.pem");
        let error = NatsTls {
            ca: Some(missing.clone()),
            ..NatsTls::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            error.to_string().contains(&missing.display().to_string()),
            "{error}"
        );
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let error = NatsTls {
            ca: Some(not_pem),
            ..NatsTls::default()
        }
        .validate()
        .unwrap_err();
        assert!(error.to_string().contains("no PEM block"), "{error}");
        assert!(
            NatsTls {
                ca: Some(pem),
                ..NatsTls::default()
            }
            .validate()
            .is_ok()
        );
    }
}
