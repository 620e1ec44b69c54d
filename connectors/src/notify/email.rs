//! Email over SMTP (lettre): one multipart/alternative message (plain text and HTML) per
//! notification, to every configured recipient.

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
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
    let builder = match config.security {
        SmtpSecurity::None => {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.as_str())
        }
        SmtpSecurity::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                .map_err(DeliveryError::Smtp)?
        }
        SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
            .map_err(DeliveryError::Smtp)?,
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
