//! The listening connection of the [`NativeDriver`](crate::NativeDriver): a connection of its
//! own, outside the pool (a deadpool pool drives its connections itself and drops their
//! notifications), driven by a task that forwards its notifications.

use std::future::poll_fn;
use std::time::Duration;

use durable_postgres::{DriverError, Listener, Notification};
use tokio::sync::mpsc;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Client, Socket};

use crate::values::pg_error;

/// A connection made with `config` and `tls` that ran `listen` (the `LISTEN` statements),
/// within `timeout`.
pub(crate) async fn connect<T>(
    config: tokio_postgres::Config,
    tls: T,
    listen: String,
    timeout: Duration,
) -> Result<NativeListener, DriverError>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync,
    T::TlsConnect: Send + Sync,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut connection) = tokio::time::timeout(timeout, config.connect(tls))
        .await
        .map_err(|_| DriverError::TimedOut(timeout))?
        .map_err(pg_error)?;
    let (sender, notifications) = mpsc::unbounded_channel();
    // Drives the connection (the client's queries included) and forwards its
    // notifications; ends with the connection, which ends when the client is dropped.
    tokio::spawn(async move {
        loop {
            let ended = match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(notification))) => sender
                    .send(Ok(Notification {
                        channel: notification.channel().to_owned(),
                        payload: notification.payload().to_owned(),
                    }))
                    .is_err(),
                Some(Ok(_)) => false, // a notice
                Some(Err(error)) => {
                    let _ = sender.send(Err(pg_error(error)));
                    true
                }
                None => true,
            };
            if ended {
                break;
            }
        }
    });
    tokio::time::timeout(timeout, client.batch_execute(&listen))
        .await
        .map_err(|_| DriverError::TimedOut(timeout))?
        .map_err(pg_error)?;
    Ok(NativeListener {
        client,
        notifications,
    })
}

/// `LISTEN "a"; LISTEN "b";`: the channels quoted as identifiers.
pub(crate) fn listen_statement(channels: &[&str]) -> String {
    channels
        .iter()
        .map(|channel| format!("LISTEN \"{}\";", channel.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The listening connection of [`NativeDriver::listen`](crate::NativeDriver): a task drives the connection and
/// forwards its notifications; the connection closes when this is dropped.
#[derive(Debug)]
pub struct NativeListener {
    pub(crate) client: Client,
    pub(crate) notifications: mpsc::UnboundedReceiver<Result<Notification, DriverError>>,
}

impl Listener for NativeListener {
    async fn next(&mut self) -> Result<Notification, DriverError> {
        match self.notifications.recv().await {
            Some(received) => received,
            None => Err(DriverError::Other(
                "the listener connection was closed".into(),
            )),
        }
    }

    async fn ping(&mut self) -> Result<(), DriverError> {
        self.client
            .simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(pg_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_statement_quotes_the_channels() {
        assert_eq!(
            listen_statement(&["durable", "a\"b"]),
            "LISTEN \"durable\"; LISTEN \"a\"\"b\";"
        );
    }
}
