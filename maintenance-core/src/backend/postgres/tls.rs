//! TLS through rustls with the ring provider (no OpenSSL: linking it alone
//! made an empty binary's start three times slower), with libpq's
//! `sslmode` meanings: `allow`, `prefer` and `require` encrypt without
//! checking the certificate (as libpq does without a root certificate);
//! `verify-ca` checks the chain against `sslrootcert` (libpq's default
//! `~/.postgresql/root.crt`); `verify-full` also checks the host name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::database_url::{DatabaseUrl, SslMode};

/// The client configuration for `url`'s `sslmode`; the error says what to
/// check (the root certificate file).
pub(super) fn client_config(url: &DatabaseUrl) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS cannot be set up: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = if url.sslmode.verifies() {
        let roots = Arc::new(roots(url)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
            .build()
            .map_err(|e| format!("TLS cannot be set up with the root certificates: {e}"))?;
        if url.sslmode == SslMode::VerifyFull {
            webpki
        } else {
            Arc::new(Verifier {
                provider,
                chain: Some(webpki),
            })
        }
    } else {
        Arc::new(Verifier {
            provider,
            chain: None,
        })
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The root certificates `verify-ca` and `verify-full` trust.
fn roots(url: &DatabaseUrl) -> Result<RootCertStore, String> {
    let path = match &url.sslrootcert {
        Some(p) => p.clone(),
        None => default_root_cert().ok_or_else(|| {
            format!(
                "sslmode={} needs root certificates: give sslrootcert=/path/to/root.crt in the \
                 URL (there is no home directory for ~/.postgresql/root.crt)",
                url.sslmode.as_str()
            )
        })?,
    };
    let mut store = RootCertStore::empty();
    let certs = read_pem(&path)?;
    for cert in certs {
        store.add(cert).map_err(|e| {
            format!(
                "sslrootcert {} holds a certificate that cannot be a root: {e}",
                path.display()
            )
        })?;
    }
    if store.is_empty() {
        return Err(format!(
            "sslrootcert {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(store)
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let why = |e: &dyn std::fmt::Display| {
        format!(
            "cannot read the root certificates sslrootcert {}: {e}; point sslrootcert at the \
             server's CA certificate (PEM)",
            path.display()
        )
    };
    CertificateDer::pem_file_iter(path)
        .map_err(|e| why(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| why(&e))
}

fn default_root_cert() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
}

/// The certificate check of every mode but `verify-full` (which is rustls'
/// own [`WebPkiServerVerifier`]): with `chain`, `verify-ca` — the chain must
/// lead to a trusted root, the name is not checked; without, `allow`,
/// `prefer`, `require` — the certificate is not checked (libpq's meaning).
/// The handshake's signatures are checked in both.
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    // The signatures are checked as `WebPkiServerVerifier` checks them: by
    // the algorithms of the provider it was built with, which is this one.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
