//! Email over SMTP (lettre): one multipart/alternative message (plain text and HTML) per
//! notification, to every configured recipient.

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::config::SmtpSecurity;
use super::{DeliveryError, EmailConfig, Notification};

fn mailbox(address: &str) -> Result<Mailbox, DeliveryError> {
    address.parse().map_err(|_| DeliveryError::Address {
        address: address.to_owned(),
    })
}

/// The message for `notification` (public for tests and previews).
///
/// # Errors
/// An address does not parse or the message cannot be built.
pub fn build(config: &EmailConfig, notification: &Notification) -> Result<Message, DeliveryError> {
    let mut builder = Message::builder()
        .from(mailbox(&config.from)?)
        .subject(notification.summary());
    for to in &config.to {
        builder = builder.to(mailbox(to)?);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            notification.text(),
            notification.html(),
        ))
        .map_err(DeliveryError::Email)
}

/// Sends `notification` through the configured relay.
///
/// # Errors
/// The message cannot be built, or the SMTP conversation fails.
pub async fn send(config: &EmailConfig, notification: &Notification) -> Result<(), DeliveryError> {
    let message = build(config, notification)?;
    let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.as_str());
    let builder = match config.security {
        SmtpSecurity::None => builder,
        SmtpSecurity::Starttls => builder.tls(Tls::Required(tls_parameters(config)?)),
        SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls_parameters(config)?)),
    };
    let mut builder = builder.port(config.port);
    if let (Some(username), Some(password)) = (&config.username, &config.password) {
        builder = builder.credentials(Credentials::new(
            username.clone(),
            password.expose().to_owned(),
        ));
    }
    builder
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(DeliveryError::Smtp)
}

/// TLS for the relay: the public web roots, plus the certificates of `ca_file` if set.
fn tls_parameters(config: &EmailConfig) -> Result<TlsParameters, DeliveryError> {
    let mut builder = TlsParameters::builder(config.host.clone());
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|error| {
            DeliveryError::Encode(format!("cannot read ca_file {path:?}: {error}"))
        })?;
        builder =
            builder.add_root_certificate(Certificate::from_pem(&pem).map_err(DeliveryError::Smtp)?);
    }
    builder.build_rustls().map_err(DeliveryError::Smtp)
}
